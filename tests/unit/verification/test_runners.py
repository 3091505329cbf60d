"""Runners per backend (verification/runners.py) and the one backend registry (verification/backends.py),
on tiny ONNX models in real onnxruntime sessions."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from isplit_export.errors import BadInputError, NotRunError, TechnicalError
from isplit_export.exporting.encoding import calibrate_encoding, decode_array, encode_array
from isplit_export.exporting.onnx_utils import OPSET, save_model
from isplit_export.options_serving import RUN_BACKENDS
from isplit_export.verification.backends import AUTO, BACKENDS, SplitHead, backend_named, head_backend
from isplit_export.verification.runners import OnnxrtRunner, TrtRunner, measure_latency, run_pair

PACKAGE = Path(__file__).resolve().parents[3] / "isplit_export"


def _model(path: Path, op: str, in_name: str, in_type: int, out_type: int) -> Path:
    """A one-node model ``op`` (Relu: float in, float out; Identity: same type) on a (N, 3) tensor."""
    graph = helper.make_graph(
        [helper.make_node(op, [in_name], ["out"])],
        op,
        [helper.make_tensor_value_info(in_name, in_type, ["N", 3])],
        [helper.make_tensor_value_info("out", out_type, ["N", 3])],
    )
    save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), path)
    return path


def _x(n: int = 5) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, 3)).astype(np.float32)


def test_onnxrt_runner_activates_once_infers_and_deactivates(tmp_path: Path) -> None:
    runner = OnnxrtRunner(_model(tmp_path / "relu.onnx", "Relu", "x", TensorProto.FLOAT, TensorProto.FLOAT))
    assert not runner.active
    with runner as r:
        assert r is runner and r.active
        session = runner._session
        runner.activate()  # already active: the same session
        assert runner._session is session
        np.testing.assert_array_equal(r.infer(_x()), np.maximum(_x(), 0))
        assert runner.input_meta().name == "x"
    assert not runner.active and runner._session is None
    np.testing.assert_array_equal(runner.infer(_x()), np.maximum(_x(), 0))  # infer activates on demand
    runner.deactivate()


def test_onnxrt_runner_load_and_run_failures_are_technical_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(TechnicalError, match=r"^onnxruntime cannot load .*bad\.onnx"):
        OnnxrtRunner(tmp_path / "bad.onnx").activate()
    runner = OnnxrtRunner(_model(tmp_path / "relu.onnx", "Relu", "x", TensorProto.FLOAT, TensorProto.FLOAT))
    with runner, pytest.raises(TechnicalError, match="onnxruntime failed running"):
        runner.infer(np.zeros((2, 4), dtype=np.float32))  # wrong width


def test_run_pair_encodes_a_float_head_output_as_an_engine_without_the_codec_would(tmp_path: Path) -> None:
    """A head that emits float where the encoding is uint8 (TensorRT engines are built without the codec):
    the wire is encoded here and the tail gets the decoded float32, as onnxruntime's Q/DQ would give."""
    head = OnnxrtRunner(_model(tmp_path / "h.onnx", "Identity", "x", TensorProto.FLOAT, TensorProto.FLOAT))
    tail = OnnxrtRunner(_model(tmp_path / "t.onnx", "Identity", "b", TensorProto.FLOAT, TensorProto.FLOAT))
    x = _x(7)
    enc = calibrate_encoding("int8", x)
    wire, logits = run_pair(head, tail, x, encoding=enc, batch=3)
    assert wire.dtype == np.uint8
    np.testing.assert_array_equal(wire, encode_array(x, enc))
    np.testing.assert_array_equal(logits, decode_array(encode_array(x, enc), enc))
    assert not head.active and not tail.active  # activated for the pair only
    # a head that carries the codec itself (uint8 out): sent as is, and the tail takes the uint8
    qhead = OnnxrtRunner(_model(tmp_path / "qh.onnx", "Identity", "x", TensorProto.UINT8, TensorProto.UINT8))
    qtail = OnnxrtRunner(_model(tmp_path / "qt.onnx", "Identity", "b", TensorProto.UINT8, TensorProto.UINT8))
    with qtail:
        sent, out = run_pair(qhead, qtail, wire, encoding=enc)
        assert qtail.active  # the caller's active runner stays active
    np.testing.assert_array_equal(sent, wire)
    np.testing.assert_array_equal(out, wire)
    with pytest.raises(BadInputError, match="no input images"):
        run_pair(head, tail, x[:0])


