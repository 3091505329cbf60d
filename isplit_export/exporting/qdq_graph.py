"""ONNX graph work around onnxruntime's QDQ output: float inputs, separate Q/DQ parameters, tidying.

Shared by :mod:`isplit_export.exporting.quantize` (which runs onnxruntime's static quantization and
then fixes its output up here), :mod:`~isplit_export.exporting.bias_correction` and
:mod:`~isplit_export.exporting.float_stem`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import onnx

from isplit_export.errors import TechnicalError
from isplit_export.exporting.onnx_graph import canonicalize, remove_initializers
from isplit_export.exporting.onnx_utils import OPSET

WEIGHTED_OP_TYPES = ("Conv", "ConvTranspose", "Gemm", "MatMul")
"""Operators with weights: int8 weight initializers behind DequantizeLinear, per output channel."""

SPATIAL_OP_TYPES = ("Conv", "ConvTranspose")
"""Weighted operators that work on a spatial map (their resolution decides the float stem)."""

_ORT_METADATA_KEYS = ("onnx.infer", "onnx.quant.pre_process")


def float_inputs(model: onnx.ModelProto, names: Sequence[str]) -> None:
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
    remove_initializers(model.graph, {t.name for t in model.graph.initializer} - used)


def separate_quant_params(model: onnx.ModelProto) -> None:
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
        if params not in seen or any(
            u.op_type != "DequantizeLinear" or tuple(u.input[1:3]) != params for u in users
        ):
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


def tidy(model: onnx.ModelProto, original: onnx.ModelProto) -> None:
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
