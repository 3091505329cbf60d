"""INT8 by explicit quantization: QDQ ONNX models from onnxruntime static quantization.

The output is meant for TensorRT's explicit-quantization path (implicit INT8 calibrators are
deprecated since TensorRT 10.1) and is verifiable on a CPU with onnxruntime. TensorRT only takes
symmetric INT8 Q/DQ, so:

- activations and weights are int8 with zero point 0 (``ActivationSymmetric`` / ``WeightSymmetric``),
  weights per output channel (Conv axis 0, Gemm with ``transB`` axis 0, MatMul axis 1);
- Q/DQ go on the inputs of the weighted ops (Conv, ConvTranspose, Gemm, MatMul) only, not on their
  outputs: NVIDIA's recommended placement, which also leaves the logits in float;
- biases stay float32 (``QuantizeBias=False``): TensorRT's ``DequantizeLinear`` takes int8 only, not
  the int32 biases onnxruntime would write by default;
- weights stay float32 behind a Q/DQ pair (``AddQDQPairToWeight``), the form PyTorch QAT exports
  produce and TensorRT quantizes itself at build time (pre-quantized int8 weight initializers are
  accepted only by newer TensorRT releases).

Not checked here against a real TensorRT parser (no GPU): the checks are the ONNX checker, onnxruntime
CPU runs, and the structural tests (int8, zero point 0, per-channel axis 0, float bias).

Calibration is MinMax (deterministic), one sample per run. Everything onnxruntime writes (the
shape-inferred copy, the augmented calibration model) stays in a private temporary directory; the
result is canonicalized and written once, so the same inputs give the same bytes.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx

from .encoding import BoundaryEncoding, decode_tail, encode_head, strip_head_encoding, strip_tail_decoding
from .errors import BadInputError, TechnicalError
from .onnx_utils import OPSET, canonicalize, make_session, run_session, save_model

QUANTIZED_OP_TYPES = ("Conv", "ConvTranspose", "Gemm", "MatMul")
"""Operators whose inputs get Q/DQ (TensorRT's recommended placement)."""

_ORT_METADATA_KEYS = ("onnx.infer", "onnx.quant.pre_process")


def quantize_qdq(
    model_path: Path,
    out_path: Path,
    calibration: Mapping[str, np.ndarray],
    *,
    per_channel: bool = True,
    op_types: Sequence[str] = QUANTIZED_OP_TYPES,
) -> None:
    """Write the symmetric INT8 QDQ version of ``model_path`` to ``out_path``.

    ``calibration`` maps every graph input name to float samples stacked on axis 0; the samples are
    fed one at a time. Runs onnxruntime's ``quant_pre_process`` (ONNX shape inference and basic graph
    optimizations, no symbolic shape inference) first. The opset is kept (17 for this project); the
    result passes the ONNX checker (full check) and runs in onnxruntime CPU.
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
        "AddQDQPairToWeight": True,
        "OpTypesToExcludeOutputQuantization": list(op_types),
        "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
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
                extra_options=extra_options,
            )
            model = onnx.load(str(qdq))
        except TechnicalError:
            raise
        except Exception as exc:
            raise TechnicalError(f"onnxruntime static quantization of {model_path} failed: {exc}") from exc
    _tidy(model, original)
    try:
        save_model(model, out_path)
    except onnx.checker.ValidationError as exc:
        raise TechnicalError(f"the quantized model {out_path.name} fails the ONNX checker: {exc}") from exc


def build_int8_pair(
    head_fp32: Path,
    tail_fp32: Path,
    calib_inputs: np.ndarray,
    out_head: Path,
    out_tail: Path,
    enc: BoundaryEncoding,
) -> np.ndarray:
    """Quantize a head/tail pair and give it the same ``boundary`` interface as the fp32 pair.

    The inputs may be the fp32 pair or a pair already carrying a boundary encoding (it is stripped
    first). The head is calibrated on ``calib_inputs`` (images, stacked on axis 0); the tail on the
    float32 boundary tensors the *quantized* head produces (what the tail will really see). ``enc`` is
    then applied with :func:`encode_head` / :func:`decode_tail`. Returns those boundary tensors (float32,
    before encoding), which the bundle stores as the tail's calibration material.
    """
    head = strip_head_encoding(_load(head_fp32))
    tail = strip_tail_decoding(_load(tail_fp32))
    head_inputs, tail_inputs = _graph_inputs(head), _graph_inputs(tail)
    if len(head_inputs) != 1 or len(tail_inputs) != 1:
        raise BadInputError(f"head and tail must have one input each, got {head_inputs} and {tail_inputs}")
    with tempfile.TemporaryDirectory(prefix="isplit-int8-") as tmp:
        work = Path(tmp)
        head_src, tail_src = work / "head.onnx", work / "tail.onnx"
        head_q, tail_q = work / "head.qdq.onnx", work / "tail.qdq.onnx"
        save_model(head, head_src)
        save_model(tail, tail_src)
        quantize_qdq(head_src, head_q, {head_inputs[0]: calib_inputs})
        session = make_session(head_q)
        x = np.asarray(calib_inputs, dtype=np.float32)
        boundary = np.concatenate(
            [run_session(session, {head_inputs[0]: x[i : i + 1]})[0] for i in range(len(x))], axis=0
        ).astype(np.float32, copy=False)
        quantize_qdq(tail_src, tail_q, {tail_inputs[0]: boundary})
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
