"""INT8 by explicit quantization: QDQ ONNX head/tail pairs from onnxruntime static quantization.

One file serves both runtimes: TensorRT's explicit-quantization path (its implicit INT8 calibrators
are deprecated) on the device, and onnxruntime's integer kernels on a CPU, where it is verified.
Symmetric int8 activations (zero point 0, the only Q/DQ TensorRT takes), int8 per-channel weight
initializers behind a lone DequantizeLinear, float biases, Q/DQ around every op in
:data:`QUANTIZED_OP_TYPES` with one pair per consumer, MinMax calibration one sample at a time. On
top: bias correction (:mod:`~isplit_export.exporting.bias_correction`) and a float high-resolution
stem (:mod:`~isplit_export.exporting.float_stem`), both needed for accuracy on
``efficientnet_lite0``. Why each choice, and the measured accuracy and speed: docs/int8.md.
The same inputs give the same bytes (everything onnxruntime writes stays in a private temporary
directory; the result is canonicalized and written once).
"""

from __future__ import annotations

import functools
import inspect
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from isplit_export.errors import BadInputError, TechnicalError
from isplit_export.exporting.bias_correction import correct_biases
from isplit_export.exporting.encoding import (
    BoundaryEncoding,
    decode_tail,
    encode_head,
    strip_head_encoding,
    strip_tail_decoding,
)
from isplit_export.exporting.float_stem import nodes_kept_float, stem_share
from isplit_export.exporting.onnx_graph import canonicalize, graph_inputs, skeleton
from isplit_export.exporting.onnx_utils import (
    make_session,
    run_session,
    save_model,
    write_external,
    write_model,
)
from isplit_export.exporting.qdq_graph import WEIGHTED_OP_TYPES, float_inputs, separate_quant_params, tidy

__all__ = [
    "FLOAT_OUTPUT_OP_TYPES",
    "FLOAT_STRIDE",
    "MAX_FLOAT_SHARE",
    "QUANTIZED_OP_TYPES",
    "WEIGHTED_OP_TYPES",
    "build_int8_pair",
    "pre_process",
    "quantize_qdq",
]

QUANTIZED_OP_TYPES = (
    *WEIGHTED_OP_TYPES,
    "Add",
    "Mul",
    "Concat",
    "Relu",
    "Clip",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "Flatten",
    "Reshape",
    "Squeeze",
    "Unsqueeze",
    "Transpose",
)
"""Operators whose inputs and outputs get Q/DQ: what onnxruntime fuses into integer kernels (QLinearConv,
QLinearAdd, ...) and TensorRT into int8 layers. Sigmoid, Softmax and friends stay float."""

FLOAT_OUTPUT_OP_TYPES: tuple[str, ...] = ()
"""Op types whose outputs stay float (no Q/DQ after them). Empty: every output is quantized, the
logits included, because onnxruntime fuses no Gemm with a float output (a Gemm-only tail ran 2x
*slower* than fp32), while int8 logits cost ``efficientnet_lite0`` nothing measurable (docs/int8.md)."""

FLOAT_STRIDE = 4
""":func:`build_int8_pair` keeps float the nodes working at a stride below this (the stem) ..."""

MAX_FLOAT_SHARE = 0.25
"""... when their convolutions are at most this share of the pair's multiply-adds (else everything is quantized)."""


