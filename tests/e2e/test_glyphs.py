"""The committed glyphs ResNet (tests/data/glyphs.pt): what its script trains, it reads the glyphs it never
saw far above chance, and the ranking runs on it with the glyph folders labelled by their names."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from isplit_export.zoo import (
    GLYPH_CLASSES,
    GlyphsResNet,
    glyphs_arrays,
    glyphs_held_out_start,
    glyphs_tensor,
    write_glyphs_imagefolder,
)
from tests.support.glyphs import GLYPHS_WEIGHTS, load_glyphs_weights
from tests.support.helpers import run_cli

ROOT = Path(__file__).resolve().parents[2]
GLYPHS = "isplit_export.zoo:glyphs_resnet"


@pytest.mark.e2e
def test_the_committed_weights_read_held_out_glyphs_far_above_chance() -> None:
    """Chance is 1/26 (3.8 %); the held-out renderings (other rotations, scales, shifts and strokes of
    the same fonts) are read right more than half the time: at least 13 times chance."""
    model = GlyphsResNet()
    model.load_state_dict(load_glyphs_weights())
    model.eval()
    images, labels = glyphs_arrays(seed=0)
    start = glyphs_held_out_start()
    with torch.no_grad():
        predicted = model(glyphs_tensor(images[start:])).argmax(1).numpy()
    assert (predicted == labels[start:]).mean() > 0.5
    assert len(set(predicted.tolist())) == len(GLYPH_CLASSES)  # every letter is predicted somewhere


@pytest.mark.e2e
def test_rank_runs_on_the_glyphs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    weights = tmp_path / "glyphs.pt"
    load_glyphs_weights()
    shutil.copyfile(GLYPHS_WEIGHTS, weights)
    data = write_glyphs_imagefolder(tmp_path / "glyphs", start=glyphs_held_out_start(), count=104)
    code, out, err = run_cli(
        capsys,
        "rank",
        GLYPHS,
        "--weights",
        weights,
        "--data",
        data,
        "--bottleneck",
        "32B",
        "--out",
        tmp_path / "r",
    )
    assert code == 0, err
    ranking = json.loads((tmp_path / "r" / "ranking.json").read_text())
    assert ranking["labels"] == "folder_names" and ranking["images"] == 104
    assert any(c["rank"] is not None for c in ranking["candidates"]) and "probe" in out.lower()


@pytest.mark.e2e
@pytest.mark.skipif(
    os.environ.get("ISPLIT_SLOW_TESTS") != "1",
    reason="trains the glyphs ResNet (about 5 CPU-minutes): set ISPLIT_SLOW_TESTS=1 (docs/testing.md); "
    "tests/e2e/test_digits_weights.py checks the same recipe mechanism in every run",
)
def test_make_glyphs_trains_the_committed_weights(tmp_path: Path) -> None:
    """``benchmarks/make_glyphs.py --weights-only`` in a fresh process gives the committed state dict (same
    tensors; the same bytes where the floating-point kernels are those of the machine that made it)."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "make_glyphs.py"), str(tmp_path), "--weights-only"],
        capture_output=True,
        text=True,
        check=False,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "glyphs").exists()
    made = torch.load(tmp_path / "glyphs.pt", weights_only=True)
    committed = load_glyphs_weights()
    assert made.keys() == committed.keys()
    for name, tensor in committed.items():
        torch.testing.assert_close(made[name], tensor, msg=f"{name} differs from {GLYPHS_WEIGHTS}")
