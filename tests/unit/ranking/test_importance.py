"""CUI against hand-computed values and against the straightforward per-image, per-cut algorithm."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from isplit_export.data import load_images
from isplit_export.ranking.graph import trace
from isplit_export.ranking.importance import (
    Importance,
    batch_scores,
    compute_importance,
    gradcam_scores,
    reference_cui,
)
from isplit_export.zoo import DIGITS_PREPROCESSING


def test_gradcam_scores_hand_computed() -> None:
    # A: 2 channels of 1x2 pixels; gradients chosen so alpha = (1, -0.5)
    a = torch.tensor([[[[2.0, 4.0]], [[6.0, 0.0]]]])
    g = torch.tensor([[[[1.0, 1.0]], [[-1.0, 0.0]]]])
    # cam = (1*A0 - 0.5*A1) / 2 = ([2,4] - [3,0]) / 2 = [-0.5, 2]; ReLU -> [0, 2]; mean -> 1
    assert gradcam_scores(a, g).tolist() == [1.0]


class _PoolLinear(nn.Module):
    """relu(x) -> global average pool -> linear: dy/dA is known in closed form."""

    def __init__(self) -> None:
        super().__init__()
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.act(x)), 1))


def test_cui_closed_form_on_pool_linear() -> None:
    torch.manual_seed(0)
    model = _PoolLinear().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.rand(4, 3, 5, 5)
    traced = trace(model, (3, 5, 5))
    assert [c.node for c in traced.cuts] == ["act", "pool"]
    scores, keys = batch_scores(traced.capture_module(), x, torch.full((4,), -1), "top")
    w = model.fc.weight[model(x).argmax(1)]  # [B, C] weights of each image's top class
    a = x.clamp_min(0)
    # cut "act": alpha_c = w_c / (H*W); cut "pool": alpha_c = w_c
    expected_act = ((w / 25)[:, :, None, None] * a).mean(1).clamp_min(0).mean((1, 2))
    expected_pool = (w * a.mean((2, 3))).mean(1).clamp_min(0)
    assert torch.allclose(scores[:, 0], expected_act, rtol=1e-5, atol=1e-7)
    assert torch.allclose(scores[:, 1], expected_pool, rtol=1e-5, atol=1e-7)
    assert keys.tolist() == model(x).argmax(1).tolist()


@pytest.mark.parametrize(
    "arch", ["digits", pytest.param("resnet18", marks=pytest.mark.e2e), pytest.param("mobilenet_v3_small", marks=pytest.mark.e2e)]
)
def test_cui_matches_reference_algorithm(arch: str, digits_model: tuple[nn.Module, float]) -> None:
    torch.manual_seed(0)
    if arch == "digits":
        model, shape = digits_model[0], (1, 16, 16)
    else:
        model, shape = torchvision.models.get_model(arch).eval(), (3, 32, 32)
    for p in model.parameters():
        p.requires_grad_(False)
    traced = trace(model, shape)
    x = torch.randn(5, *shape, generator=torch.Generator().manual_seed(1))
    scores, _ = batch_scores(traced.capture_module(), x, torch.full((5,), -1), "top")
    fast = scores.double().mean(0).numpy()
    ref = reference_cui(traced, x)
    np.testing.assert_allclose(fast, ref, rtol=1e-4, atol=1e-9)


@pytest.mark.e2e
def test_batch_size_does_not_change_cui(digits_model: tuple[nn.Module, float], digits_dir: Path) -> None:
    traced = trace(digits_model[0], (1, 16, 16))
    images = load_images(digits_dir, DIGITS_PREPROCESSING, class_names=[str(i) for i in range(10)], limit=40)
    cuis = [compute_importance(traced, images, batch_size=b).cui() for b in (1, 7, 40)]
    np.testing.assert_allclose(cuis[0], cuis[1], rtol=1e-5)
    np.testing.assert_allclose(cuis[0], cuis[2], rtol=1e-5)


@pytest.mark.e2e
def test_label_score_and_class_subsets(digits_model: tuple[nn.Module, float], digits_dir: Path) -> None:
    traced = trace(digits_model[0], (1, 16, 16))
    images = load_images(digits_dir, DIGITS_PREPROCESSING, class_names=[str(i) for i in range(10)])
    imp = compute_importance(traced, images, score="label")
    assert imp.images == 200 and sorted(imp.counts) == list(range(10))
    all_cui = imp.cui()
    # the overall CUI is the count-weighted mean of the per-class CUIs
    weighted = sum(imp.counts[k] * imp.cui([k]) for k in imp.counts) / imp.images
    np.testing.assert_allclose(all_cui, weighted, rtol=1e-10)
    curves = np.stack([imp.cui([k]) for k in range(10)])
    # class-specific curves really differ (the paper's point): >10 % spread at some cut
    spread = (curves.max(0) - curves.min(0)) / curves.mean(0)
    assert spread.max() > 0.1


def test_importance_memory_is_per_class_not_per_image() -> None:
    imp = Importance(num_cuts=3)
    for _ in range(100):
        imp.add(torch.tensor([0, 1, 1]), torch.ones(3, 3))
    assert imp.images == 300 and len(imp.sums) == 2
    np.testing.assert_allclose(imp.cui([1]), np.ones(3))
