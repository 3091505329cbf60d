"""INT8 by explicit quantization: QDQ ONNX models from onnxruntime static quantization.

One file serves both runtimes: TensorRT's explicit-quantization path (implicit INT8 calibrators are
deprecated since TensorRT 10.1) on the device, and onnxruntime's integer kernels on a CPU, where it is
also verified. The form is what TensorRT's ONNX parser takes and what onnxruntime fuses:

- **weights are int8 initializers** behind a lone ``DequantizeLinear`` (``AddQDQPairToWeight=False``),
  symmetric, per output channel (Conv axis 0, Gemm with ``transB`` axis 0, MatMul axis 1): a quarter of
  the fp32 bytes, and no QuantizeLinear left to run on constants;
- **activations are int8 with zero point 0** (``ActivationSymmetric``), the only activation Q/DQ
  TensorRT accepts; onnxruntime turns them into uint8 with zero point 128 for its x86 kernels;
- Q/DQ go on the inputs *and outputs* of every op in :data:`QUANTIZED_OP_TYPES` (convolutions, Gemm,
  Add, pooling, ReLU/Clip, reshapes): onnxruntime only runs an op in int8 (QLinearConv, QLinearAdd,
  QGemm, ...) when both sides are quantized, and TensorRT fuses the same pattern. ReLU/Clip stay in the
  graph (with symmetric activations they cannot be folded into the QuantizeLinear) and run in float
  between a DQ and a Q in onnxruntime, fused into the conv by TensorRT;
- one Q/DQ pair per consumer of a shared tensor, each with its own scale/zero-point initializers
  (``DedicatedQDQPair`` + :func:`_separate_quant_params`): without that, onnxruntime merges the pairs of a
  residual block's input back into one QuantizeLinear with several consumers and runs every op reading
  it in float (20 of resnet50's 53 convolutions; the head was then 1.3x faster than fp32 instead of 2.5x);
- biases stay float32 (``QuantizeBias=False``): TensorRT's ``DequantizeLinear`` takes int8 only, not
  the int32 biases onnxruntime would write by default (onnxruntime quantizes them itself at load time);
- the logits are quantized too (:data:`FLOAT_OUTPUT_OP_TYPES` is empty): a float-output Gemm is not
  fused by onnxruntime, which made a Gemm-only tail 2x *slower* than fp32; on ``efficientnet_lite0``
  the int8 logits cost nothing measurable (cosine 0.9913 against 0.9917 with float logits, same
  agreement).

Two measures on top of plain MinMax calibration, both found on the pretrained ``efficientnet_lite0``
(ReLU6, BN folded into the convs, depthwise convs), and both still needed with int8 weights:

- **Bias correction** (Nagel et al., "Data-Free Quantization", 2019, empirical variant): int8 weight
  rounding on small kernels (depthwise 3x3 / 5x5 with BN folded in) shifts each output channel's
  *mean* by ``(W_q - W) . E[x]``, and the post-ReLU6 inputs have large means, so the shifts are
  systematic and add up over the depth. After quantization, one fp32 pass over the calibration data
  collects the per-channel, per-kernel-tap means of every quantized layer's input ``x`` and of its int8
  rounding ``Q(x)``; each bias is then lowered by ``E[conv(W_q, Q(x))] - E[conv(W, x)]``, that layer's
  own expected output error (zero padding included), with ``W_q`` read from the int8 initializer and
  ``W`` from the fp32 model. The bias is still a float initializer, so TensorRT uses it as is. Done for
  Conv and Gemm; MatMul (no bias), ConvTranspose and ``auto_pad`` convs are left uncorrected.
- **A float stem** (:func:`build_int8_pair`, ``float_stride``, ``max_float_share``): the nodes working
  at stride < 4 of the input image (the high-resolution stem: its convolutions and the ReLU/Clip and
  pooling between them) stay float, without Q/DQ, when its convolutions are at most a quarter of the
  multiply-adds (a small CNN on small images, whose "stem" is the whole network, is quantized
  throughout). Their quantization noise is amplified by everything after them: the first depthwise
  conv of ``efficientnet_lite0`` works on the 112x112 ReLU6 map with BN-folded weights up to 17.7, so a
  0.047 activation step is a large pre-activation error. This trades TensorRT speed for accuracy:
  those layers (about 11 % of ``efficientnet_lite0``'s multiply-adds, 3 % of resnet50's, but the
  largest activation maps) run in TensorRT's fp16/fp32 fallback, with a reformat at the int8
  boundary. ``float_stride=1`` quantizes every node.

Measured on the three default ``efficientnet_lite0`` splits and the 19 default images (the int8 pair
against the fp32 model; worst split): top-1 agreement 0.895, cosine 0.9913, max_abs_rel 0.043. Without
the float stem 0.79 / 0.904; without bias correction 0.79 / 0.972; without both 0.79 / 0.828. (The
earlier fp32-weights form, Q/DQ on the weighted ops' inputs only, gave 0.84 / 0.986.) The images that
still flip are near-ties: at this error level agreement on 19 images moves in steps of 0.05.

Speed (onnxruntime CPU, batch 1, 1 thread, interleaved medians, ``benchmarks/bench_latency.py`` on this
AVX512-VNNI machine, shared and heavily loaded, so absolute times are inflated): resnet50 (random
weights) heads 2.3-2.8x and tails 1.7-3.0x faster than fp32, ``efficientnet_lite0`` heads 1.24-1.31x and
tails 1.6-2.4x (its depthwise convolutions and the float ReLU6 clips gain little from int8, and its
float stem stays fp32); files 0.25-0.27x the fp32 size.

Not checked here against a real TensorRT parser (no GPU): the checks are the ONNX checker, onnxruntime
CPU runs, and the structural tests (int8 weight initializers, zero point 0, per-channel axis 0, float
bias, float stem). int8 weight initializers behind DequantizeLinear are the form NVIDIA's ModelOpt
writes for TensorRT 10; TensorRT 8.5 (``jetson-xavier-nx``, JetPack 5) is older than that form and
may refuse it: untested.

Calibration is MinMax (deterministic), one sample per run; measured on ``efficientnet_lite0``,
Percentile and ``CalibMovingAverage`` did no better once the biases are corrected, and Entropy gave
the same result as MinMax. Everything onnxruntime writes (the shape-inferred copy, the augmented
calibration model) stays in a private temporary directory; the result is canonicalized and written
once, so the same inputs give the same bytes.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from isplit_export.errors import BadInputError, TechnicalError
from isplit_export.exporting.encoding import (
    BoundaryEncoding,
    decode_tail,
    encode_head,
    strip_head_encoding,
    strip_tail_decoding,
)
from isplit_export.exporting.onnx_utils import OPSET, canonicalize, make_session, run_session, save_model

WEIGHTED_OP_TYPES = ("Conv", "ConvTranspose", "Gemm", "MatMul")
"""Operators with weights: int8 weight initializers behind DequantizeLinear, per output channel."""

QUANTIZED_OP_TYPES = (
    *WEIGHTED_OP_TYPES, "Add", "Mul", "Concat", "Relu", "Clip", "MaxPool", "AveragePool", "GlobalAveragePool",
    "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose",
)  # fmt: skip
"""Operators whose inputs and outputs get Q/DQ: what onnxruntime fuses into integer kernels (QLinearConv,
QLinearAdd, ...) and TensorRT into int8 layers. Sigmoid, Softmax and friends stay float."""

FLOAT_OUTPUT_OP_TYPES: tuple[str, ...] = ()
"""Their outputs stay float (no Q/DQ after them): the logits of a classifier are not rounded to int8."""

FLOAT_STRIDE = 4
""":func:`build_int8_pair` keeps float the nodes working at a stride below this (the stem) ..."""

MAX_FLOAT_SHARE = 0.25
"""... when their convolutions are at most this share of the pair's multiply-adds (else everything is quantized)."""

