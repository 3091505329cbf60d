"""fp16-typed ONNX copies for TensorRT 11 (targets/typed.py): checked by the ONNX checker, run by onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from isplit_export.targets.typed import to_fp16


def _model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.2, "w"),
        numpy_helper.from_array(rng.standard_normal(8).astype(np.float32) * 0.1, "b"),
        numpy_helper.from_array(np.array([], np.float32), "roi"),
        numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
        numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
        numpy_helper.from_array(np.array(6.0, np.float32), "hi"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["c", "lo", "hi"], ["r"]),
        helper.make_node("Resize", ["r", "roi", "scales"], ["u"], mode="nearest"),
        helper.make_node("Add", ["u", "u"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "m",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8, 16, 16])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_fp16_copy_computes_in_fp16_with_an_fp32_interface() -> None:
    model = _model()
    typed = to_fp16(model)
    onnx.checker.check_model(typed, full_check=True)
    types = {t.name: t.data_type for t in typed.graph.initializer}
    assert types["w"] == types["b"] == types["lo"] == types["hi"] == TensorProto.FLOAT16
    assert (
        types["scales"] == types["roi"] == TensorProto.FLOAT
    )  # Resize's scales stay float32 by the ONNX spec
    assert typed.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert typed.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x}
    )[0]
    got = ort.InferenceSession(typed.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x}
    )[0]
    assert got.dtype == np.float32 and got.shape == ref.shape == (2, 8, 16, 16)
    assert np.max(np.abs(got - ref)) / np.max(np.abs(ref)) < 5e-3  # fp16 rounding, not a different function
    assert not np.array_equal(got, ref)  # the copy really computed in fp16
