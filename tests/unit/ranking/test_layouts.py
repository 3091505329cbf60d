"""Layout-aware cuts: CUI on NHWC maps and token sequences equals Grad-CAM over the right axes.

References are computed here by hand, from module forward hooks on the *original* model (not the
traced graph), with the per-layout formulas written out:

    nchw  [B,C,H,W]: alpha = mean_hw g,   M = ReLU(mean_c alpha_c A_c),   s = mean_hw M
    nhwc  [B,H,W,C]: alpha = mean_hw g,   M = ReLU(mean_c alpha_c A_..c), s = mean_hw M
    tokens [B,1+N,D]: class token dropped, alpha = mean_n g, M = ReLU(mean_d alpha_d A_nd), s = mean_n M
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from isplit_export.api import rank
from isplit_export.exporting.encoding import calibrate_encoding, decode_tail, encode_array, encode_head
from isplit_export.exporting.onnx_export import to_onnx
from isplit_export.exporting.onnx_utils import save_model
from isplit_export.ranking.graph import trace
from isplit_export.ranking.importance import batch_scores, reference_cui
from isplit_export.verification.runners import OnnxrtRunner, run_pair
from tests.support.layout_models import SIZE, ChannelsLastNet, PartitionNet, TinyViT

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


def hook_scores(model: nn.Module, modules: dict[str, nn.Module], x: torch.Tensor, formulas: dict[str, Formula]) -> dict[str, np.ndarray]:
    """Per-image Grad-CAM scores at the outputs of ``modules`` (top-class logit), via forward hooks."""
    acts: dict[str, torch.Tensor] = {}
    handles = [m.register_forward_hook(lambda _m, _i, out, k=k: acts.__setitem__(k, out)) for k, m in modules.items()]
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


def cut_scores(model: nn.Module, shape: tuple[int, ...], x: torch.Tensor) -> tuple[list[str], list[str], np.ndarray]:
    """(module paths, layouts, per-image scores [B, cuts]) as `rank` computes them."""
    traced = trace(model, shape)
    scores, _ = batch_scores(traced.capture_module(), x, torch.full((len(x),), -1), "top")
    return [c.module for c in traced.cuts], [c.layout for c in traced.cuts], scores.numpy()


def _last(modules: list[str], name: str) -> int:
    """Index of the last cut closing module ``name``: the module's output."""
    return len(modules) - 1 - modules[::-1].index(name)


def _images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_channels_last_net_cui_is_gradcam_over_the_last_axis() -> None:
    torch.manual_seed(0)
    model = ChannelsLastNet().eval()
    x = _images(3, SIZE)
    traced = trace(model, (3, SIZE, SIZE))
    by_module = {c.module: c for c in traced.cuts}
    assert by_module["stem"].layout == "nchw" and by_module["stem"].shape == (8, 8, 8)
    assert by_module["act"].layout == "nhwc" and by_module["proj"].layout == "nhwc"
    assert by_module["proj"].shape == (8, 8, 12) and by_module["proj"].boundary_bytes == 4 * 8 * 8 * 12
    modules, _, scores = cut_scores(model, (3, SIZE, SIZE), x)
    ref = hook_scores(model, {"stem": model.stem, "act": model.act, "proj": model.proj}, x,
                      {"stem": nchw, "act": nhwc, "proj": nhwc})  # fmt: skip
    for name, want in ref.items():
        assert want.max() > 0
        np.testing.assert_allclose(scores[:, modules.index(name)], want, rtol=1e-4, atol=1e-7)
    # the channels-first misreading of the same [B, H, W, C] tensor gives another value
    acts: dict[str, torch.Tensor] = {}
    h = model.proj.register_forward_hook(lambda _m, _i, out: acts.__setitem__("p", out))
    with torch.enable_grad():
        xx = x.clone().requires_grad_(True)
        logits = model(xx)
        (g,) = torch.autograd.grad(logits.gather(1, logits.argmax(1, keepdim=True)).sum(), [acts["p"]])
    h.remove()
    a = acts["p"].detach()
    assert not np.allclose(nchw(a, g).numpy(), scores[:, modules.index("proj")], rtol=1e-2)


@pytest.mark.e2e
def test_tiny_vit_cui_is_gradcam_over_patch_tokens() -> None:
    torch.manual_seed(0)
    model = TinyViT().eval()
    x = _images(3, SIZE, seed=1)
    traced = trace(model, (3, SIZE, SIZE))
    blocks = [[c for c in traced.cuts if c.module == m][-1] for m in ("blocks.0", "blocks")]  # block outputs
    assert all(c.layout == "tokens" and c.class_tokens == 1 and c.shape == (17, 16) for c in blocks)
    first = {c.node: c for c in traced.cuts}
    assert first["patch"].layout == "nchw" and first["patch"].shape == (16, 4, 4)  # the patch-embedding conv
    assert first["transpose"].layout == "tokens" and first["transpose"].class_tokens == 0  # [B, N, D]
    assert blocks[0].to_json()["layout"] == "tokens" and blocks[0].to_json()["class_tokens"] == 1
    modules, _, scores = cut_scores(model, (3, SIZE, SIZE), x)
    ref = hook_scores(model, {"blocks.0": model.blocks[0], "blocks": model.blocks[1], "ln": model.ln}, x,
                      {"blocks.0": tokens, "blocks": tokens, "ln": tokens})  # fmt: skip
    for name, want in ref.items():
        np.testing.assert_allclose(scores[:, _last(modules, name)], want, rtol=1e-4, atol=1e-7)
    assert ref["blocks.0"].min() > 0  # not a comparison of zeros
    # the per-cut split (head -> boundary -> tail) gives the same CUI and reproduces the logits
    np.testing.assert_allclose(reference_cui(traced, x), scores.mean(0), rtol=1e-4, atol=1e-7)
    with torch.no_grad():
        for cut in blocks:
            head, tail = traced.split(cut)
            torch.testing.assert_close(tail(head(x)), model(x))


