"""CUI against hand-computed values and against the straightforward per-image, per-cut algorithm."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from isplit_export.ranking.graph import trace
from isplit_export.ranking.importance import (
    GRAD_MEMORY_BYTES,
    Importance,
    batch_scores,
    grad_batch,
    gradcam_scores,
    on_device,
)
from tests.support.cui import assert_cui_matches_reference


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


def test_cui_matches_reference_algorithm(digits_model: tuple[nn.Module, float]) -> None:
    assert_cui_matches_reference(digits_model[0], (1, 16, 16))


def test_importance_memory_is_per_class_not_per_image() -> None:
    imp = Importance(num_cuts=3)
    for _ in range(100):
        imp.add(torch.tensor([0, 1, 1]), torch.ones(3, 3))
    assert imp.images == 300 and len(imp.sums) == 2
    np.testing.assert_allclose(imp.cui([1]), np.ones(3))


def test_a_capture_moved_to_a_device_is_a_copy_with_its_layouts() -> None:
    """Off the CPU the capture module moves as a copy (the traced graph shares the model's weights) and keeps
    the layout of every cut ("meta": a device every torch build has)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).eval()
    traced = trace(model, (3, 8, 8))
    capture = traced.capture_module()
    assert on_device(capture, "cpu") is capture
    moved = on_device(capture, "meta")
    assert getattr(moved, "cut_layouts", None) == capture.cut_layouts and capture.cut_layouts
    assert all(p.device.type == "meta" for p in moved.parameters())
    assert all(p.device.type == "cpu" for p in model.parameters())  # the model stays where it was
    assert next(traced.gm.parameters()) is next(model.parameters())  # the traced graph shares its weights


def test_grad_batch_bounds_the_autograd_memory() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).eval()
    traced = trace(model, (3, 8, 8))
    per_image = traced.activation_bytes
    assert per_image == 4 * (3 * 8 * 8 + 2 * 4 * 6 * 6 + 4 * 6 * 6 + 5)  # input, conv, relu, flatten, linear
    assert grad_batch(traced, 16) == 16  # far below the bound
    assert grad_batch(traced, 10**9) == GRAD_MEMORY_BYTES // (2 * per_image)
