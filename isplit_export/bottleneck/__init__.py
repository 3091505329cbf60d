"""A learned bottleneck at the cut and I-Split's validation experiment.

``core`` (sizes, encoder/decoder, distillation training), ``holdout`` (the deterministic train /
held-out split), ``study`` (train and measure at every candidate cut; CUI vs CDE vs random).
"""
