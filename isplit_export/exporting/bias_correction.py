"""Bias correction of a QDQ model: lower each quantized Conv/Gemm bias by the mean error of its int8 rounding.

Nagel et al., "Data-Free Quantization" (2019), empirical variant; why it is needed and what it buys
is in docs/int8.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from isplit_export.exporting.onnx_graph import attr, graph_inputs, unique_name, used_names
from isplit_export.exporting.onnx_utils import probe_session, run_session


@dataclass(frozen=True)
class _BiasTarget:
    """A quantized Conv/Gemm whose float bias gets corrected (see :func:`correct_biases`).

    The weights stay initializers until their correction is computed, one target at a time: float64
    copies of every weight at once were the peak of an INT8 export (2 GB for vgg16's classifier)."""

    node: onnx.NodeProto
    x: str  # its float input tensor, as named in the reference model
    act_scale: np.ndarray | None  # the input's per-tensor int8 scale; None: input not quantized
    weight: onnx.TensorProto  # reference's float weight: Conv [O, C/group, *kernel], Gemm [N, K]
    weight_q: onnx.NodeProto  # the DequantizeLinear giving the same after the model's int8 Q/DQ
    bias: onnx.TensorProto | None  # its 1-D bias initializer; None: it has none (one gets added)
    gain: float  # output change per unit of bias: 1 for Conv, alpha / beta for Gemm
    transposed: bool  # a Gemm without transB: its weights are [K, N], used transposed


def correct_biases(
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
    inputs = set(graph_inputs(reference))
    probes = sorted({t.x for t in targets} - inputs)
    session = probe_session(reference, probes) if probes else None
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
    del session
    inits = {t.name: t for t in model.graph.initializer}
    names = used_names(model.graph)
    for target, (m, mq) in zip(targets, sums, strict=True):
        w_int8, scale = _int8_weight(target.weight_q, inits)
        quantized = _output_means(target, w_int8, mq / count, scale)
        del w_int8
        error = quantized - _output_means(target, numpy_helper.to_array(target.weight), m / count)
        shift = target.gain * error
        if target.bias is None:
            name = unique_name(f"{target.node.name or target.node.output[0]}_bias", names)
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
    known = {o for n in reference.graph.node for o in n.output} | set(graph_inputs(reference))
    ref_inits = {t.name: t for t in reference.graph.initializer}
    ref_weight = {n.name: n.input[1] for n in reference.graph.node if n.name and len(n.input) > 1}
    targets = []
    for node in model.graph.node:
        if node.op_type == "Conv":
            if attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", b""):
                continue
            gain = 1.0
        elif node.op_type == "Gemm":
            alpha, beta = float(attr(node, "alpha", 1.0)), float(attr(node, "beta", 1.0))
            if attr(node, "transA", 0) or beta == 0.0:
                continue
            gain = alpha / beta
        else:
            continue
        dq = _int8_dequantize(node.input[1], producer, inits)
        float_weight = ref_inits.get(ref_weight.get(node.name, ""))
        x, act_scale = _quantized_input(node.input[0], producer, inits)
        if dq is None or float_weight is None or x not in known:
            continue
        if tuple(float_weight.dims) != tuple(inits[dq.input[0]].dims):
            continue
        transposed = node.op_type == "Gemm" and not attr(node, "transB", 0)
        out_channels = float_weight.dims[1 if transposed else 0]
        bias = None
        if len(node.input) > 2 and node.input[2]:
            bias = inits.get(node.input[2])
            if bias is None or uses[bias.name] != 1 or tuple(bias.dims) != (out_channels,):
                continue
        targets.append(_BiasTarget(node, x, act_scale, float_weight, dq, bias, gain, transposed))
    return targets


def _int8_dequantize(
    name: str, producer: Mapping[str, onnx.NodeProto], inits: Mapping[str, onnx.TensorProto]
) -> onnx.NodeProto | None:
    """The node producing ``name`` when it is DequantizeLinear(int8 initializer, scale, zero point 0), else None."""
    dq = producer.get(name)
    if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits or dq.input[1] not in inits:
        return None
    zero = inits.get(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else None
    if inits[dq.input[0]].data_type != onnx.TensorProto.INT8:
        return None
    if zero is not None and numpy_helper.to_array(zero).any():
        return None
    return dq


def _int8_weight(dq: onnx.NodeProto, inits: Mapping[str, onnx.TensorProto]) -> tuple[np.ndarray, np.ndarray]:
    """``W_q`` as the int8 initializer of :func:`_int8_dequantize`'s node and its float64 scale, shaped
    to broadcast against it (``W_q`` = their product)."""
    w = numpy_helper.to_array(inits[dq.input[0]])
    scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float64)
    if scale.ndim:
        axis = int(attr(dq, "axis", 1)) % w.ndim
        scale = scale.reshape([-1 if a == axis else 1 for a in range(w.ndim)])
    return w, scale


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
    node, kernel = target.node, tuple(target.weight.dims[2:])
    nd = len(kernel)
    strides = attr(node, "strides", [1] * nd)
    dilations = attr(node, "dilations", [1] * nd)
    pads = attr(node, "pads", [0] * (2 * nd))
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


GEMM_BLOCK = 256
"""A Gemm's output means are computed this many output channels at a time: float64 copies of a whole
classifier weight were the peak of an INT8 export (822 MB for vgg16's first Linear). Each channel's
dot product is the same either way."""


def _output_means(
    target: _BiasTarget, weight: np.ndarray, means: np.ndarray, scale: np.ndarray | None = None
) -> np.ndarray:
    """Per output channel, the mean of ``conv(W, x)`` (Gemm: ``x @ W.T``, or ``x @ W`` without transB)
    from :func:`_input_means`, with ``W`` = ``weight`` in float64, times ``scale`` when given."""
    if target.node.op_type == "Gemm":
        axis = 1 if target.transposed else 0
        scales = None if scale is None else np.broadcast_to(scale, weight.shape)
        parts = []
        for start in range(0, weight.shape[axis], GEMM_BLOCK):
            rows = slice(start, start + GEMM_BLOCK)
            block = (slice(None), rows) if axis else (rows, slice(None))
            w = weight[block].astype(np.float64)
            if scales is not None:
                w *= scales[block]
            parts.append((w.T if target.transposed else w) @ means)
        return np.concatenate(parts)
    w = weight.astype(np.float64)
    if scale is not None:
        w *= scale
    group = int(attr(target.node, "group", 1))
    out_ch, in_per_group = w.shape[:2]
    w = w.reshape(group, out_ch // group, in_per_group, -1)
    m = means.reshape(group, in_per_group, -1)
    return np.einsum("goct,gct->go", w, m).reshape(out_ch)
