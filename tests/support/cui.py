"""The batched CUI against the straightforward per-image, per-cut algorithm, for any traceable model."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from isplit_export.ranking.graph import trace
from isplit_export.ranking.importance import batch_scores, reference_cui


def assert_cui_matches_reference(model: nn.Module, shape: tuple[int, ...]) -> None:
    """Five seeded random inputs of ``shape``: the fast CUI equals :func:`reference_cui` within float error."""
    torch.manual_seed(0)
    for p in model.parameters():
        p.requires_grad_(False)
    traced = trace(model, shape)
    x = torch.randn(5, *shape, generator=torch.Generator().manual_seed(1))
    scores, _ = batch_scores(traced.capture_module(), x, torch.full((5,), -1), "top")
    fast = scores.double().mean(0).numpy()
    ref = reference_cui(traced, x)
    np.testing.assert_allclose(fast, ref, rtol=1e-4, atol=1e-9)
