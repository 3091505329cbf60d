"""Candidate cuts on ResNet, VGG, MobileNet and EfficientNet-Lite graphs (torchvision and timm models)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from isplit_export.models import load_model
from isplit_export.ranking.graph import trace


def _assert_splits_reproduce(model: nn.Module, shape: tuple[int, ...]) -> None:
    traced = trace(model, shape)
    x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(x)
        for cut in traced.cuts:
            head, tail = traced.split(cut)
            boundary = head(x)
            assert tuple(boundary.shape[1:]) == cut.shape
            out = tail(boundary)
            assert torch.allclose(out, ref, atol=1e-5, rtol=1e-5), cut
            # the probe's interpreted tail computes exactly what the tail module does
            assert torch.equal(traced.run_tail(cut, boundary), out), cut


@pytest.mark.e2e
def test_resnet_cuts_are_block_boundaries() -> None:
    model = torchvision.models.resnet18().eval()
    traced = trace(model, (3, 64, 64))
    assert [c.module for c in traced.cuts] == [
        "relu",
        "maxpool",
        "layer1.0",
        "layer1",
        "layer2.0",
        "layer2",
        "layer3.0",
        "layer3",
        "layer4.0",
        "layer4",
        "avgpool",
    ]
    # every block cut is after the block's final ReLU, never inside the residual block
    assert all(c.node.endswith("relu_1") for c in traced.cuts[2:-1])
    assert [c.shape for c in traced.cuts[:2]] == [(64, 32, 32), (64, 16, 16)]
    shares = [c.head_flops_share for c in traced.cuts]
    assert shares == sorted(shares) and 0 < shares[0] < 0.2 and shares[-1] > 0.99
    _assert_splits_reproduce(model, (3, 64, 64))


@pytest.mark.e2e
def test_vgg_cuts_after_activations_and_pools() -> None:
    model = torchvision.models.vgg11().eval()
    traced = trace(model, (3, 32, 32))
    feats = model.features
    expected = [f"features.{i}" for i, m in enumerate(feats) if isinstance(m, nn.ReLU | nn.MaxPool2d)]
    expected[-1] = "features"  # the last pool closes the whole `features` Sequential
    assert [c.module for c in traced.cuts] == [*expected, "avgpool"]
    assert traced.cuts[0].boundary_bytes == 4 * 64 * 32 * 32
    _assert_splits_reproduce(model, (3, 32, 32))


@pytest.mark.e2e
def test_mobilenet_never_cuts_inside_residual_blocks() -> None:
    model = torchvision.models.mobilenet_v2().eval()
    traced = trace(model, (3, 32, 32))
    modules = [c.module for c in traced.cuts]
    # features.3 is a residual block: its output (the add) is a cut, its inner layers are not
    assert "features.3" in modules
    assert not any(m.startswith("features.3.") for m in modules)
    # features.2 has no skip connection: cuts inside it are allowed (after its activations)
    assert any(m.startswith("features.2.") for m in modules)
    _assert_splits_reproduce(model, (3, 32, 32))


@pytest.mark.e2e
def test_efficientnet_lite_cuts_skip_padding_and_batch_size_crosses_free() -> None:
    model = load_model("efficientnet_lite0", "none").module
    traced = trace(model, (3, 224, 224))
    assert not any("static_padding" in c.node for c in traced.cuts)
    assert traced.cuts[-1].module == "_avg_pooling"
    # forward() reads inputs.size(0) for its final view(): the tail must read it off the boundary
    _assert_splits_reproduce(model, (3, 224, 224))