MIN_OPSET = 11
"""The oldest opset the quantization takes (onnxruntime converts older ones first; the tool exports 17)."""


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
    fed one at a time. Runs onnxruntime's ``quant_pre_process`` steps first (:func:`pre_process`: ONNX
    shape inference and basic graph optimizations, no symbolic shape inference). The opset is kept (17 for this project); the
    result passes the ONNX checker (full check) and runs in onnxruntime CPU.

    Nodes stay float (float weights and inputs; a quantized consumer still quantizes their output)
    when named in ``keep_float`` (names of ``op_types`` nodes, as in the model) or, with ``keep_float_above``, when they work at more than
    that many spatial positions (a convolution: output positions times the strides, i.e. its input size
    without padding, measured on the first calibration sample; any other node: the largest spatial size
    of its inputs and outputs). ``float_outputs`` names op types whose outputs are not quantized.
    ``bias_correction`` corrects the float biases of the quantized Conv/Gemm nodes for the mean error
    of their int8 rounding (:mod:`~isplit_export.exporting.bias_correction`). Returns the names of the
    nodes kept float, sorted.
    """
    model, excluded = _quantized(
        Path(model_path),
        calibration,
        per_channel=per_channel,
        op_types=op_types,
        float_outputs=float_outputs,
        keep_float=keep_float,
        keep_float_above=keep_float_above,
        bias_correction=bias_correction,
    )
    _save_checked(model, Path(out_path))
    return excluded


def _quantized(
    model_path: Path,
    calibration: Mapping[str, np.ndarray],
    *,
    per_channel: bool,
    op_types: Sequence[str],
    float_outputs: Sequence[str],
    keep_float: Sequence[str],
    keep_float_above: int | None,
    bias_correction: bool,
) -> tuple[onnx.ModelProto, list[str]]:
    """:func:`quantize_qdq`'s model, not written yet, and the names of the nodes kept float."""
    original = skeleton(_load(model_path))  # its interface and opset are used: no weights kept
    feeds = _check_calibration(original, calibration)
    opset = next((o.version for o in original.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        raise BadInputError(
            f"{model_path.name} has opset {opset}: INT8 quantization needs opset {MIN_OPSET} or newer"
        )
    if keep_float_above is not None and keep_float_above < 0:
        raise BadInputError(f"keep_float_above must be >= 0, got {keep_float_above}")

    with tempfile.TemporaryDirectory(prefix="isplit-quant-") as tmp:
        work = Path(tmp)
        pre = work / "preprocessed.onnx"
        qdq = work / "qdq.onnx"
        try:
            reference = pre_process(model_path, work)
            write_external(reference, pre)
        except Exception as exc:
            raise TechnicalError(
                f"onnxruntime quantization pre-processing of {model_path} failed: {exc}"
            ) from exc
        excluded = nodes_kept_float(reference, feeds, op_types, keep_float, keep_float_above)
        del reference  # reloaded for the bias correction: not held beside onnxruntime's copies
        try:
            static_qdq(
                pre,
                qdq,
                feeds,
                op_types=op_types,
                per_channel=per_channel,
                nodes_to_exclude=excluded,
                float_outputs=float_outputs,
            )
            model = onnx.load(str(qdq))
            for init in model.graph.initializer:  # loaded from external data: the bytes stay as inline
                if init.data_location == onnx.TensorProto.DEFAULT:
                    init.ClearField("data_location")
        except Exception as exc:
            raise TechnicalError(f"onnxruntime static quantization of {model_path} failed: {exc}") from exc
        float_inputs(model, excluded)
        if bias_correction:
            correct_biases(model, onnx.load(str(pre)), feeds)  # the float model, dropped once used
    separate_quant_params(model)
    tidy(model, original)
    return model, excluded


def static_qdq(
    model_path: Path,
    out_path: Path,
    feeds: Mapping[str, np.ndarray],
    *,
    op_types: Sequence[str],
    per_channel: bool,
    nodes_to_exclude: Sequence[str],
    float_outputs: Sequence[str],
) -> None:
    """onnxruntime's ``quantize_static`` (:func:`static_options`; MinMax, one sample at a time), calibrated
    first: ``quantize_static`` keeps its own copy of the model loaded while its calibrator loads a second
    one and runs it (vgg16's tail: 546 MB more at the peak), so the ranges are computed here, written
    as its calibration cache and read from there. The same bytes as one ``quantize_static`` call (a test
    checks it), which is what an onnxruntime without calibration caches gets. ``model_path``'s directory is
    the work directory for the cache and the calibration model.
    """
    try:
        from onnxruntime.quantization import CalibrationMethod, quantize_static
        from onnxruntime.quantization import calibrate as ort_calibrate
    except ImportError as exc:  # pragma: no cover - onnxruntime always ships it
        raise TechnicalError(f"onnxruntime.quantization is not available: {exc}") from exc

    options = static_options(op_types, per_channel, nodes_to_exclude, float_outputs)
    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        quantize_static(str(model_path), str(out_path), _Samples(feeds), **options)
        return
    work = Path(model_path).parent
    cache = work / "ranges.json"
    calibrator = ort_calibrate.create_calibrator(
        Path(model_path),
        list(op_types),
        augmented_model_path=str(work / "augmented.onnx"),
        calibrate_method=CalibrationMethod.MinMax,
        use_external_data_format=True,  # its copy drops its weights once written
    )
    calibrator.collect_data(_Samples(feeds))
    ort_calibrate.save_tensors_data(calibrator.compute_data(), cache)
    del calibrator
    quantize_static(str(model_path), str(out_path), None, calibration_cache_path=str(cache), **options)


def static_options(
    op_types: Sequence[str], per_channel: bool, nodes_to_exclude: Sequence[str], float_outputs: Sequence[str]
) -> dict[str, Any]:
    """``quantize_static``'s keyword arguments for the tool's QDQ form: symmetric int8 activations and
    weights with MinMax ranges, float biases, a lone DequantizeLinear per weight, one Q/DQ pair per
    consumer; the outputs of the ``float_outputs`` op types stay float; the model written with external
    data (onnxruntime's in-memory copy drops its weights once written)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    return {
        "quant_format": QuantFormat.QDQ,
        "op_types_to_quantize": list(op_types),
        "per_channel": per_channel,
        "reduce_range": False,
        "activation_type": QuantType.QInt8,
        "weight_type": QuantType.QInt8,
        "calibrate_method": CalibrationMethod.MinMax,
        "nodes_to_exclude": list(nodes_to_exclude),
        "extra_options": {
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
            "QuantizeBias": False,
            "AddQDQPairToWeight": False,
            "OpTypesToExcludeOutputQuantization": list(float_outputs),
            "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
            "DedicatedQDQPair": True,
        },
        "use_external_data_format": True,
    }


class _Samples:
    """A calibration data reader (onnxruntime's protocol): the samples one at a time (batch 1), in order."""

    def __init__(self, feeds: Mapping[str, np.ndarray]) -> None:
        count = len(next(iter(feeds.values())))
        self._it: Iterator[dict[str, np.ndarray]] = (
            {k: v[i : i + 1] for k, v in feeds.items()} for i in range(count)
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def pre_process(model_path: Path, work: Path) -> onnx.ModelProto:
    """onnxruntime's ``quant_pre_process(..., skip_symbolic_shape=True)`` for an opset >= 11 model: the
    same steps and bytes (basic graph optimizations, ONNX shape inference, its metadata tag), with one
    copy of the weights at a time (onnxruntime's keeps the input model loaded beside the optimizing
    session: 2.2 GB more for vgg16's tail). ``work`` is a private directory for the intermediate files."""
    from onnxruntime.quantization.quant_utils import add_pre_process_metadata

    optimized, inferred = work / "optimized.onnx", work / "inferred.onnx"
    session = make_session(
        model_path,
        exact_int8=False,
        optimization=ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        prepacking=False,
        optimized_path=optimized,
    )
    del session
    onnx.shape_inference.infer_shapes_path(str(optimized), str(inferred))
    optimized.unlink()
    model = onnx.load(str(inferred))
    inferred.unlink()
    add_pre_process_metadata(model)
    return model


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
    images, where they are most of the network) everything is quantized. See docs/int8.md for
    why and for the cost on TensorRT. ``float_stride=1`` quantizes every node; inputs without spatial
    axes (fewer than 3 dims) have no stem. ``bias_correction`` is passed to :func:`quantize_qdq`.
    """
    if float_stride < 1:
        raise BadInputError(f"float_stride must be >= 1, got {float_stride}")
    if not 0.0 <= max_float_share <= 1.0:
        raise BadInputError(f"max_float_share must be in [0, 1], got {max_float_share}")
    head = strip_head_encoding(_load(head_fp32), inplace=True)
    tail = strip_tail_decoding(_load(tail_fp32), inplace=True)
    head_inputs, tail_inputs = graph_inputs(head), graph_inputs(tail)
    if len(head_inputs) != 1 or len(tail_inputs) != 1:
        raise BadInputError(f"head and tail must have one input each, got {head_inputs} and {tail_inputs}")
    x = np.asarray(calib_inputs, dtype=np.float32)
    keep_above = None
    if x.ndim >= 3 and float_stride > 1 and len(x):
        above = int(np.prod(x.shape[2:])) // float_stride**2
        if stem_share(head, tail, {head_inputs[0]: x[:1]}, above) <= max_float_share:
            keep_above = above
    with tempfile.TemporaryDirectory(prefix="isplit-int8-") as tmp:
        work = Path(tmp)
        head_src, tail_src = work / "head.onnx", work / "tail.onnx"
        write_model(head, head_src)  # private inputs: the quantized results are checked
        del head  # quantized from the files: no copy held meanwhile
        write_model(tail, tail_src)
        del tail
        quantize = functools.partial(
            _quantized,
            per_channel=True,
            op_types=QUANTIZED_OP_TYPES,
            float_outputs=FLOAT_OUTPUT_OP_TYPES,
            keep_float=(),
            keep_float_above=keep_above,
            bias_correction=bias_correction,
        )  # quantize_qdq's defaults, the result kept in memory (checked once, when written encoded)
        head_q, _ = quantize(head_src, {head_inputs[0]: calib_inputs})
        session = make_session(canonicalize(head_q).SerializeToString(deterministic=True))
        boundary = np.concatenate(
            [run_session(session, {head_inputs[0]: x[i : i + 1]})[0] for i in range(len(x))], axis=0
        ).astype(np.float32, copy=False)
        del session
        tail_q, _ = quantize(tail_src, {tail_inputs[0]: boundary})
    _save_checked(encode_head(head_q, enc, inplace=True), Path(out_head))
    _save_checked(decode_tail(tail_q, enc, inplace=True), Path(out_tail))
    return boundary


def _save_checked(model: onnx.ModelProto, path: Path) -> None:
    """:func:`save_model`, its checker's refusal reported as a technical failure of the quantization."""
    try:
        save_model(model, path)
    except onnx.checker.ValidationError as exc:
        raise TechnicalError(f"the quantized model {path.name} fails the ONNX checker: {exc}") from exc


def _load(path: Path) -> onnx.ModelProto:
    try:
        return onnx.load(str(path))
    except Exception as exc:
        raise BadInputError(f"cannot read ONNX model {path}: {exc}") from exc


def _check_calibration(
    model: onnx.ModelProto, calibration: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Validated float32 calibration feeds: one entry per graph input, same sample count, finite."""
    names = graph_inputs(model)
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
