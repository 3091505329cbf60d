"""The INT8 QDQ pair of a bottleneck bundle (issue 16 item 4): real digits CNN, bottleneck, QDQ, onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from isplit_export.cli import main
from isplit_export.exporting.onnx_utils import make_session, run_session
from isplit_export.jobs.verify import verify_bundle
from isplit_export.verification.gates import GATES
from isplit_export.verification.metrics import compare_logits
from tests.support.helpers import DIGITS


def _pair(head: Path, tail: Path, x: np.ndarray) -> np.ndarray:
    """Logits of a head/tail pair in onnxruntime, one image at a time (as the bundle runs it)."""
    h, t = make_session(head), make_session(tail)
    return np.concatenate(
        [run_session(t, {"boundary": run_session(h, {"input": x[i : i + 1]})[0]})[0] for i in range(len(x))]
    )


def _int8_weighted(path: Path) -> tuple[int, int]:
    """(weighted nodes, those whose weight is DequantizeLinear of an int8 initializer) in ``path``."""
    model = onnx.load(str(path), load_external_data=False)  # types only (triton/ hard-links the packs)
    inits = {t.name: t for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    weighted = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    int8 = 0
    for node in weighted:
        dq = producer.get(node.input[1])
        if (
            dq is not None
            and dq.op_type == "DequantizeLinear"
            and inits[dq.input[0]].data_type == TensorProto.INT8
        ):
            int8 += 1
    return len(weighted), int8


@pytest.mark.e2e
def test_int8_pair_of_a_bottleneck_bundle_passes_its_gate(
    tmp_path: Path, digits_weights: Path, digits_dir: Path
) -> None:
    out = tmp_path / "bundle"
    code = main(
        [
            DIGITS,
            "--weights",
            str(digits_weights),
            "--data",
            str(digits_dir),
            "--top",
            "1",
            "--bottleneck",
            "1/8",
            "--target",
            "x86-tensorrt",
            "--latency-runs",
            "1",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    m = json.loads((out / "manifest.json").read_text())
    (split,) = m["splits"]
    check = split["verification"]["checks"]["int8-qdq"]
    assert check["reference"] == "fp32 pair with its bottleneck"
    assert check["gate"] == {**GATES["int8-qdq"].to_json(), "passed": True, "failures": []}  # the gate as is

    # every Conv/Gemm of both int8 files runs on int8 weights: nothing was kept float to pass
    files = split["files"]
    for part in ("head_int8", "tail_int8"):
        total, int8 = _int8_weighted(out / files[part])
        assert total >= 2 and int8 == total, (part, total, int8)

    # the recorded metrics are what onnxruntime measures from the bundle's own files
    calibration = np.load(out / "calibration" / "inputs.npz")
    x, labels = calibration["input"], calibration["labels"]
    assert len(x) == check["task"]["images"] == 50  # the held-out images
    fp32 = _pair(out / files["head"], out / files["tail"], x)
    q = _pair(out / files["head_int8"], out / files["tail_int8"], x)
    full = run_session(make_session(out / "full.onnx"), {"input": x})[0]
    vs_pair, vs_full = compare_logits(fp32, q), compare_logits(full, q)
    assert GATES["int8-qdq"].check(vs_pair) == (True, [])
    for key in ("max_abs_rel", "cosine", "top1_agreement"):
        assert vs_pair[key] == pytest.approx(check["metrics"][key], rel=1e-4, abs=1e-6)
        assert vs_full[key] == pytest.approx(check["metrics_vs_full_model"][key], rel=1e-4, abs=1e-6)
    # the task measure keeps the full model as its reference: the bottleneck's cost stays visible
    assert check["task"]["held_out"] and check["task"]["metric"] == "accuracy"
    assert check["task"]["full_model"] == pytest.approx(float((full.argmax(1) == labels).mean()))
    assert check["task"]["value"] == pytest.approx(float((q.argmax(1) == labels).mean()))
    assert (
        "Equivalence `int8-qdq` (against the fp32 pair with its bottleneck): **PASS**"
        in (out / "report.md").read_text()
    )
    assert verify_bundle(out, write=False).passed