def test_window_partitions_are_never_cuts(caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    model = PartitionNet().eval()
    with caplog.at_level(logging.INFO, logger="isplit_export.ranking.graph"):
        traced = trace(model, (3, SIZE, SIZE))
    # [B, 16 windows, 4*4, 8]: looks like a 4-D map, is not one
    assert all(c.shape != (16, 16, 8) for c in traced.cuts)
    assert all(c.layout == "nchw" for c in traced.cuts)
    modules = [c.module for c in traced.cuts]
    assert "stem" in modules and "departition" in modules  # the map before and after the windows
    skipped = [r.getMessage() for r in caplog.records if "[16, 16, 8]" in r.getMessage()]
    assert skipped and all("window partition" in m for m in skipped)


@pytest.mark.e2e
def test_swin_t_stage_outputs_use_channels_last_axes() -> None:
    torch.manual_seed(0)
    model = torchvision.models.swin_t().eval()
    size = 32  # 8x8, 4x4, 2x2, 1x1 maps at the four stages
    x = _images(2, size, seed=2)
    modules, layouts, scores = cut_scores(model, (3, size, size), x)
    stages = {"features.1": model.features[1], "features.3": model.features[3],
              "features.5": model.features[5], "features": model.features[7]}  # fmt: skip
    ref = hook_scores(model, stages, x, dict.fromkeys(stages, nhwc))
    for name, want in ref.items():
        i = _last(modules, name)  # the stage's output
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
    x = _images(2, size, seed=3)
    modules, layouts, scores = cut_scores(model, (3, size, size), x)
    layers = model.encoder.layers
    stages = {f"encoder.layers.encoder_layer_{i}": layers[i] for i in range(len(layers) - 1)}
    stages["encoder.layers"] = layers[-1]
    ref = hook_scores(model, stages, x, dict.fromkeys(stages, tokens))
    for name, want in ref.items():
        i = _last(modules, name)
        assert layouts[i] == "tokens"
        np.testing.assert_allclose(scores[:, i], want, rtol=1e-4, atol=1e-8)
    assert sum(bool(w.max() > 0) for w in ref.values()) >= len(ref) // 2  # not a comparison of zeros


def test_ranking_json_records_the_layout(tmp_path: Path) -> None:
    result = rank("tests.support.layout_models:tiny_vit", weights="none", images=2, out=tmp_path)
    data = json.loads((tmp_path / "ranking.json").read_text())
    rows = data["candidates"]
    assert [r["layout"] for r in rows] == ["nchw"] + ["tokens"] * (len(rows) - 1)
    assert {r["class_tokens"] for r in rows[1:]} == {0, 1} and "class_tokens" not in rows[0]
    assert [r["shape"] for r in rows][-1] == [17, 16]
    assert "tokens" in result.ranking.table(top=None)


@pytest.mark.parametrize("encoding", ["fp16", "int8"])
def test_token_boundary_onnx_pair_with_encoding(tmp_path: Path, encoding: str) -> None:
    """A ViT split at a [B, 17, 16] sequence: ONNX head/tail, boundary codec, onnxruntime run."""
    torch.manual_seed(0)
    model = TinyViT().eval()
    x = _images(4, SIZE, seed=4)
    traced = trace(model, (3, SIZE, SIZE))
    cut = [c for c in traced.cuts if c.module == "blocks.0"][-1]
    head, tail = traced.split(cut)
    with torch.no_grad():
        boundary, ref = head(x), model(x)
    enc = calibrate_encoding(encoding, boundary.numpy())
    save_model(encode_head(to_onnx(head, x[:1], "input", "boundary"), enc), tmp_path / "head.onnx")
    save_model(decode_tail(to_onnx(tail, boundary[:1], "boundary", "logits"), enc), tmp_path / "tail.onnx")
    sent, logits = run_pair(OnnxrtRunner(tmp_path / "head.onnx"), OnnxrtRunner(tmp_path / "tail.onnx"), x.numpy(), batch=2)
    assert sent.shape == (4, 17, 16) and sent.dtype == np.dtype(enc.dtype)
    # the codec on a 3-D tensor (onnxruntime's float boundary may differ from torch's by an ulp)
    expected = encode_array(boundary.numpy(), enc).astype(np.float64)
    step = 1.0 if encoding == "int8" else 2e-3 * (1 + np.abs(expected))
    assert np.all(np.abs(sent.astype(np.float64) - expected) <= step)
    np.testing.assert_allclose(logits, ref.numpy(), atol=0.05 if encoding == "int8" else 5e-3)
