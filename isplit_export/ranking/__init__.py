"""Stage 1, ranking: trace the model into cuts, compute every cut's CUI, rank the candidates.

``graph`` (torch.fx cuts, splitting, FLOPs) -> ``layouts`` (NCHW / NHWC / token feature maps) ->
``importance`` (one forward + one backward per batch) + ``bootstrap`` (Poisson replicates) and
``exactsum`` (order-independent sums) -> ``candidates`` (local maxima, ``ranking.json``).
"""
