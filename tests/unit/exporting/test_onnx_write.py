"""The streamed writer gives protobuf's own bytes for every shape of model the tool writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torchvision
from onnx import TensorProto, helper, numpy_helper

from isplit_export.exporting.onnx_export import to_onnx
from isplit_export.exporting.onnx_utils import OPSET, save_model
from isplit_export.exporting.onnx_write import serialized_chunks, write_onnx
from isplit_export.exporting.quantize import quantize_qdq


def _expected(model: onnx.ModelProto) -> bytes:
    return model.SerializeToString(deterministic=True)


def _small(rng: np.random.Generator) -> onnx.ModelProto:
    """Conv -> Relu -> Gemm with raw, float_data, int64 and external-data initializers, metadata."""
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    b = helper.make_tensor("b", TensorProto.FLOAT, [4], rng.standard_normal(4).tolist())  # float_data
    shape = numpy_helper.from_array(np.array([1, -1], dtype=np.int64), "shape")
    fc = numpy_helper.from_array(rng.standard_normal((256, 10)).astype(np.float32), "fc")
    fc.doc_string = "a doc string after raw_data"
    ext = onnx.TensorProto(name="unused", data_type=TensorProto.FLOAT, dims=[2])
    ext.data_location = TensorProto.EXTERNAL
    ext.external_data.add(key="location", value="x.bin")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Reshape", ["r", "shape"], ["f"], name="flatten"),
        helper.make_node("MatMul", ["f", "fc"], ["y"], name="fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "small",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])],
        [w, b, shape, fc, ext],
        doc_string="graph doc",
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)
    helper.set_model_props(model, {"k": "v"})
    model.doc_string = "model doc"
    return model


def test_small_models_give_protobuf_bytes(tmp_path: Path) -> None:
    model = _small(np.random.default_rng(0))
    assert b"".join(serialized_chunks(model)) == _expected(model)
    write_onnx(model, tmp_path / "m.onnx")
    assert (tmp_path / "m.onnx").read_bytes() == _expected(model)
    empty = onnx.ModelProto()
    assert b"".join(serialized_chunks(empty)) == _expected(empty)
    no_init = helper.make_model(helper.make_graph([], "g", [], []))
    assert b"".join(serialized_chunks(no_init)) == _expected(no_init)


def test_unknown_fields_are_kept(tmp_path: Path) -> None:
    model = _small(np.random.default_rng(1))
    data = _expected(model) + b"\xf8\x07\x01"  # field 127, varint 1: no ONNX field
    odd = onnx.ModelProto()
    odd.ParseFromString(data)
    assert b"".join(serialized_chunks(odd)) == data
    tensor = onnx.TensorProto()
    tensor.ParseFromString(model.graph.initializer[0].SerializeToString() + b"\xf8\x07\x02")
    model.graph.initializer[0].CopyFrom(tensor)
    assert b"".join(serialized_chunks(model)) == _expected(model)


def test_exported_and_quantized_models_give_protobuf_bytes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10).eval()
    model = to_onnx(net, torch.randn(1, 3, 32, 32), "input", "logits")
    assert b"".join(serialized_chunks(model)) == _expected(model)
    save_model(model, tmp_path / "fp32.onnx")  # canonicalized, streamed, checked
    written = onnx.load(tmp_path / "fp32.onnx")
    assert (tmp_path / "fp32.onnx").read_bytes() == _expected(written)
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    quantize_qdq(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", {"input": x})
    q = onnx.load(tmp_path / "int8.onnx")
    assert (tmp_path / "int8.onnx").read_bytes() == _expected(q)


def test_a_field_already_present_is_refused() -> None:
    from isplit_export.exporting.onnx_write import _insert_at

    tensor = numpy_helper.from_array(np.zeros(3, dtype=np.float32), "t")
    with pytest.raises(ValueError, match="field 9"):
        _insert_at(tensor.SerializeToString(), 9)


def test_a_model_over_the_protobuf_limit_is_refused_and_nothing_is_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from isplit_export.errors import BadInputError
    from isplit_export.exporting import onnx_write

    model = _small(np.random.default_rng(2))
    size = len(_expected(model))
    monkeypatch.setattr(onnx_write, "MAX_BYTES", size)
    write_onnx(model, tmp_path / "fits.onnx")  # exactly the limit: written
    assert (tmp_path / "fits.onnx").read_bytes() == _expected(model)
    monkeypatch.setattr(onnx_write, "MAX_BYTES", size - 1)
    with pytest.raises(BadInputError, match="over protobuf's 2 GiB limit"):
        write_onnx(model, tmp_path / "big.onnx")
    assert not (tmp_path / "big.onnx").exists()
