"""The INT8 build's memory-saving steps give what the plain ones give: onnxruntime's pre-processing
bytes, and probe sessions (from a file with external data) without touching the model probed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization.shape_inference import quant_pre_process

from isplit_export.exporting.onnx_graph import probe_model, probing
from isplit_export.exporting.onnx_utils import OPSET, make_session, probe_session, run_session, write_external
from isplit_export.exporting.quantize import QUANTIZED_OP_TYPES, pre_process, static_options, static_qdq


def _model() -> onnx.ModelProto:
    """Conv -> Relu -> Flatten -> Gemm (transB) -> Gemm (no transB), random weights, opset 17."""
    rng = np.random.default_rng(0)

    def init(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w1", "b1"], ["g"], name="fc1", transB=1),
        helper.make_node("Gemm", ["g", "w2", "b2"], ["y"], name="fc2"),
    ]
    graph = helper.make_graph(
        nodes,
        "small",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        [
            init("w0", 4, 3, 3, 3),
            init("b0", 4),
            init("w1", 32, 256),
            init("b1", 32),
            init("w2", 32, 10),
            init("b2", 10),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)


def test_pre_process_gives_onnxruntime_bytes(tmp_path: Path) -> None:
    src = tmp_path / "model.onnx"
    onnx.save(_model(), str(src))
    theirs = tmp_path / "theirs.onnx"
    quant_pre_process(str(src), str(theirs), skip_symbolic_shape=True)
    work = tmp_path / "work"
    work.mkdir()
    ours = tmp_path / "ours.onnx"
    onnx.save(pre_process(src, work), str(ours))
    assert ours.read_bytes() == theirs.read_bytes()
    assert list(work.iterdir()) == []  # its intermediate files are gone


def test_probing_is_probe_model_and_leaves_the_model_alone(tmp_path: Path) -> None:
    model = _model()
    before = model.SerializeToString()
    with probing(model, ["r", "g"]) as probe:
        assert probe.SerializeToString() == probe_model(model, ["r", "g"]).SerializeToString()
        write_external(probe, tmp_path / "probe.onnx")
    assert model.SerializeToString() == before
    loaded = onnx.load(str(tmp_path / "probe.onnx"))
    for init in loaded.graph.initializer:  # onnx.load marks the tensors it read from external data
        init.ClearField("data_location")
    assert loaded == probe_model(model, ["r", "g"])
    assert (tmp_path / "probe.onnx.data").stat().st_size == 4 * (32 * 256 + 32 * 10)  # the weights >= 1 KiB
    x = np.ones((1, 3, 8, 8), dtype=np.float32)
    plain = run_session(make_session(probe_model(model, ["r", "g"]).SerializeToString()), {"x": x})
    probed = run_session(probe_session(model, ["r", "g"]), {"x": x})
    assert [a.shape for a in probed] == [(1, 4, 8, 8), (1, 32)]
    assert all(np.array_equal(a, b) for a, b in zip(plain, probed, strict=True))
    assert model.SerializeToString() == before


def test_static_qdq_gives_one_quantize_static_calls_bytes(tmp_path: Path) -> None:
    """Calibrated first and read back from the calibration cache: the same file as onnxruntime's one call
    (what an onnxruntime without calibration caches runs)."""
    from onnxruntime.quantization import quantize_static

    src = tmp_path / "model.onnx"
    onnx.save(_model(), str(src))
    x = np.random.default_rng(0).standard_normal((5, 3, 8, 8)).astype(np.float32)

    class Reader:
        def __init__(self) -> None:
            self.i = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            self.i += 1
            return {"x": x[self.i - 1 : self.i]} if self.i <= len(x) else None

    theirs = tmp_path / "theirs.onnx"
    quantize_static(str(src), str(theirs), Reader(), **static_options(QUANTIZED_OP_TYPES, True, ["relu"], ()))
    work = tmp_path / "work"
    work.mkdir()
    onnx.save(_model(), str(work / "model.onnx"))
    ours = tmp_path / "ours.onnx"
    static_qdq(
        work / "model.onnx",
        ours,
        {"x": x},
        op_types=QUANTIZED_OP_TYPES,
        per_channel=True,
        nodes_to_exclude=["relu"],
        float_outputs=(),
    )
    assert (work / "ranges.json").is_file()  # the two-step path ran (this onnxruntime has calibration caches)
    assert onnx.load(str(ours)) == onnx.load(str(theirs))
