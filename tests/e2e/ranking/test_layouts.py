"""Layout-aware cuts on real transformer nets: TinyViT patch tokens, Swin-T channels-last stages, ViT-B/16 token cuts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from isplit_export.ranking.graph import trace
from isplit_export.ranking.importance import reference_cui
from tests.support.layout_cui import cut_scores, hook_scores, last_cut, nhwc, random_images, tokens
from tests.support.layout_models import SIZE, TinyViT


@pytest.mark.e2e
def test_tiny_vit_cui_is_gradcam_over_patch_tokens() -> None:
    torch.manual_seed(0)
    model = TinyViT().eval()
    x = random_images(3, SIZE, seed=1)
    traced = trace(model, (3, SIZE, SIZE))
    blocks = [[c for c in traced.cuts if c.module == m][-1] for m in ("blocks.0", "blocks")]  # block outputs
    assert all(c.layout == "tokens" and c.class_tokens == 1 and c.shape == (17, 16) for c in blocks)
    first = {c.node: c for c in traced.cuts}
    assert first["patch"].layout == "nchw" and first["patch"].shape == (16, 4, 4)  # the patch-embedding conv
    assert first["transpose"].layout == "tokens" and first["transpose"].class_tokens == 0  # [B, N, D]
    assert blocks[0].to_json()["layout"] == "tokens" and blocks[0].to_json()["class_tokens"] == 1
    modules, _, scores = cut_scores(model, (3, SIZE, SIZE), x)
    ref = hook_scores(
        model,
        {"blocks.0": model.blocks[0], "blocks": model.blocks[1], "ln": model.ln},
        x,
        {"blocks.0": tokens, "blocks": tokens, "ln": tokens},
    )
    for name, want in ref.items():
        np.testing.assert_allclose(scores[:, last_cut(modules, name)], want, rtol=1e-4, atol=1e-7)
    assert ref["blocks.0"].min() > 0  # not a comparison of zeros
    # the per-cut split (head -> boundary -> tail) gives the same CUI and reproduces the logits
    np.testing.assert_allclose(reference_cui(traced, x), scores.mean(0), rtol=1e-4, atol=1e-7)
    with torch.no_grad():
        for cut in blocks:
            head, tail = traced.split(cut)
            torch.testing.assert_close(tail(head(x)), model(x))


@pytest.mark.e2e
def test_swin_t_stage_outputs_use_channels_last_axes() -> None:
    torch.manual_seed(0)
    model = torchvision.models.swin_t().eval()
    size = 32  # 8x8, 4x4, 2x2, 1x1 maps at the four stages
    x = random_images(2, size, seed=2)
    modules, layouts, scores = cut_scores(model, (3, size, size), x)
    stages = {
        "features.1": model.features[1],
        "features.3": model.features[3],
        "features.5": model.features[5],
        "features": model.features[7],
    }
    ref = hook_scores(model, stages, x, dict.fromkeys(stages, nhwc))
    for name, want in ref.items():
        i = last_cut(modules, name)  # the stage's output
        assert layouts[i] == "nhwc" and want.max() > 0
        np.testing.assert_allclose(scores[:, i], want, rtol=1e-4, atol=1e-8)
    assert layouts[modules.index("features.0.0")] == "nchw"  # the patch-embedding conv, before its permute
    assert layouts[modules.index("avgpool")] == "nchw"


@pytest.mark.e2e
def test_vit_b_16_encoder_blocks_are_token_cuts() -> None:
    torch.manual_seed(0)
    size = 32  # 2x2 patches + the class token
    model = torchvision.models.vit_b_16(image_size=size).eval()
    model.heads.head.reset_parameters()  # torchvision initializes the head to zero: every gradient would be 0
    x = random_images(2, size, seed=3)
    modules, layouts, scores = cut_scores(model, (3, size, size), x)
    layers = model.encoder.layers
    stages = {f"encoder.layers.encoder_layer_{i}": layers[i] for i in range(len(layers) - 1)}
    stages["encoder.layers"] = layers[-1]
    ref = hook_scores(model, stages, x, dict.fromkeys(stages, tokens))
    for name, want in ref.items():
        i = last_cut(modules, name)
        assert layouts[i] == "tokens"
        np.testing.assert_allclose(scores[:, i], want, rtol=1e-4, atol=1e-8)
    assert sum(bool(w.max() > 0) for w in ref.values()) >= len(ref) // 2  # not a comparison of zeros