def test_measure_latency_times_runners_of_any_backend(tmp_path: Path) -> None:
    head = OnnxrtRunner(_model(tmp_path / "h.onnx", "Relu", "x", TensorProto.FLOAT, TensorProto.FLOAT))
    tail = OnnxrtRunner(_model(tmp_path / "t.onnx", "Relu", "b", TensorProto.FLOAT, TensorProto.FLOAT))
    lat = measure_latency({"head": head, "tail": tail}, _x(), warmup=0, runs=2)
    assert set(lat) == {"head_ms", "tail_ms"} and all(v > 0 for v in lat.values())
    with pytest.raises(BadInputError, match="unknown model key"):
        measure_latency({"middle": head}, _x())


def test_trt_runner_imports_tensorrt_only_when_it_activates(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from isplit_export.verification import backends, runners, verify\n"
        "from isplit_export.serving import local\n"
        "r = runners.TrtRunner(__import__('pathlib').Path('x.engine'))\n"
        "assert 'tensorrt' not in sys.modules, 'tensorrt imported before any runner activated'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PACKAGE.parent)


def test_trt_runner_without_tensorrt_is_not_run(tmp_path: Path) -> None:
    from isplit_export.targets.trt_backend import tensorrt_available

    if tensorrt_available():
        pytest.skip("TensorRT is available here: the device tests cover this runner")
    with pytest.raises(NotRunError) as e:
        TrtRunner(tmp_path / "head.fp16.engine").activate()
    assert e.value.exit_code == 4


def test_the_registry_is_the_only_list_of_backends() -> None:
    assert all(name == backend.name for name, backend in BACKENDS.items())
    assert set(RUN_BACKENDS) == {AUTO, *BACKENDS}  # run --backend validates against the same names
    with pytest.raises(BadInputError, match="unknown backend 'openvino': choose onnxruntime or tensorrt"):
        backend_named("openvino")


def test_auto_head_falls_back_with_the_reason(tmp_path: Path) -> None:
    from isplit_export.targets.trt_backend import tensorrt_available

    if tensorrt_available():
        pytest.skip("TensorRT is available here")
    onnx_head = _model(tmp_path / "head.onnx", "Relu", "x", TensorProto.FLOAT, TensorProto.FLOAT)
    split = SplitHead(onnx_head, tmp_path, "x", lambda: (tmp_path / "engines/head.fp16.engine", None))
    backend, why = head_backend(AUTO, split, trust=False)
    assert (backend.name, why) == ("onnxruntime", "auto: TensorRT does not import here")
    assert head_backend("tensorrt", split, trust=False)[1] == "--backend tensorrt"
    with backend.head(split, threads=1, trust=False) as runner:
        assert isinstance(runner, OnnxrtRunner) and runner.threads == 1


_COMPARISON = re.compile(
    r"""==\s*"(tensorrt|onnxruntime)"|"(tensorrt|onnxruntime)"\s*[!=]=|!=\s*"(tensorrt|onnxruntime)"|in \("onnxruntime"|backend\s*[!=]="""
)


@pytest.mark.parametrize("module", ["verification", "serving", "jobs", "cli_bundle.py", "cli_serving.py"])
def test_runner_users_never_compare_backend_names(module: str) -> None:
    """verify, run, serve, the export's pair runs and the latency timer take runners from the registry."""
    root = PACKAGE / module
    files = [root] if root.is_file() else sorted(root.rglob("*.py"))
    hits = [
        f"{f.relative_to(PACKAGE)}:{n}: {line.strip()}"
        for f in files
        if f.name != "backends.py"  # the registry itself
        for n, line in enumerate(f.read_text().splitlines(), 1)
        if _COMPARISON.search(line)
    ]
    assert not hits, hits
