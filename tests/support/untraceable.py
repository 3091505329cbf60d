"""A model factory whose forward() has data-dependent control flow (torch.fx cannot trace it)."""

from __future__ import annotations

import torch
from torch import nn


class _Dynamic(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            x = -x
        return self.conv(x).mean((2, 3))


def model() -> nn.Module:
    return _Dynamic()
