"""INT8 explicit quantization (QDQ) of head/tail pairs with onnxruntime static quantization."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, numpy_helper
from sklearn.datasets import load_digits
from torch import nn

import isplit_export
from isplit_export.errors import BadInputError
from isplit_export.exporting.encoding import (
    BoundaryEncoding,
    calibrate_encoding,
    decode_tail,
    encode_head,
    strip_head_encoding,
)
from isplit_export.exporting.onnx_export import export_file
from isplit_export.exporting.onnx_utils import make_session, run_session, save_model
from isplit_export.exporting.quantize import build_int8_pair, quantize_qdq

N_CALIB = 64


def _export(module: nn.Module, example: torch.Tensor, names: tuple[str, str], path: Path) -> None:
    export_file(module.eval(), example, path, *names)


@dataclass(frozen=True)
class Digits:
    """The exported fp32 head/tail/full files, calibration and test images, labels, torch logits."""

    dir: Path
    calib: np.ndarray
    x: np.ndarray
    y: np.ndarray
    logits: np.ndarray


@dataclass(frozen=True)
class Int8Pair:
    """Where the INT8 pair was written, the boundary encoding it carries, the returned calibration tensors."""

    dir: Path
    enc: BoundaryEncoding
    calib: np.ndarray


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Digits:
    """A small CNN trained for a few hundred steps on sklearn's 8x8 digits, exported as head/tail/full."""
    data = load_digits()
    x_all = (data.images.astype(np.float32) / 16.0 - 0.5)[:, None]  # [N, 1, 8, 8]
    y_all = data.target.astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(x_all))
    train, test = perm[:1400], perm[1400:]
    torch.manual_seed(0)
    head = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(),
    )
    tail = nn.Sequential(
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)
    )
    net = nn.Sequential(head, tail)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(x_all[train]), torch.from_numpy(y_all[train])
    g = torch.Generator().manual_seed(0)
    net.train()
    for _ in range(300):
        idx = torch.randint(0, len(xt), (64,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(net(xt[idx]), yt[idx]).backward()
        opt.step()
    net.eval()
    d = tmp_path_factory.mktemp("digits")
    x_test = torch.from_numpy(x_all[test])
    with torch.no_grad():
        b = head(x_test[:2])
        logits = net(x_test).numpy()
    _export(head, x_test[:2], ("input", "boundary"), d / "head.onnx")
    _export(tail, b, ("boundary", "logits"), d / "tail.onnx")
    _export(net, x_test[:2], ("input", "logits"), d / "full.onnx")
    return Digits(dir=d, calib=x_all[train[:N_CALIB]], x=x_all[test], y=y_all[test], logits=logits)


def _fp32_boundary(digits: Digits) -> np.ndarray:
    return run_session(make_session(digits.dir / "head.onnx"), {"input": digits.calib})[0]


@pytest.fixture(scope="module")
def int8_pair(digits: Digits, tmp_path_factory: pytest.TempPathFactory) -> Int8Pair:
    """The INT8 QDQ pair with the int8 (uint8-transmitted) boundary encoding.

    Every layer is quantized: on 8x8 digits every conv works at stride < 4, far more than
    ``MAX_FLOAT_SHARE`` of the arithmetic, so there is no float stem (it has its own test).
    """
    d, out = digits.dir, tmp_path_factory.mktemp("int8")
    enc = calibrate_encoding("int8", _fp32_boundary(digits))
    calib = build_int8_pair(
        d / "head.onnx", d / "tail.onnx", digits.calib, out / "head.int8.onnx", out / "tail.int8.onnx", enc
    )
    return Int8Pair(dir=out, enc=enc, calib=calib)


def _pair_logits(head: Path, tail: Path, x: np.ndarray) -> np.ndarray:
    b = run_session(make_session(head), {"input": x})[0]
    return run_session(make_session(tail), {"boundary": b})[0]


def _zero_point_arrays(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    inits = {t.name: t for t in model.graph.initializer}
    zps = {}
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            assert len(node.input) == 3, node.name
            zps[node.name] = inits[node.input[2]]
    return {k: numpy_helper.to_array(v) for k, v in zps.items()}


# --------------------------------------------------------------------------------------------------


def test_qdq_models_are_symmetric_int8(int8_pair: Int8Pair) -> None:
    """Activations int8 with zero point 0, weights int8 initializers behind DequantizeLinear only (per output
    channel), biases float32; only the boundary codec is uint8."""
    out = int8_pair.dir
    for which in ("head", "tail"):
        model = onnx.load(str(out / f"{which}.int8.onnx"))
        onnx.checker.check_model(model, full_check=True)
        assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
        ops = [n.op_type for n in model.graph.node]
        assert ops.count("QuantizeLinear") >= 2 and ops.count("DequantizeLinear") >= 2
        codec = "boundary_encode" if which == "head" else "boundary_decode"
        zps = _zero_point_arrays(model)
        assert zps.pop(codec).dtype == np.uint8  # the transmitted boundary, asymmetric by design
        assert zps, "no Q/DQ besides the boundary codec"
        for name, zp in zps.items():
            assert zp.dtype == np.int8, name
            assert not zp.any(), name
        inits = {t.name: t for t in model.graph.initializer}
        producer = {o: n for n in model.graph.node for o in n.output}
        float_weights = [
            t.name for t in inits.values() if t.data_type == TensorProto.FLOAT and len(t.dims) > 1
        ]
        assert not float_weights, float_weights  # no fp32 weight left behind a Q/DQ pair
        weighted = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
        assert weighted
        for node in weighted:
            dq = producer[node.input[1]]  # the weight: DequantizeLinear(int8 initializer), no QuantizeLinear
            assert dq.op_type == "DequantizeLinear" and dq.input[0] in inits, node.name
            weight = inits[dq.input[0]]
            assert weight.data_type == TensorProto.INT8, node.name
            scale = numpy_helper.to_array(inits[dq.input[1]])
            axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
            assert axis == 0 and scale.shape == (weight.dims[0],), node.name  # per output channel
            if len(node.input) > 2:  # bias stays a float32 initializer (TensorRT takes no int32 bias DQ)
                assert inits[node.input[2]].data_type == TensorProto.FLOAT, node.name
            assert producer[node.input[0]].op_type == "DequantizeLinear", node.name  # int8 activations
        q_inputs = [n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"]
        assert not set(q_inputs) & set(inits), "a weight is quantized at run time"


def test_int8_pair_interface_and_calibration(digits: Digits, int8_pair: Int8Pair) -> None:
    """Same boundary interface as the encoded fp32 pair; the returned tensors are the quantized head's."""
    out, enc = int8_pair.dir, int8_pair.enc
    head = onnx.load(str(out / "head.int8.onnx"))
    tail = onnx.load(str(out / "tail.int8.onnx"))
    assert head.graph.output[0].name == "boundary" == tail.graph.input[0].name
    assert head.graph.output[0].type.tensor_type.elem_type == TensorProto.UINT8
    assert tail.graph.input[0].type.tensor_type.elem_type == TensorProto.UINT8
    assert head.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    calib = int8_pair.calib
    assert calib.dtype == np.float32 and calib.shape == (N_CALIB, 32, 4, 4)
    q = run_session(make_session(out / "head.int8.onnx"), {"input": digits.calib})[0]
    assert q.dtype == np.uint8
    pre = run_session(make_session(strip_head_encoding(head).SerializeToString()), {"input": digits.calib})[0]
    np.testing.assert_allclose(pre, calib, rtol=0, atol=1e-5)
    assert enc.name == "int8"


def test_int8_pair_top1_agreement(digits: Digits, int8_pair: Int8Pair) -> None:
    d, out = digits.dir, int8_pair.dir
    x, y, ref = digits.x, digits.y, digits.logits
    full = run_session(make_session(d / "full.onnx"), {"input": x})[0]
    np.testing.assert_allclose(full, ref, atol=1e-4)
    got = _pair_logits(out / "head.int8.onnx", out / "tail.int8.onnx", x)
    agree = float((got.argmax(1) == full.argmax(1)).mean())
    acc_fp32 = float((full.argmax(1) == y).mean())
    acc_int8 = float((got.argmax(1) == y).mean())
    rel = float(np.abs(got - full).max() / np.abs(full).max())
    print(
        f"digits test n={len(full)}: fp32 acc {acc_fp32:.4f}, int8 QDQ acc {acc_int8:.4f}, "
        f"top-1 agreement {agree:.4f}, max |logit err| / max |logit| {rel:.4f}"
    )
    assert acc_fp32 >= 0.9
    assert agree >= 0.97
    assert acc_int8 >= acc_fp32 - 0.03


def test_int8_pair_is_byte_identical(digits: Digits, int8_pair: Int8Pair, tmp_path: Path) -> None:
    """A second run gives the same bytes, also from an already-encoded (fp16) pair, and leaves no stray files."""
    d, first = digits.dir, int8_pair.dir
    enc = int8_pair.enc
    fp16 = calibrate_encoding("fp16", _fp32_boundary(digits))
    src = tmp_path / "src"
    src.mkdir()
    save_model(encode_head(onnx.load(str(d / "head.onnx")), fp16), src / "head.onnx")
    save_model(decode_tail(onnx.load(str(d / "tail.onnx")), fp16), src / "tail.onnx")
    calib = build_int8_pair(
        src / "head.onnx", src / "tail.onnx", digits.calib, tmp_path / "h.onnx", tmp_path / "t.onnx", enc
    )
    assert (tmp_path / "h.onnx").read_bytes() == (first / "head.int8.onnx").read_bytes()
    assert (tmp_path / "t.onnx").read_bytes() == (first / "tail.int8.onnx").read_bytes()
    assert np.array_equal(calib, int8_pair.calib)
    assert sorted(p.name for p in src.iterdir()) == ["head.onnx", "tail.onnx"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.onnx", "src", "t.onnx"]


@pytest.mark.e2e
def test_quantize_qdq_same_bytes_in_a_fresh_process(digits: Digits, tmp_path: Path) -> None:
    """Another interpreter with another hash seed (set / dict order) writes the same bytes."""
    d = digits.dir
    np.save(tmp_path / "calib.npy", digits.calib)
    quantize_qdq(d / "head.onnx", tmp_path / "a.onnx", {"input": digits.calib})
    script = textwrap.dedent(
        f"""
        import numpy as np
        from pathlib import Path
        from isplit_export.exporting.quantize import quantize_qdq
        quantize_qdq(Path({str(d / "head.onnx")!r}), Path({str(tmp_path / "b.onnx")!r}),
                     {{"input": np.load({str(tmp_path / "calib.npy")!r})}})
        """
    )
    root = str(Path(isplit_export.__file__).resolve().parents[1])
    env = {
        **os.environ,
        "PYTHONHASHSEED": "12345",
        "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
    }
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=120)
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


def test_quantize_qdq_refuses_bad_calibration(digits: Digits, tmp_path: Path) -> None:
    d = digits.dir
    x = np.asarray(digits.calib)
    with pytest.raises(BadInputError, match="model inputs"):
        quantize_qdq(d / "head.onnx", tmp_path / "q.onnx", {"images": x})
    with pytest.raises(BadInputError, match="NaN"):
        quantize_qdq(d / "head.onnx", tmp_path / "q.onnx", {"input": np.full_like(x, np.nan)})
    with pytest.raises(BadInputError, match="no samples"):
        quantize_qdq(d / "head.onnx", tmp_path / "q.onnx", {"input": x[:0]})
    with pytest.raises(BadInputError, match="must be float"):
        quantize_qdq(d / "head.onnx", tmp_path / "q.onnx", {"input": x.astype(np.int64)})
    with pytest.raises(BadInputError, match="cannot read"):
        quantize_qdq(tmp_path / "missing.onnx", tmp_path / "q.onnx", {"input": x})
    assert not (tmp_path / "q.onnx").exists()


def _float_nodes(model: onnx.ModelProto) -> dict[str, bool]:
    """For each Conv/Gemm: True when it is float (weight a plain initializer, input not dequantized)."""
    inits = {t.name for t in model.graph.initializer}
    codec = ("boundary_encode", "boundary_decode")  # the tail's input DQ is the boundary encoding
    producer = {o: n.op_type for n in model.graph.node if n.name not in codec for o in n.output}
    result = {}
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            is_float = node.input[1] in inits and producer.get(node.input[0]) != "DequantizeLinear"
            quantized = producer.get(node.input[1]) == "DequantizeLinear" == producer.get(node.input[0])
            assert is_float != quantized, node.name  # all or nothing
            result[node.name] = is_float
    return result


def test_float_stem_stays_float(digits: Digits, int8_pair: Int8Pair, tmp_path: Path) -> None:
    """Convs working at stride < float_stride keep float weights and inputs; the rest is int8."""
    d = digits.dir
    for which in ("head", "tail"):  # default: the digits "stem" is the whole CNN, so all int8
        assert not any(_float_nodes(onnx.load(str(int8_pair.dir / f"{which}.int8.onnx"))).values())
    enc = calibrate_encoding("int8", _fp32_boundary(digits))
    kinds = {}
    for stride in (4, 2):  # 8x8 input: head convs work at 8x8 (stride 1), the tail conv at 4x4 (stride 2)
        out = tmp_path / str(stride)
        out.mkdir()
        build_int8_pair(
            d / "head.onnx",
            d / "tail.onnx",
            digits.calib,
            out / "h.onnx",
            out / "t.onnx",
            enc,
            float_stride=stride,
            max_float_share=1.0,
        )
        head, tail = onnx.load(str(out / "h.onnx")), onnx.load(str(out / "t.onnx"))
        for model in (head, tail):
            onnx.checker.check_model(model, full_check=True)
            for name, zp in _zero_point_arrays(model).items():
                assert name in ("boundary_encode", "boundary_decode") or (
                    zp.dtype == np.int8 and not zp.any()
                )
        kinds[stride] = (_float_nodes(head), _float_nodes(tail))
        got = _pair_logits(out / "h.onnx", out / "t.onnx", digits.x)
        full = run_session(make_session(d / "full.onnx"), {"input": digits.x})[0]
        assert float((got.argmax(1) == full.argmax(1)).mean()) >= 0.97
    head4, tail4 = kinds[4]
    assert len(head4) == 2 and all(head4.values())
    assert sorted(tail4.values()) == [False, True]  # the conv float, the Gemm int8
    assert not next(v for k, v in tail4.items() if "Gemm" in k)
    head2, tail2 = kinds[2]
    assert all(head2.values()) and not any(tail2.values())
    for bad in ({"float_stride": 0}, {"max_float_share": 1.5}):
        with pytest.raises(BadInputError, match=next(iter(bad))):
            build_int8_pair(
                d / "head.onnx",
                d / "tail.onnx",
                digits.calib,
                tmp_path / "h.onnx",
                tmp_path / "t.onnx",
                enc,
                **bad,
            )


def test_quantize_qdq_keeps_named_nodes_float(digits: Digits, tmp_path: Path) -> None:
    d = digits.dir
    names = [n.name for n in onnx.load(str(d / "head.onnx")).graph.node if n.op_type == "Conv"]
    assert len(names) == 2
    kept = quantize_qdq(d / "head.onnx", tmp_path / "q.onnx", {"input": digits.calib}, keep_float=[names[1]])
    assert kept == [names[1]]
    assert _float_nodes(onnx.load(str(tmp_path / "q.onnx"))) == {names[0]: False, names[1]: True}
    kept = quantize_qdq(d / "head.onnx", tmp_path / "q.onnx", {"input": digits.calib}, keep_float_above=63)
    # every node working at 8x8 = 64 positions: both convs (the second one with stride 2) and the ReLU between
    ops = {n.name: n.op_type for n in onnx.load(str(d / "head.onnx")).graph.node}
    assert [ops[k] for k in kept] == ["Conv", "Relu", "Conv"] and set(names) <= set(kept)
    assert _float_nodes(onnx.load(str(tmp_path / "q.onnx"))) == {names[0]: True, names[1]: True}
    assert (
        quantize_qdq(d / "head.onnx", tmp_path / "q.onnx", {"input": digits.calib}, keep_float_above=64) == []
    )
    with pytest.raises(BadInputError, match="no quantized node named nope"):
        quantize_qdq(d / "head.onnx", tmp_path / "q.onnx", {"input": digits.calib}, keep_float=["nope"])


@pytest.mark.parametrize(
    ("layer", "shape"),
    [
        (lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2), (32, 4, 9, 9)),
        (lambda: nn.Conv2d(4, 6, 3, padding=2, dilation=2), (32, 4, 9, 9)),
        (lambda: nn.Linear(20, 7), (32, 20)),
    ],
    ids=["grouped-strided-conv", "dilated-conv", "linear"],
)
def test_bias_correction_removes_the_mean_error(
    layer: Callable[[], nn.Module], shape: tuple[int, ...], tmp_path: Path
) -> None:
    """One layer on ReLU6-like inputs: with bias correction the int8 output has exactly the fp32 mean."""
    torch.manual_seed(0)
    module = layer()
    x = torch.rand(*shape) * 6
    _export(module, x[:2], ("x", "y"), tmp_path / "m.onnx")
    xn = x.numpy()
    ref = run_session(make_session(tmp_path / "m.onnx"), {"x": xn})[0]
    axes = tuple(a for a in range(ref.ndim) if a != 1)
    errors = {}
    for bc in (False, True):
        # outputs left float: the bias corrects the layer's own int8 error, not the rounding of its output
        quantize_qdq(
            tmp_path / "m.onnx",
            tmp_path / f"q{bc}.onnx",
            {"x": xn},
            bias_correction=bc,
            float_outputs=("Conv", "Gemm"),
        )
        got = run_session(make_session(tmp_path / f"q{bc}.onnx"), {"x": xn})[0]
        errors[bc] = (np.abs((got - ref).mean(axis=axes)).max(), np.sqrt(((got - ref) ** 2).mean()))
    scale = np.abs(ref).max()
    assert errors[False][0] > 1e-3 * scale  # int8 rounding alone leaves a mean error ...
    assert errors[True][0] < 1e-5 * scale  # ... which the corrected bias removes
    assert errors[True][1] < errors[False][1]
    q = onnx.load(str(tmp_path / "qTrue.onnx"))
    bias = next(t for t in q.graph.initializer if t.data_type == TensorProto.FLOAT and len(t.dims) == 1)
    assert bias.dims[0] == ref.shape[1]  # still a float32 bias