_SPATIAL_OP_TYPES = ("Conv", "ConvTranspose")
_ORT_METADATA_KEYS = ("onnx.infer", "onnx.quant.pre_process")


def quantize_qdq(
    model_path: Path,
    out_path: Path,
    calibration: Mapping[str, np.ndarray],
    *,
    per_channel: bool = True,
    op_types: Sequence[str] = QUANTIZED_OP_TYPES,
    float_outputs: Sequence[str] = FLOAT_OUTPUT_OP_TYPES,
    keep_float: Sequence[str] = (),
    keep_float_above: int | None = None,
    bias_correction: bool = True,
) -> list[str]:
    """Write the symmetric INT8 QDQ version of ``model_path`` to ``out_path``.

    ``calibration`` maps every graph input name to float samples stacked on axis 0; the samples are
    fed one at a time. Runs onnxruntime's ``quant_pre_process`` (ONNX shape inference and basic graph
    optimizations, no symbolic shape inference) first. The opset is kept (17 for this project); the
    result passes the ONNX checker (full check) and runs in onnxruntime CPU.

    Nodes stay float (float weights and inputs; a quantized consumer still quantizes their output) when named in ``keep_float`` (names
    of ``op_types`` nodes, as in the model) or, with ``keep_float_above``, when they work at more than
    that many spatial positions (a convolution: output positions times the strides, i.e. its input size
    without padding, measured on the first calibration sample; any other node: the largest spatial size
    of its inputs and outputs). ``float_outputs`` names op types whose outputs are not quantized.
    ``bias_correction`` corrects the float biases of the quantized Conv/Gemm nodes for the mean error
    of their int8 rounding (see the module docstring). Returns the names of the nodes kept float, sorted.
    """
    try:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as exc:  # pragma: no cover - onnxruntime always ships it
        raise TechnicalError(f"onnxruntime.quantization is not available: {exc}") from exc

    model_path, out_path = Path(model_path), Path(out_path)
    original = _load(model_path)
    feeds = _check_calibration(original, calibration)
    count = len(next(iter(feeds.values())))
    if keep_float_above is not None and keep_float_above < 0:
        raise BadInputError(f"keep_float_above must be >= 0, got {keep_float_above}")

    class _Reader(CalibrationDataReader):
        """Feeds the calibration samples one at a time (batch 1), in order."""

        def __init__(self) -> None:
            self._it: Iterator[dict[str, np.ndarray]] = (
                {k: v[i : i + 1] for k, v in feeds.items()} for i in range(count)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    extra_options = {
        "ActivationSymmetric": True,
        "WeightSymmetric": True,
        "QuantizeBias": False,
        "AddQDQPairToWeight": False,
        "OpTypesToExcludeOutputQuantization": list(float_outputs),
        "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
        "DedicatedQDQPair": True,
    }
    with tempfile.TemporaryDirectory(prefix="isplit-quant-") as tmp:
        work = Path(tmp)
        src = work / "model.onnx"  # onnxruntime writes "<stem>-inferred.onnx" next to its input
        shutil.copyfile(model_path, src)
        pre = work / "preprocessed.onnx"
        qdq = work / "qdq.onnx"
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            if not pre.exists():
                raise TechnicalError(
                    f"onnxruntime quantization pre-processing wrote nothing for {model_path}"
                )
            reference = onnx.load(str(pre))
        except TechnicalError:
            raise
        except Exception as exc:
            raise TechnicalError(
                f"onnxruntime quantization pre-processing of {model_path} failed: {exc}"
            ) from exc
        excluded = _nodes_kept_float(reference, feeds, op_types, keep_float, keep_float_above)
        try:
            quantize_static(
                str(pre),
                str(qdq),
                _Reader(),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(op_types),
                per_channel=per_channel,
                reduce_range=False,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                nodes_to_exclude=excluded,
                extra_options=extra_options,
            )
            model = onnx.load(str(qdq))
        except Exception as exc:
            raise TechnicalError(f"onnxruntime static quantization of {model_path} failed: {exc}") from exc
    _float_inputs(model, excluded)
    if bias_correction:
        _correct_biases(model, reference, feeds)
    _separate_quant_params(model)
    _tidy(model, original)
    try:
        save_model(model, out_path)
    except onnx.checker.ValidationError as exc:
        raise TechnicalError(f"the quantized model {out_path.name} fails the ONNX checker: {exc}") from exc
    return excluded


def build_int8_pair(
    head_fp32: Path,
    tail_fp32: Path,
    calib_inputs: np.ndarray,
    out_head: Path,
    out_tail: Path,
    enc: BoundaryEncoding,
    *,
    float_stride: int = FLOAT_STRIDE,
    max_float_share: float = MAX_FLOAT_SHARE,
    bias_correction: bool = True,
) -> np.ndarray:
    """Quantize a head/tail pair and give it the same ``boundary`` interface as the fp32 pair.

    The inputs may be the fp32 pair or a pair already carrying a boundary encoding (it is stripped
    first). The head is calibrated on ``calib_inputs`` (images, stacked on axis 0); the tail on the
    float32 boundary tensors the *quantized* head produces (what the tail will really see). ``enc`` is
    then applied with :func:`encode_head` / :func:`decode_tail`. Returns those boundary tensors (float32,
    before encoding), which the bundle stores as the tail's calibration material.

    The float stem: the nodes, in the head or the tail, working at a stride below ``float_stride``
    relative to the input image (more than ``H*W / float_stride**2`` positions) stay float, provided
    their convolutions are at most ``max_float_share`` of the pair's multiply-adds (the high-resolution stem of an
    ImageNet-style CNN: 11 % in ``efficientnet_lite0``); when they are more (a small CNN on small
    images, where they are most of the network) everything is quantized. See the module docstring for
    why and for the cost on TensorRT. ``float_stride=1`` quantizes every node; inputs without spatial
    axes (fewer than 3 dims) have no stem. ``bias_correction`` is passed to :func:`quantize_qdq`.
    """
    if float_stride < 1:
        raise BadInputError(f"float_stride must be >= 1, got {float_stride}")
    if not 0.0 <= max_float_share <= 1.0:
        raise BadInputError(f"max_float_share must be in [0, 1], got {max_float_share}")
    head = strip_head_encoding(_load(head_fp32))
    tail = strip_tail_decoding(_load(tail_fp32))
    head_inputs, tail_inputs = _graph_inputs(head), _graph_inputs(tail)
    if len(head_inputs) != 1 or len(tail_inputs) != 1:
        raise BadInputError(f"head and tail must have one input each, got {head_inputs} and {tail_inputs}")
    x = np.asarray(calib_inputs, dtype=np.float32)
    keep_above = None
    if x.ndim >= 3 and float_stride > 1 and len(x):
        above = int(np.prod(x.shape[2:])) // float_stride**2
        if _stem_share(head, tail, {head_inputs[0]: x[:1]}, above) <= max_float_share:
            keep_above = above
    with tempfile.TemporaryDirectory(prefix="isplit-int8-") as tmp:
        work = Path(tmp)
        head_src, tail_src = work / "head.onnx", work / "tail.onnx"
        head_q, tail_q = work / "head.qdq.onnx", work / "tail.qdq.onnx"
        save_model(head, head_src)
        save_model(tail, tail_src)
        quantize_qdq(head_src, head_q, {head_inputs[0]: calib_inputs}, keep_float_above=keep_above,
                     bias_correction=bias_correction)  # fmt: skip
        session = make_session(head_q)
        boundary = np.concatenate(
            [run_session(session, {head_inputs[0]: x[i : i + 1]})[0] for i in range(len(x))], axis=0
        ).astype(np.float32, copy=False)
        quantize_qdq(tail_src, tail_q, {tail_inputs[0]: boundary}, keep_float_above=keep_above,
                     bias_correction=bias_correction)  # fmt: skip
        head_model = encode_head(onnx.load(str(head_q)), enc)
        tail_model = decode_tail(onnx.load(str(tail_q)), enc)
    save_model(head_model, Path(out_head))
    save_model(tail_model, Path(out_tail))
    return boundary


def _load(path: Path) -> onnx.ModelProto:
    try:
        return onnx.load(str(path))
    except Exception as exc:
        raise BadInputError(f"cannot read ONNX model {path}: {exc}") from exc


def _graph_inputs(model: onnx.ModelProto) -> list[str]:
    inits = {t.name for t in model.graph.initializer}
    return [vi.name for vi in model.graph.input if vi.name not in inits]


def _check_calibration(
    model: onnx.ModelProto, calibration: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Validated float32 calibration feeds: one entry per graph input, same sample count, finite."""
    names = _graph_inputs(model)
    if sorted(calibration) != sorted(names):
        raise BadInputError(
            f"calibration data must have exactly the model inputs {names}, got {sorted(calibration)}"
        )
    feeds: dict[str, np.ndarray] = {}
    counts = set()
    for name in names:
        arr = np.asarray(calibration[name])
        if not np.issubdtype(arr.dtype, np.floating):
            raise BadInputError(f"calibration data {name!r} must be float, got {arr.dtype}")
        if arr.ndim < 1 or len(arr) == 0:
            raise BadInputError(f"calibration data {name!r} has no samples (shape {arr.shape})")
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if not np.isfinite(arr).all():
            raise BadInputError(f"calibration data {name!r} contains NaN or infinity")
        feeds[name] = arr
        counts.add(len(arr))
    if len(counts) != 1:
        raise BadInputError(f"calibration inputs have different sample counts: {sorted(counts)}")
    return feeds


def _nodes_kept_float(
    model: onnx.ModelProto,
    feeds: Mapping[str, np.ndarray],
    op_types: Sequence[str],
    names: Sequence[str],
    above: int | None,
) -> list[str]:
    """Names of the ``op_types`` nodes to leave unquantized: ``names`` plus the convolutions working
    at more than ``above`` positions (see :func:`_weighted_nodes`)."""
    quantized = {n.name for n in model.graph.node if n.op_type in op_types and n.name}
    unknown = sorted(set(names) - quantized)
    if unknown:
        raise BadInputError(
            f"cannot keep float: no quantized node named {', '.join(unknown)} (operators: {', '.join(op_types)})"
        )
    keep = set(names)
    if above is not None:
        first = {k: v[:1] for k, v in feeds.items()}
        for name, positions in _node_positions(model, first).items():
            if name in quantized and positions > above:
                keep.add(name)
    return sorted(keep)


def _weighted_nodes(
    model: onnx.ModelProto, sample: Mapping[str, np.ndarray]
) -> list[tuple[onnx.NodeProto, int, int]]:
    """``(node, positions, multiply-adds)`` of every Conv/ConvTranspose/Gemm/MatMul with an initializer
    weight, from the output shapes of one fp32 run on ``sample`` (batch 1). ``positions`` is the
    resolution a convolution works at: its output positions times its strides (divided, for
    ConvTranspose), i.e. its input size without padding; 0 for Gemm/MatMul."""
    inits = {t.name: t for t in model.graph.initializer}
    nodes = [
        n
        for n in model.graph.node
        if n.op_type in WEIGHTED_OP_TYPES and len(n.input) > 1 and n.input[1] in inits
    ]
    if not nodes:
        return []
    outputs = [n.output[0] for n in nodes]
    shapes = [
        o.shape for o in run_session(make_session(_probe_model(model, outputs).SerializeToString()), sample)
    ]
    result = []
    for node, shape in zip(nodes, shapes, strict=True):
        weight = int(np.prod(inits[node.input[1]].dims))
        if node.op_type in _SPATIAL_OP_TYPES:
            out = int(np.prod(shape[2:]))
            stride = int(np.prod(_attr(node, "strides", [1])))
            positions = out * stride if node.op_type == "Conv" else out // stride
            macs = out * weight if node.op_type == "Conv" else positions * weight
        else:
            positions, macs = 0, int(np.prod(shape[:-1])) * weight
        result.append((node, positions, macs))
    return result


def _node_positions(model: onnx.ModelProto, sample: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Per named node, the resolution it works at: for a convolution its input size without padding (see
    :func:`_weighted_nodes`); for any other node the largest spatial size (the product of the axes after
    batch and channels) of its non-constant inputs and outputs, from ONNX shape inference; 0 when unknown."""
    inferred = onnx.shape_inference.infer_shapes(model)
    sizes: dict[str, int] = {}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if len(dims) >= 3 and all(d.HasField("dim_value") for d in dims[2:]):
            sizes[vi.name] = int(np.prod([d.dim_value for d in dims[2:]]))
    for name, value in sample.items():
        if value.ndim >= 3:
            sizes[name] = int(np.prod(value.shape[2:]))
    convs = {n.name: positions for n, positions, _ in _weighted_nodes(model, sample) if n.op_type in _SPATIAL_OP_TYPES}
    result = {}
    for node in model.graph.node:
        if node.name in convs:
            result[node.name] = convs[node.name]
        elif node.name:
            result[node.name] = max((sizes.get(t, 0) for t in [*node.input, *node.output] if t), default=0)
    return result


def _stem_share(
    head: onnx.ModelProto, tail: onnx.ModelProto, sample: Mapping[str, np.ndarray], above: int
) -> float:
    """The share of the pair's multiply-adds in convolutions working at more than ``above`` positions."""
    head_nodes = _weighted_nodes(head, sample)
    boundary = run_session(make_session(head.SerializeToString()), sample)[0]
    tail_nodes = _weighted_nodes(tail, {_graph_inputs(tail)[0]: boundary})
    total = stem = 0
    for node, positions, macs in head_nodes + tail_nodes:
        total += macs
        if node.op_type in _SPATIAL_OP_TYPES and positions > above:
            stem += macs
    return stem / total if total else 0.0


@dataclass(frozen=True)
class _BiasTarget:
    """A quantized Conv/Gemm whose float bias gets corrected (see :func:`_correct_biases`)."""

    node: onnx.NodeProto
    x: str  # its float input tensor, as named in the reference model
    act_scale: np.ndarray | None  # the input's per-tensor int8 scale; None: input not quantized
    weight: np.ndarray  # float weight: Conv [O, C/group, *kernel], Gemm [N, K]
    weight_q: np.ndarray  # the same after the model's int8 Q/DQ
    bias: onnx.TensorProto | None  # its 1-D bias initializer; None: it has none (one gets added)
    gain: float  # output change per unit of bias: 1 for Conv, alpha / beta for Gemm


def _correct_biases(
    model: onnx.ModelProto, reference: onnx.ModelProto, feeds: Mapping[str, np.ndarray]
) -> None:
    """Lower each quantized Conv/Gemm bias by the expected output error of its own int8 rounding.

    For a node ``y = conv(W, x) + b`` quantized to ``conv(W_q, Q(x)) + b``, the mean error of output
    channel ``o`` over the calibration data is ``E[conv(W_q, Q(x))]_o - E[conv(W, x)]_o``. A convolution
    is linear, so that only needs, per input channel and kernel tap, the mean of ``x`` (and of ``Q(x)``)
    over the samples and the output positions the tap reads, zero padding included. Those means come
    from one pass of the fp32 ``reference`` (the model onnxruntime quantized: same tensor names) over
    ``feeds``, one sample at a time. ``Q`` and ``W_q`` reproduce the model's own Q/DQ (round half to
    even, saturate to int8, zero point 0). Each correction uses its layer's fp32 input, so the
    corrections are independent of one another (no order, no iteration).
    """
    targets = _bias_targets(model, reference)
    if not targets:
        return
    inputs = set(_graph_inputs(reference))
    probes = sorted({t.x for t in targets} - inputs)
    session = make_session(_probe_model(reference, probes).SerializeToString()) if probes else None
    count = len(next(iter(feeds.values())))
    sums = [[np.zeros(0), np.zeros(0)] for _ in targets]  # per target: sum of E[x], sum of E[Q(x)]
    for i in range(count):
        sample = {k: v[i : i + 1] for k, v in feeds.items()}
        values = dict(sample)
        if session is not None:
            values.update(zip(probes, run_session(session, sample), strict=True))
        for target, acc in zip(targets, sums, strict=True):
            x = np.asarray(values[target.x], dtype=np.float32)
            xq = x if target.act_scale is None else _fake_quant(x, target.act_scale)
            for k, v in enumerate((x, xq)):
                means = _input_means(target, v)
                acc[k] = means if i == 0 else acc[k] + means
    for target, (m, mq) in zip(targets, sums, strict=True):
        error = _output_means(target, target.weight_q, mq / count) - _output_means(
            target, target.weight, m / count
        )
        shift = target.gain * error
        if target.bias is None:
            name = _unique_name(model, f"{target.node.name or target.node.output[0]}_bias")
            model.graph.initializer.append(numpy_helper.from_array((-shift).astype(np.float32), name))
            target.node.input.append(name)
        else:
            b = numpy_helper.to_array(target.bias).astype(np.float64)
            target.bias.CopyFrom(numpy_helper.from_array((b - shift).astype(np.float32), target.bias.name))


def _bias_targets(model: onnx.ModelProto, reference: onnx.ModelProto) -> list[_BiasTarget]:
    """The Conv/Gemm nodes with Q/DQ int8 weights whose bias can be corrected, in graph order."""
    inits = {t.name: t for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    known = {o for n in reference.graph.node for o in n.output} | set(_graph_inputs(reference))
    ref_inits = {t.name: t for t in reference.graph.initializer}
    ref_weight = {n.name: n.input[1] for n in reference.graph.node if n.name and len(n.input) > 1}
    targets = []
    for node in model.graph.node:
        if node.op_type == "Conv":
            if _attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", b""):
                continue
            gain = 1.0
        elif node.op_type == "Gemm":
            alpha, beta = float(_attr(node, "alpha", 1.0)), float(_attr(node, "beta", 1.0))
            if _attr(node, "transA", 0) or beta == 0.0:
                continue
            gain = alpha / beta
        else:
            continue
        wq = _dequantized_initializer(node.input[1], producer, inits)
        float_weight = ref_inits.get(ref_weight.get(node.name, ""))
        x, act_scale = _quantized_input(node.input[0], producer, inits)
        if wq is None or float_weight is None or x not in known:
            continue
        w = numpy_helper.to_array(float_weight).astype(np.float64)
        if w.shape != wq.shape:
            continue
        if node.op_type == "Gemm" and not _attr(node, "transB", 0):
            w, wq = w.T, wq.T
        bias = None
        if len(node.input) > 2 and node.input[2]:
            bias = inits.get(node.input[2])
            if bias is None or uses[bias.name] != 1 or tuple(bias.dims) != (w.shape[0],):
                continue
        targets.append(_BiasTarget(node, x, act_scale, w, wq, bias, gain))
    return targets


def _dequantized_initializer(
    name: str, producer: Mapping[str, onnx.NodeProto], inits: Mapping[str, onnx.TensorProto]
) -> np.ndarray | None:
    """``W_q`` (float64) when ``name`` is DequantizeLinear(int8 initializer, scale, zero point 0), else None."""
    dq = producer.get(name)
    if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits or dq.input[1] not in inits:
        return None
    q = numpy_helper.to_array(inits[dq.input[0]])
    zero = inits.get(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else None
    if q.dtype != np.int8 or (zero is not None and numpy_helper.to_array(zero).any()):
        return None
    scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float64)
    if scale.ndim:
        axis = int(_attr(dq, "axis", 1)) % q.ndim
        scale = scale.reshape([-1 if a == axis else 1 for a in range(q.ndim)])
    return q.astype(np.float64) * scale


def _quantized_input(
    name: str, producer: Mapping[str, onnx.NodeProto], inits: Mapping[str, onnx.TensorProto]
) -> tuple[str, np.ndarray | None]:
    """The float tensor feeding ``name`` and its per-tensor int8 scale; the scale is None without Q/DQ."""
    dq = producer.get(name)
    q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
    if q is None or q.op_type != "QuantizeLinear" or q.input[1] not in inits:
        return name, None
    scale = numpy_helper.to_array(inits[q.input[1]]).astype(np.float32)
    return (q.input[0], scale) if scale.ndim == 0 else (name, None)


def _fake_quant(x: np.ndarray, scale: np.ndarray, axis: int | None = None) -> np.ndarray:
    """ONNX QuantizeLinear then DequantizeLinear to int8 with zero point 0, in float32."""
    s = np.asarray(scale, dtype=np.float32)
    if axis is not None:
        s = s.reshape([-1 if a == axis % x.ndim else 1 for a in range(x.ndim)])
    q = np.clip(np.rint(x.astype(np.float32) / s), -128, 127)
    return (q * s).astype(np.float32)


def _input_means(target: _BiasTarget, x: np.ndarray) -> np.ndarray:
    """Gemm: the mean input row ``[K]``. Conv: per input channel and kernel tap, the mean over the
    batch and the output positions of the input that tap reads, zero padding included ``[C, taps]``."""
    if target.node.op_type == "Gemm":
        return np.asarray(x.reshape(-1, x.shape[-1]).mean(axis=0, dtype=np.float64))
    node, kernel = target.node, target.weight.shape[2:]
    nd = len(kernel)
    strides = _attr(node, "strides", [1] * nd)
    dilations = _attr(node, "dilations", [1] * nd)
    pads = _attr(node, "pads", [0] * (2 * nd))
    padded = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[i + nd]) for i in range(nd)])
    out = [(padded.shape[2 + i] - dilations[i] * (kernel[i] - 1) - 1) // strides[i] + 1 for i in range(nd)]
    axes = (0, *range(2, 2 + nd))
    means = np.empty((x.shape[1], int(np.prod(kernel))), dtype=np.float64)
    for t, tap in enumerate(np.ndindex(*kernel)):
        window = tuple(
            slice(tap[i] * dilations[i], tap[i] * dilations[i] + strides[i] * (out[i] - 1) + 1, strides[i])
            for i in range(nd)
        )
        means[:, t] = padded[(slice(None), slice(None), *window)].mean(axis=axes, dtype=np.float64)
    return means


def _output_means(target: _BiasTarget, weight: np.ndarray, means: np.ndarray) -> np.ndarray:
    """Per output channel, the mean of ``conv(weight, x)`` (Gemm: ``x @ weight.T``) from :func:`_input_means`."""
    if target.node.op_type == "Gemm":
        return np.asarray(weight @ means)
    group = int(_attr(target.node, "group", 1))
    out_ch, in_per_group = weight.shape[:2]
    w = weight.reshape(group, out_ch // group, in_per_group, -1)
    m = means.reshape(group, in_per_group, -1)
    return np.einsum("goct,gct->go", w, m).reshape(out_ch)


def _probe_model(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose outputs are the tensors ``names``."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in [*model.graph.value_info, *model.graph.output]}
    del probe.graph.output[:]
    for name in names:
        probe.graph.output.append(
            onnx.helper.make_tensor_value_info(name, types.get(name) or onnx.TensorProto.FLOAT, None)
        )
    return probe


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _unique_name(model: onnx.ModelProto, base: str) -> str:
    used = {t.name for t in model.graph.initializer} | {
        x for n in model.graph.node for x in [*n.input, *n.output]
    }
    used |= {vi.name for vi in [*model.graph.input, *model.graph.output]}
    name, k = base, 0
    while name in used:
        k += 1
        name = f"{base}_{k}"
    return name


def _float_inputs(model: onnx.ModelProto, names: Sequence[str]) -> None:
    """Feed the nodes kept float their inputs in float: bypass the Q/DQ pair onnxruntime puts after a
    quantized producer (a Relu before a float conv) when that pair feeds only the float node."""
    keep = set(names)
    if not keep:
        return
    producer = {o: n for n in model.graph.node for o in n.output}
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    inits = {t.name for t in model.graph.initializer}
    dropped: set[str] = set()  # outputs of the bypassed Q/DQ nodes
    for node in model.graph.node:
        if node.name not in keep:
            continue
        for i, name in enumerate(node.input):
            dq = producer.get(name)
            if dq is None or dq.op_type != "DequantizeLinear" or uses[name] != 1:
                continue
            q = producer.get(dq.input[0])
            if q is None or q.op_type != "QuantizeLinear" or q.input[0] in inits:
                continue
            node.input[i] = q.input[0]
            dropped.add(name)
            if uses[q.output[0]] == 1:
                dropped.add(q.output[0])
    nodes = [n for n in model.graph.node if n.output[0] not in dropped]
    values = [v for v in model.graph.value_info if v.name not in dropped]
    del model.graph.value_info[:]
    model.graph.value_info.extend(values)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {x for n in model.graph.node for x in n.input}
    initializers = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(initializers)


def _separate_quant_params(model: onnx.ModelProto) -> None:
    """Give every activation Q/DQ pair of a shared tensor its own scale and zero-point initializers.

    ``DedicatedQDQPair`` writes one QuantizeLinear -> DequantizeLinear pair per consumer of a tensor
    (a residual block's input feeds two convolutions or a conv and an Add), but with the same
    scale/zero-point initializers. onnxruntime's common-subexpression elimination then merges the
    identical QuantizeLinear nodes back into one with several consumers, and its x86 int8 kernels
    never see that tensor: they need uint8 activations, and the int8 -> uint8 rewrite
    (``QDQS8ToU8Transformer``) skips a QuantizeLinear with more than one consumer, so every op reading
    a shared tensor ran in float (20 of the 53 convolutions of resnet50). Copies of the initializers,
    named ``<name>_<k>``, keep the pairs apart; the values and so the model's semantics are unchanged.
    """
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    inits = {t.name: t for t in model.graph.initializer}
    used = set(inits) | {x for n in model.graph.node for x in [*n.input, *n.output]}
    seen: set[tuple[str, ...]] = set()
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or len(node.input) < 3 or node.input[1] not in inits:
            continue
        params = tuple(node.input[1:3])
        users = consumers.get(node.output[0], [])
        if params not in seen or any(u.op_type != "DequantizeLinear" or tuple(u.input[1:3]) != params for u in users):
            seen.add(params)
            continue
        copies = []
        for name in params:
            k = 1
            while f"{name}_{k}" in used:
                k += 1
            copy = onnx.TensorProto()
            copy.CopyFrom(inits[name])
            copy.name = f"{name}_{k}"
            used.add(copy.name)
            model.graph.initializer.append(copy)
            copies.append(copy.name)
        for n in (node, *users):
            n.input[1], n.input[2] = copies


def _tidy(model: onnx.ModelProto, original: onnx.ModelProto) -> None:
    """Make the quantizer's output canonical: original opset, no unused domains, no ORT stamps."""
    version = {o.domain: o.version for o in original.opset_import}.get("", 0)
    got = {o.domain: o.version for o in model.opset_import}.get("", 0)
    if got != version:
        raise TechnicalError(f"onnxruntime quantization changed the opset from {version} to {got}")
    if version != OPSET:
        logging.getLogger(__name__).warning(
            "quantized model uses opset %d, not the pinned %d", version, OPSET
        )
    used = {n.domain for n in model.graph.node} | {""}
    keep = [o for o in model.opset_import if o.domain in used or o.domain == "ai.onnx"]
    del model.opset_import[:]
    model.opset_import.extend(keep)
    props = [p for p in model.metadata_props if p.key not in _ORT_METADATA_KEYS]
    del model.metadata_props[:]
    model.metadata_props.extend(props)
    canonicalize(model)
