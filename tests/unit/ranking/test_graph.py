"""Tracing errors: an untraceable model, a cut index out of range (real nets: tests/e2e/ranking/test_graph.py)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from isplit_export.errors import BadInputError
from isplit_export.ranking.graph import trace


def test_untraceable_model_is_a_clear_error() -> None:
    class Dynamic(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # data-dependent control flow
                x = -x
            return self.conv(x).mean((2, 3))

    with pytest.raises(BadInputError, match=r"cannot be traced with torch\.fx"):
        trace(Dynamic(), (3, 8, 8))


def test_cut_index_out_of_range() -> None:
    traced = trace(torchvision.models.resnet18().eval(), (3, 32, 32))
    with pytest.raises(BadInputError, match="out of range"):
        traced.cut(len(traced.cuts))
