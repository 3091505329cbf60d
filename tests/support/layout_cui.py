"""Grad-CAM references for the layout tests: CUI on NHWC maps and token sequences over the right axes.

References are computed here by hand, from module forward hooks on the *original* model (not the
traced graph), with the per-layout formulas written out:

    nchw  [B,C,H,W]: alpha = mean_hw g,   M = ReLU(mean_c alpha_c A_c),   s = mean_hw M
    nhwc  [B,H,W,C]: alpha = mean_hw g,   M = ReLU(mean_c alpha_c A_..c), s = mean_hw M
    tokens [B,1+N,D]: class token dropped, alpha = mean_n g, M = ReLU(mean_d alpha_d A_nd), s = mean_n M
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from isplit_export.ranking.graph import trace
from isplit_export.ranking.importance import batch_scores

Formula = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def nchw(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    alpha = g.mean(dim=(2, 3))
    return torch.relu((alpha[:, :, None, None] * a).mean(dim=1)).mean(dim=(1, 2))


def nhwc(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    alpha = g.mean(dim=(1, 2))
    return torch.relu((alpha[:, None, None, :] * a).mean(dim=3)).mean(dim=(1, 2))


def tokens(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    a, g = a[:, 1:], g[:, 1:]
    alpha = g.mean(dim=1)
    return torch.relu((alpha[:, None, :] * a).mean(dim=2)).mean(dim=1)


def hook_scores(
    model: nn.Module, modules: dict[str, nn.Module], x: torch.Tensor, formulas: dict[str, Formula]
) -> dict[str, np.ndarray]:
    """Per-image Grad-CAM scores at the outputs of ``modules`` (top-class logit), via forward hooks."""
    acts: dict[str, torch.Tensor] = {}
    handles = [
        m.register_forward_hook(lambda _m, _i, out, k=k: acts.__setitem__(k, out)) for k, m in modules.items()
    ]
    try:
        with torch.enable_grad():
            x = x.clone().requires_grad_(True)
            logits = model(x)
            y = logits.gather(1, logits.argmax(1, keepdim=True)).sum()
            grads = torch.autograd.grad(y, [acts[k] for k in modules])
    finally:
        for h in handles:
            h.remove()
    return {k: formulas[k](acts[k].detach(), g).numpy() for k, g in zip(modules, grads, strict=True)}


def cut_scores(
    model: nn.Module, shape: tuple[int, ...], x: torch.Tensor
) -> tuple[list[str], list[str], np.ndarray]:
    """(module paths, layouts, per-image scores [B, cuts]) as `rank` computes them."""
    traced = trace(model, shape)
    scores, _ = batch_scores(traced.capture_module(), x, torch.full((len(x),), -1), "top")
    return [c.module for c in traced.cuts], [c.layout for c in traced.cuts], scores.numpy()


def last_cut(modules: list[str], name: str) -> int:
    """Index of the last cut closing module ``name``: the module's output."""
    return len(modules) - 1 - modules[::-1].index(name)


def random_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """``n`` seeded random RGB images of ``size`` x ``size``."""
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))
