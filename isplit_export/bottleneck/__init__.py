"""A learned bottleneck at the cut and I-Split's validation experiment.

``core`` (sizes, encoder/decoder, distillation training), ``holdout`` (the deterministic train /
held-out split), ``probe`` (the training-free probe at a budget), and the study's library (the job is
:mod:`isplit_export.jobs.study`: train and measure at every candidate cut; CUI vs CDE vs random):
``study_measure`` (one measured cut), ``study_summary`` (the statistics), ``study_figure`` and ``study_table``.
"""
