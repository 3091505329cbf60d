"""Layout-aware cuts: CUI on NHWC maps and token sequences equals Grad-CAM over the right axes
(references: :mod:`tests.support.layout_cui`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from isplit_export.exporting.encoding import calibrate_encoding, decode_tail, encode_array, encode_head
from isplit_export.exporting.onnx_export import to_onnx
from isplit_export.exporting.onnx_utils import save_model
from isplit_export.jobs.rank import rank
from isplit_export.ranking.graph import trace
from isplit_export.verification.runners import OnnxrtRunner, run_pair
from tests.support.layout_cui import cut_scores, hook_scores, nchw, nhwc, random_images
from tests.support.layout_models import SIZE, ChannelsLastNet, PartitionNet, TinyViT


def test_channels_last_net_cui_is_gradcam_over_the_last_axis() -> None:
    torch.manual_seed(0)
    model = ChannelsLastNet().eval()
    x = random_images(3, SIZE)
    traced = trace(model, (3, SIZE, SIZE))
    by_module = {c.module: c for c in traced.cuts}
    assert by_module["stem"].layout == "nchw" and by_module["stem"].shape == (8, 8, 8)
    assert by_module["act"].layout == "nhwc" and by_module["proj"].layout == "nhwc"
    assert by_module["proj"].shape == (8, 8, 12) and by_module["proj"].boundary_bytes == 4 * 8 * 8 * 12
    modules, _, scores = cut_scores(model, (3, SIZE, SIZE), x)
    ref = hook_scores(
        model,
        {"stem": model.stem, "act": model.act, "proj": model.proj},
        x,
        {"stem": nchw, "act": nhwc, "proj": nhwc},
    )
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
    x = random_images(4, SIZE, seed=4)
    traced = trace(model, (3, SIZE, SIZE))
    cut = [c for c in traced.cuts if c.module == "blocks.0"][-1]
    head, tail = traced.split(cut)
    with torch.no_grad():
        boundary, ref = head(x), model(x)
    enc = calibrate_encoding(encoding, boundary.numpy())
    save_model(encode_head(to_onnx(head, x[:1], "input", "boundary"), enc), tmp_path / "head.onnx")
    save_model(decode_tail(to_onnx(tail, boundary[:1], "boundary", "logits"), enc), tmp_path / "tail.onnx")
    sent, logits = run_pair(
        OnnxrtRunner(tmp_path / "head.onnx"), OnnxrtRunner(tmp_path / "tail.onnx"), x.numpy(), batch=2
    )
    assert sent.shape == (4, 17, 16) and sent.dtype == np.dtype(enc.dtype)
    # the codec on a 3-D tensor (onnxruntime's float boundary may differ from torch's by an ulp)
    expected = encode_array(boundary.numpy(), enc).astype(np.float64)
    step = 1.0 if encoding == "int8" else 2e-3 * (1 + np.abs(expected))
    assert np.all(np.abs(sent.astype(np.float64) - expected) <= step)
    np.testing.assert_allclose(logits, ref.numpy(), atol=0.05 if encoding == "int8" else 5e-3)
