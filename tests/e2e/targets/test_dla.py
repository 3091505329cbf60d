"""DLA capability check on real model heads, and the plan's choice."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest

from isplit_export.targets.dla import check_model
from isplit_export.targets.engine_build import ENGINE_BUILD_FILE


@pytest.mark.e2e
@pytest.mark.parametrize("model_name", ["efficientnet_lite0", "resnet50"])
def test_real_heads_fraction_and_plan_choice(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, model_name: str
) -> None:
    """Export real heads (weights none) for the Jetson target: each plan's DLA block matches an
    independent check of the head file, and the head is on the DLA exactly when the fraction reaches 0.9."""
    from tests.support.helpers import run_cli

    out = tmp_path / "b"
    code, _, err = run_cli(
        capsys,
        model_name,
        "--weights",
        "none",
        "--images",
        "3",
        "--verify-images",
        "3",
        "--golden",
        "1",
        "--top",
        "3",
        "--target",
        "jetson",
        "--out",
        out,
        "--latency-runs",
        "1",
    )
    assert code in (0, 1), err  # 1: a gate failed on random weights; the plans are written either way
    manifest = json.loads((out / "manifest.json").read_text())
    copy = tmp_path / "copy"  # the onnx loader refuses the packs triton/ hard-links: read a plain copy
    shutil.copytree(out, copy)
    for split in manifest["splits"]:
        plan_file = next(f for f in split["files"].values() if str(f).endswith(ENGINE_BUILD_FILE))
        plan = json.loads((out / plan_file).read_text())
        block, head = plan["dla"], plan["engines"]["head"]
        onnx_file = (copy / plan_file).parent / head["onnx"]
        again = check_model(onnx.load(str(onnx_file)))
        assert (block["layers"], block["on_dla"]) == (again.layers, again.on_dla) and block["layers"] > 0
        assert block["min_fraction"] == 0.9
        assert head["device"] == ("dla" if again.fraction >= 0.9 else "gpu") == block["device"]
        assert ("--useDLACore=0" in head["trtexec"]) == (head["device"] == "dla")
        if head["device"] == "dla" and not block["fallback"]:
            assert "--allowGPUFallback" not in head["trtexec"]  # an unexpected fallback fails the build
        print(
            model_name,
            split["node"],
            block["on_dla"],
            "/",
            block["layers"],
            head["device"],
            block["decision"],
        )
