"""A learned bottleneck at the cut and I-Split's validation experiment.

``core`` (sizes, encoder/decoder, distillation training), ``holdout`` (the deterministic train /
held-out split), ``study`` (the study job: train and measure at every candidate cut; CUI vs CDE vs random), with
``study_measure`` (one measured cut), ``study_summary`` (the statistics), ``study_figure`` and ``study_table``.
"""
