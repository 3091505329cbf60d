"""Which nodes of a model stay float: named nodes, and the high-resolution stem (see docs/int8.md)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx

from isplit_export.errors import BadInputError
from isplit_export.exporting.onnx_graph import attr, graph_inputs, skeleton
from isplit_export.exporting.onnx_utils import probe_session, run_session
from isplit_export.exporting.qdq_graph import SPATIAL_OP_TYPES, WEIGHTED_OP_TYPES


def nodes_kept_float(
    model: onnx.ModelProto,
    feeds: Mapping[str, np.ndarray],
    op_types: Sequence[str],
    names: Sequence[str],
    above: int | None,
) -> list[str]:
    """Names of the ``op_types`` nodes to leave unquantized: ``names`` plus the convolutions working
    at more than ``above`` positions (see :func:`weighted_nodes`)."""
    quantized = {n.name for n in model.graph.node if n.op_type in op_types and n.name}
    unknown = sorted(set(names) - quantized)
    if unknown:
        raise BadInputError(
            f"cannot keep float: no quantized node named {', '.join(unknown)} (operators: {', '.join(op_types)})"
        )
    keep = set(names)
    if above is not None:
        first = {k: v[:1] for k, v in feeds.items()}
        for name, positions in node_positions(model, first).items():
            if name in quantized and positions > above:
                keep.add(name)
    return sorted(keep)


def weighted_nodes(
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
    shapes = [o.shape for o in run_session(probe_session(model, outputs), sample)]
    result = []
    for node, shape in zip(nodes, shapes, strict=True):
        weight = int(np.prod(inits[node.input[1]].dims))
        if node.op_type in SPATIAL_OP_TYPES:
            out = int(np.prod(shape[2:]))
            stride = int(np.prod(attr(node, "strides", [1])))
            positions = out * stride if node.op_type == "Conv" else out // stride
            macs = out * weight if node.op_type == "Conv" else positions * weight
        else:
            positions, macs = 0, int(np.prod(shape[:-1])) * weight
        result.append((node, positions, macs))
    return result


def node_positions(model: onnx.ModelProto, sample: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Per named node, the resolution it works at: for a convolution its input size without padding (see
    :func:`weighted_nodes`); for any other node the largest spatial size (the product of the axes after
    batch and channels) of its non-constant inputs and outputs, from ONNX shape inference; 0 when unknown."""
    inferred = onnx.shape_inference.infer_shapes(skeleton(model))  # shapes only: no weights copied
    sizes: dict[str, int] = {}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if len(dims) >= 3 and all(d.HasField("dim_value") for d in dims[2:]):
            sizes[vi.name] = int(np.prod([d.dim_value for d in dims[2:]]))
    for name, value in sample.items():
        if value.ndim >= 3:
            sizes[name] = int(np.prod(value.shape[2:]))
    convs = {
        n.name: positions
        for n, positions, _ in weighted_nodes(model, sample)
        if n.op_type in SPATIAL_OP_TYPES
    }
    result = {}
    for node in model.graph.node:
        if node.name in convs:
            result[node.name] = convs[node.name]
        elif node.name:
            result[node.name] = max((sizes.get(t, 0) for t in [*node.input, *node.output] if t), default=0)
    return result


def stem_share(
    head: onnx.ModelProto, tail: onnx.ModelProto, sample: Mapping[str, np.ndarray], above: int
) -> float:
    """The share of the pair's multiply-adds in convolutions working at more than ``above`` positions."""
    head_nodes = weighted_nodes(head, sample)
    boundary = run_session(probe_session(head, [head.graph.output[0].name]), sample)[
        0
    ]  # not serialised whole
    tail_nodes = weighted_nodes(tail, {graph_inputs(tail)[0]: boundary})
    total = stem = 0
    for node, positions, macs in head_nodes + tail_nodes:
        total += macs
        if node.op_type in SPATIAL_OP_TYPES and positions > above:
            stem += macs
    return stem / total if total else 0.0
