"""Real INT8 in the bundle: int8 weight initializers, a quarter of the bytes, the trained digits CNN agrees.

Runs the exporter (``--target cpu``: fp32 + INT8 QDQ pairs, inline layout so that each file can be read
on its own) on the trained digits CNN from :mod:`isplit_export.zoo` and its 200 held-out digits.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from isplit_export.cli import main
from isplit_export.exporting.onnx_utils import make_session, run_session
from isplit_export.verification.runners import OnnxrtRunner, run_pair
from tests.support.helpers import DIGITS
from tests.support.int8 import assert_kernels_agree, pair_logits

pytestmark = pytest.mark.e2e  # every test here runs whole pipelines (export, CLI, bash)


@pytest.fixture(scope="module")
def cpu_bundle(tmp_path_factory: pytest.TempPathFactory, digits_weights: Path, digits_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("int8") / "bundle"
    code = main(
        [
            DIGITS,
            "--weights",
            str(digits_weights),
            "--data",
            str(digits_dir),
            "--top",
            "1",
            "--target",
            "cpu",
            "--weights-layout",
            "inline",
            "--out",
            str(out),
            "--latency-runs",
            "3",
        ]
    )
    assert code == 0
    return out


def _weights(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    """The weight initializer (input 1) of every Conv/Gemm, through a DequantizeLinear if there is one."""
    inits = {t.name: t for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    out = {}
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            name = node.input[1]
            if name in producer:
                assert producer[name].op_type == "DequantizeLinear", node.name
                name = producer[name].input[0]
            out[node.name] = inits[name]
    return out


def test_int8_files_hold_int8_weights_a_quarter_of_the_bytes(cpu_bundle: Path) -> None:
    m = json.loads((cpu_bundle / "manifest.json").read_text())
    assert m["weights"] == {"layout": "inline"} and m["options"]["weights_layout"] == "inline"
    for split in m["splits"]:
        for part in ("head", "tail"):
            fp32 = onnx.load(cpu_bundle / split["files"][part])
            int8 = onnx.load(cpu_bundle / split["files"][f"{part}_int8"])
            w32, w8 = _weights(fp32), _weights(int8)
            assert w8 and sorted(w8) == sorted(w32)  # every weighted layer quantized (no float stem at 16x16)
            assert all(t.data_type == TensorProto.FLOAT for t in w32.values())
            assert all(t.data_type == TensorProto.INT8 for t in w8.values())
            bytes32 = sum(numpy_helper.to_array(t).nbytes for t in w32.values())
            bytes8 = sum(numpy_helper.to_array(t).nbytes for t in w8.values())
            assert bytes8 * 4 == bytes32
            assert not [
                t.name for t in int8.graph.initializer if t.data_type == TensorProto.FLOAT and len(t.dims) > 1
            ]
            # the files: int8 weights plus per-channel scales, float biases and the Q/DQ graph
            size32 = (cpu_bundle / split["files"][part]).stat().st_size
            size8 = (cpu_bundle / split["files"][f"{part}_int8"]).stat().st_size
            print(
                f"{split['dir']} {part}: fp32 {size32} B, int8 {size8} B ({size8 / size32:.3f}x), "
                f"weights {bytes32} -> {bytes8} B"
            )
            # the file shrinks by at least a third of the 3/4 the weights lose (the rest: scales, Q/DQ nodes);
            # on resnet50 the files are 0.25x (benchmarks/bench_latency.py)
            assert size8 <= size32 - 0.25 * bytes32


def test_int8_pair_agrees_with_the_trained_model(cpu_bundle: Path) -> None:
    """On 200 held-out digits: the INT8 pair's integer kernels give the float simulation's result within
    the quantization's own error and the same top-1 agreement with the fp32 pair (``tests/support/int8.py``:
    a property of the graph, true on any CPU), and the stored INT8 run replays exactly here."""
    m = json.loads((cpu_bundle / "manifest.json").read_text())
    x = np.load(cpu_bundle / m["calibration"]["file"])["input"]
    assert len(x) == 200
    for split in m["splits"]:
        check = split["verification"]["checks"]["int8-qdq"]
        assert check["gate"]["passed"] and check["task"]["metric"] == "accuracy", check
        files = {k: cpu_bundle / v for k, v in split["files"].items()}
        integer = pair_logits(files["head_int8"], files["tail_int8"], x)
        simulated = pair_logits(files["head_int8"], files["tail_int8"], x, simulate=True)
        _, fp32 = run_pair(OnnxrtRunner(files["head"]), OnnxrtRunner(files["tail"]), x)
        assert_kernels_agree(integer, simulated, fp32)
        golden = np.load(files["golden"])
        boundary = run_session(make_session(files["head_int8"]), {"input": golden["input"]})[0]
        logits = run_session(make_session(files["tail_int8"]), {"boundary": boundary})[0]
        np.testing.assert_allclose(logits, golden["logits_int8"], rtol=0, atol=1e-4)  # replays the stored run


def test_report_puts_int8_latency_next_to_fp32(cpu_bundle: Path) -> None:
    m = json.loads((cpu_bundle / "manifest.json").read_text())
    for lat in m["run"]["latency_ms"].values():
        assert lat["head_int8_ms"] > 0 and lat["tail_int8_ms"] > 0 and lat["head_ms"] > 0
    table = (cpu_bundle / "report.md").read_text().split("## Latency")[1]
    assert "int8 head ms" in table and "int8 tail speed-up" in table
    rows = [line for line in table.splitlines() if line.startswith("| `splits/")]
    assert len(rows) == 1 and all(row.count("x |") == 2 for row in rows)
