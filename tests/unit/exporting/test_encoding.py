"""Boundary encodings: parameters, numpy references, and the head/tail graph edits in onnxruntime."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from isplit_export.errors import BadInputError
from isplit_export.exporting.encoding import (
    ENCODINGS,
    BoundaryEncoding,
    calibrate_encoding,
    decode_array,
    decode_tail,
    encode_array,
    encode_head,
    strip_head_encoding,
    strip_tail_decoding,
)
from isplit_export.exporting.onnx_export import export_file
from isplit_export.exporting.onnx_utils import make_session, run_session, save_model

FP16_EPS = 2.0**-11  # unit roundoff of float16 (round to nearest)

Edit = Callable[[onnx.ModelProto, BoundaryEncoding], onnx.ModelProto]
Strip = Callable[[onnx.ModelProto], onnx.ModelProto]


# --------------------------------------------------------------------------------------------------
# fixtures


def _export(module: nn.Module, example: torch.Tensor, names: tuple[str, str], path: Path) -> None:
    export_file(module.eval(), example, path, *names)


@dataclass(frozen=True)
class Pair:
    """Exported fp32 head/tail files, the torch tail, inputs and their fp32 boundary."""

    dir: Path
    tail: nn.Sequential
    x: np.ndarray
    boundary: np.ndarray


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Pair:
    """A seeded tiny CNN cut in two: fp32 head/tail ONNX files, the torch tail, some inputs."""
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(8)
    head = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), bn, nn.ReLU(), nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.ReLU()
    )
    tail = nn.Sequential(
        nn.Conv2d(12, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)
    )
    with torch.no_grad():  # non-trivial BatchNorm statistics, so the folded weights are not the raw ones
        mean, var = bn.running_mean, bn.running_var
        assert mean is not None and var is not None
        mean.uniform_(-0.2, 0.2)
        var.uniform_(0.5, 2.0)
    head.eval()
    tail.eval()
    d = tmp_path_factory.mktemp("pair")
    x = torch.randn(32, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        b = head(x)
    _export(head, x[:2], ("input", "boundary"), d / "head.onnx")
    _export(tail, b[:2], ("boundary", "logits"), d / "tail.onnx")
    return Pair(dir=d, tail=tail, x=x.numpy(), boundary=b.numpy())


def _load(pair: Pair, which: str) -> onnx.ModelProto:
    return onnx.load(str(pair.dir / f"{which}.onnx"))


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    return run_session(make_session(model.SerializeToString()), feeds)[0]


def _tail_linf_lipschitz(tail: nn.Sequential) -> float:
    """An l-inf Lipschitz bound of the tail: product of induced l-inf norms (ReLU / average pool are 1)."""
    bound = 1.0
    for m in tail:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight.detach().abs().reshape(m.weight.shape[0], -1)
            bound *= float(w.sum(dim=1).max())
    return bound


def _identity_model(inp: str, out: str, in_type: int = TensorProto.FLOAT) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Identity", [inp], [out])],
        "identity",
        [helper.make_tensor_value_info(inp, in_type, ["batch", 7, 5])],
        [helper.make_tensor_value_info(out, in_type, ["batch", 7, 5])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


# --------------------------------------------------------------------------------------------------
# parameters


def test_encoding_names_and_sizes() -> None:
    assert ENCODINGS == ("fp32", "fp16", "int8")
    b = np.abs(np.random.default_rng(0).standard_normal((4, 12, 6, 6))).astype(np.float32)
    sizes = {name: calibrate_encoding(name, b) for name in ENCODINGS}
    assert [e.dtype for e in sizes.values()] == ["float32", "float16", "uint8"]
    assert [e.bytes_per_element for e in sizes.values()] == [4, 2, 1]
    assert [e.bytes_per_image((12, 6, 6)) for e in sizes.values()] == [1728, 864, 432]
    assert sizes["fp32"].scale is None and sizes["fp16"].zero_point is None


def test_unknown_encoding_refused() -> None:
    with pytest.raises(BadInputError, match=r"fp32, fp16, int8"):
        calibrate_encoding("int4", np.zeros(3, np.float32))
    with pytest.raises(BadInputError, match="unknown boundary encoding"):
        BoundaryEncoding.from_json({"encoding": "bf16", "dtype": "bfloat16"})


def test_int8_calibration_relu_tensor() -> None:
    """Non-negative data (after ReLU): zero point 0, 255 steps up to the maximum, float32 scale."""
    b = np.abs(np.random.default_rng(1).standard_normal((8, 4, 5, 5))).astype(np.float32) * 3
    enc = calibrate_encoding("int8", b)
    assert enc.zero_point == 0
    assert enc.scale == float(np.float32(float(b.max()) / 255))
    assert float(np.float32(enc.scale)) == enc.scale
    q = encode_array(b, enc)
    assert q.dtype == np.uint8 and int(q.max()) == 255 and int(q.min()) == 0


@pytest.mark.parametrize(
    ("values", "zero_point", "scale"),
    [
        ([0.0, 0.0, 0.0], 0, 1.0),  # all zero
        ([5.0, 5.0], 0, float(np.float32(5.0 / 255))),  # constant positive: range widened to 0
        ([-3.0, -3.0], 255, float(np.float32(3.0 / 255))),  # constant negative
        ([-1.0, 3.0], 64, float(np.float32(4.0 / 255))),  # mixed signs: 0 exactly representable
        ([0.0, 1e-42], 0, float(np.finfo(np.float32).tiny)),  # range too small for a normal float32 scale
    ],
)
def test_int8_calibration_edge_cases(values: list[float], zero_point: int, scale: float) -> None:
    enc = calibrate_encoding("int8", np.array(values, dtype=np.float32))
    assert (enc.zero_point, enc.scale) == (zero_point, scale)
    assert decode_array(encode_array(np.zeros(2, np.float32), enc), enc).tolist() == [0.0, 0.0]


def test_int8_calibration_refuses_bad_samples() -> None:
    for bad in (np.array([1.0, np.nan], np.float32), np.array([np.inf], np.float32)):
        with pytest.raises(BadInputError, match="NaN or infinity"):
            calibrate_encoding("int8", bad)
    with pytest.raises(BadInputError, match="at least one sample"):
        calibrate_encoding("int8", np.zeros((0, 3), np.float32))
    with pytest.raises(BadInputError, match="float samples"):
        calibrate_encoding("int8", np.arange(4))


def test_json_round_trip_and_validation() -> None:
    b = np.random.default_rng(2).standard_normal(100).astype(np.float32)
    for name in ENCODINGS:
        enc = calibrate_encoding(name, b)
        d = enc.to_json()
        assert set(d) == {"encoding", "dtype", "scale", "zero_point"}
        assert BoundaryEncoding.from_json(d) == enc
    with pytest.raises(BadInputError, match="zero_point"):
        BoundaryEncoding("int8", "uint8", scale=0.5, zero_point=256)
    with pytest.raises(BadInputError, match="float32"):
        BoundaryEncoding("int8", "uint8", scale=0.1, zero_point=0)  # 0.1 is not a float32 value
    with pytest.raises(BadInputError, match="positive"):
        BoundaryEncoding("int8", "uint8", scale=0.0, zero_point=0)
    with pytest.raises(BadInputError, match="needs a scale"):
        BoundaryEncoding("int8", "uint8")
    with pytest.raises(BadInputError, match="no scale"):
        BoundaryEncoding("fp16", "float16", scale=0.5)
    with pytest.raises(BadInputError, match="transmits float16"):
        BoundaryEncoding("fp16", "float32")


def test_int8_round_trip_error_and_saturation() -> None:
    rng = np.random.default_rng(3)
    calib = rng.standard_normal(1000).astype(np.float32) * 2
    enc = calibrate_encoding("int8", calib)
    assert enc.scale is not None
    err = np.abs(decode_array(encode_array(calib, enc), enc) - calib)
    assert float(err.max()) <= enc.scale / 2 * (1 + 1e-5)
    far = np.array([-1e6, 1e6], np.float32)
    assert encode_array(far, enc).tolist() == [0, 255]
    with pytest.raises(BadInputError, match="must be uint8"):
        decode_array(np.zeros(3, np.float32), enc)


# --------------------------------------------------------------------------------------------------
# graph edits on an exported head/tail pair


@pytest.mark.parametrize(("name", "elem"), [("fp16", TensorProto.FLOAT16), ("int8", TensorProto.UINT8)])
def test_encoded_graph_types(pair: Pair, name: str, elem: int, tmp_path: Path) -> None:
    enc = calibrate_encoding(name, pair.boundary)
    head, tail = encode_head(_load(pair, "head"), enc), decode_tail(_load(pair, "tail"), enc)
    save_model(head, tmp_path / "head.onnx")  # ONNX checker, full check
    save_model(tail, tmp_path / "tail.onnx")
    out = head.graph.output[0]
    inp = tail.graph.input[0]
    assert (out.name, inp.name) == ("boundary", "boundary")
    assert out.type.tensor_type.elem_type == elem == inp.type.tensor_type.elem_type
    for vi in (out, inp):
        dims = vi.type.tensor_type.shape.dim
        assert dims[0].dim_param == "batch"
        assert [d.dim_value for d in dims[1:]] == [12, 6, 6]
    x = pair.x
    q = run_session(make_session(tmp_path / "head.onnx"), {"input": x})[0]
    assert q.dtype == np.dtype(enc.dtype)
    assert q.nbytes == len(x) * 12 * 6 * 6 * enc.bytes_per_element
    logits = run_session(make_session(tmp_path / "tail.onnx"), {"boundary": q})[0]
    assert logits.dtype == np.float32 and logits.shape == (len(x), 10)


def test_fp32_is_unchanged(pair: Pair) -> None:
    enc = calibrate_encoding("fp32", pair.boundary)
    edits: list[tuple[str, Edit]] = [("head", encode_head), ("tail", decode_tail)]
    for which, fn in edits:
        model = _load(pair, which)
        assert fn(model, enc).SerializeToString(deterministic=True) == model.SerializeToString(
            deterministic=True
        )


@pytest.mark.parametrize("name", ["fp16", "int8"])
def test_encoding_is_byte_deterministic_and_strippable(pair: Pair, name: str) -> None:
    enc = calibrate_encoding(name, pair.boundary)
    edits: list[tuple[str, Edit, Strip]] = [
        ("head", encode_head, strip_head_encoding),
        ("tail", decode_tail, strip_tail_decoding),
    ]
    for which, fn, strip in edits:
        original = _load(pair, which)
        a = fn(_load(pair, which), enc).SerializeToString(deterministic=True)
        b = fn(_load(pair, which), enc).SerializeToString(deterministic=True)
        assert a == b
        assert original.SerializeToString(deterministic=True) == _load(pair, which).SerializeToString(
            deterministic=True
        )  # the input is not modified
        back = strip(fn(original, enc))
        assert back.SerializeToString(deterministic=True) == original.SerializeToString(deterministic=True)


def test_encode_array_matches_onnxruntime(pair: Pair) -> None:
    """The numpy references give exactly what the encoded head / decoding tail compute."""
    x = pair.x
    b = _run(_load(pair, "head"), {"input": x})
    for name in ("fp16", "int8"):
        enc = calibrate_encoding(name, b[:8])  # calibrated on a subset: the rest may saturate
        q = _run(encode_head(_load(pair, "head"), enc), {"input": x})
        ref = encode_array(b, enc)
        assert q.dtype == ref.dtype
        assert np.array_equal(q.view(np.uint8), ref.view(np.uint8))
        stripped = strip_tail_decoding(decode_tail(_load(pair, "tail"), enc))
        assert np.array_equal(
            _run(decode_tail(_load(pair, "tail"), enc), {"boundary": q}),
            _run(stripped, {"boundary": decode_array(q, enc)}),
        )


def test_int8_codec_exact_on_ties_and_saturation() -> None:
    """Half-way values round to even and out-of-range values saturate, in numpy as in onnxruntime."""
    rng = np.random.default_rng(4)
    enc = calibrate_encoding("int8", rng.standard_normal(1000).astype(np.float32))
    assert enc.scale is not None and enc.zero_point not in (None, 0)
    k = rng.integers(-300, 300, size=(3000, 7, 5))
    x = ((k + 0.5) * np.float32(enc.scale)).astype(np.float32)  # ties (up to float32 rounding)
    x[:100] = rng.standard_normal((100, 7, 5)).astype(np.float32) * 1e3  # saturation both ways
    head = encode_head(_identity_model("input", "boundary"), enc)
    q = _run(head, {"input": x})
    assert np.array_equal(q, encode_array(x, enc))
    assert {0, 255} <= set(np.unique(q).tolist())
    tail = decode_tail(_identity_model("boundary", "logits"), enc)
    assert np.array_equal(_run(tail, {"boundary": q}), decode_array(q, enc))


@pytest.mark.parametrize("name", ["fp16", "int8"])
def test_encoded_pair_close_to_fp32_pair(pair: Pair, name: str) -> None:
    """tail(head(x)) within the bound the encoding's rounding error and the tail's Lipschitz constant give."""
    x, b = pair.x, pair.boundary
    ref_b = _run(_load(pair, "head"), {"input": x})
    ref = _run(_load(pair, "tail"), {"boundary": ref_b})
    enc = calibrate_encoding(name, b)
    q = _run(encode_head(_load(pair, "head"), enc), {"input": x})
    got = _run(decode_tail(_load(pair, "tail"), enc), {"boundary": q})
    if name == "fp16":
        step = float(np.abs(ref_b).max()) * FP16_EPS
    else:
        assert enc.scale is not None
        step = enc.scale / 2 * (1 + 1e-5)
    b_err = float(np.abs(decode_array(q, enc) - ref_b).max())
    assert b_err <= step
    bound = _tail_linf_lipschitz(pair.tail) * step + 1e-5
    l_err = float(np.abs(got - ref).max())
    assert l_err <= bound, (l_err, bound)
    agree = float((got.argmax(1) == ref.argmax(1)).mean())
    print(
        f"{name}: boundary max err {b_err:.3g} (step bound {step:.3g}), logits max err {l_err:.3g} "
        f"(bound {bound:.3g}), top-1 agreement {agree:.3f}"
    )
    assert agree >= (1.0 if name == "fp16" else 0.9)


# --------------------------------------------------------------------------------------------------
# refusals and odd graphs


def test_graph_edits_refuse_bad_models(pair: Pair) -> None:
    enc = calibrate_encoding("int8", pair.boundary)
    with pytest.raises(BadInputError, match="already encoded"):
        encode_head(encode_head(_load(pair, "head"), enc), enc)
    with pytest.raises(BadInputError, match="already encoded"):
        decode_tail(decode_tail(_load(pair, "tail"), enc), enc)
    with pytest.raises(BadInputError, match="no head graph output named 'boundary'"):
        encode_head(_identity_model("input", "features"), enc)
    with pytest.raises(BadInputError, match="no tail graph input named 'boundary'"):
        decode_tail(_identity_model("features", "logits"), enc)
    old = _identity_model("input", "boundary")
    old.opset_import[0].version = 11
    with pytest.raises(BadInputError, match="opset >= 13"):
        encode_head(old, enc)


def test_name_collisions_are_avoided() -> None:
    """Tensors already called like the codec's own names do not clash."""
    enc = calibrate_encoding("int8", np.linspace(-1, 1, 11, dtype=np.float32))
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["input", "boundary_encoding_scale"], ["boundary_fp32"]),
            helper.make_node("Relu", ["boundary_fp32"], ["boundary"]),
        ],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("boundary", TensorProto.FLOAT, ["batch", 3])],
        initializer=[numpy_helper.from_array(np.ones(3, np.float32), "boundary_encoding_scale")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    head = encode_head(model, enc)
    onnx.checker.check_model(head, full_check=True)
    x = np.array([[-2.0, 0.0, 0.5]], np.float32)
    assert np.array_equal(_run(head, {"input": x}), encode_array(np.maximum(x + 1, 0), enc))
    assert strip_head_encoding(head).SerializeToString(deterministic=True) == model.SerializeToString(
        deterministic=True
    )
