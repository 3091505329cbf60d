"""The one home of ONNX graph helpers: copies, names, attributes, probes and canonical bytes.

Pure ``onnx`` (no onnxruntime, no torch): the boundary codecs of :mod:`isplit_export.exporting.encoding`
run on the torch-free ``verify`` / ``plan`` path, and the Q/DQ passes, bias correction, the float stem
and the DLA check edit graphs with the same helpers. Sessions and model files are
:mod:`isplit_export.exporting.onnx_utils`. onnx-graphsurgeon is not used: the edits here are a few
protobuf field updates each, which it would not make shorter, and it is not in the device image.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Container, Iterator, MutableSequence, Sequence
from typing import Any

import onnx
from google.protobuf.message import Message

PRODUCER = "isplit-export"


def canonicalize(model: onnx.ModelProto) -> onnx.ModelProto:
    """Strip run-dependent text (doc strings, producer version) so equal graphs give equal bytes."""
    model.producer_name = PRODUCER
    model.producer_version = ""
    model.doc_string = ""
    model.graph.doc_string = ""
    for node in model.graph.node:
        node.doc_string = ""
    for vi in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info):
        vi.doc_string = ""
    return model


def copy_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """A deep copy of ``model`` (edits to it leave ``model`` alone)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def copy_fields(src: Message, dst: Message, *, skip: str) -> None:
    """Copy every set field of the protobuf message ``src`` but ``skip`` into ``dst`` (same type)."""
    for field, value in src.ListFields():
        if field.name == skip:
            continue
        if field.is_repeated:
            getattr(dst, field.name).extend(value)
        elif field.message_type is not None:
            getattr(dst, field.name).CopyFrom(value)
        else:
            setattr(dst, field.name, value)


def remove_initializers(graph: onnx.GraphProto, names: Container[str]) -> None:
    """Delete the initializers named ``names`` in place (rebuilding the list would copy every weight)."""
    for i in reversed(range(len(graph.initializer))):
        if graph.initializer[i].name in names:
            del graph.initializer[i]


SKELETON_BYTES = 1024
""":func:`skeleton` leaves out the data of initializers of at least this many bytes."""


def skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` for ONNX shape inference: the same graph, its large initializers without data.

    Each initializer of at least :data:`SKELETON_BYTES` keeps its name, type and dims but no bytes
    (marked as external data, never read), so shape inference copies a graph of a few kB instead of
    every weight; small tensors (shapes, axes, scales) keep their values, which it may read.
    """
    g = model.graph
    graph = onnx.helper.make_graph(
        g.node,
        g.name,
        g.input,
        g.output,
        initializer=[_without_data(t) for t in g.initializer],
        value_info=g.value_info,
    )
    return onnx.helper.make_model(
        graph, ir_version=model.ir_version, opset_imports=model.opset_import, functions=model.functions
    )


def _without_data(tensor: onnx.TensorProto) -> onnx.TensorProto:
    if tensor.data_location == onnx.TensorProto.EXTERNAL or tensor.data_type == onnx.TensorProto.STRING:
        return tensor
    itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    if math.prod(tensor.dims) * itemsize < SKELETON_BYTES:
        return tensor
    light = onnx.TensorProto(name=tensor.name, data_type=tensor.data_type, dims=tensor.dims)
    light.data_location = onnx.TensorProto.EXTERNAL
    light.external_data.add(key="location", value="skeleton")
    return light


def graph_inputs(model: onnx.ModelProto) -> list[str]:
    """The names of the graph inputs that are not initializers (what a caller feeds)."""
    inits = {t.name for t in model.graph.initializer}
    return [vi.name for vi in model.graph.input if vi.name not in inits]


def probe_model(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose outputs are the tensors ``names``."""
    probe = copy_model(model)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in [*model.graph.value_info, *model.graph.output]}
    del probe.graph.output[:]
    for name in names:
        probe.graph.output.append(
            onnx.helper.make_tensor_value_info(name, types.get(name) or onnx.TensorProto.FLOAT, None)
        )
    return probe


@contextlib.contextmanager
def probing(model: onnx.ModelProto, names: Sequence[str]) -> Iterator[onnx.ModelProto]:
    """``model`` with the tensors ``names`` as its outputs (:func:`probe_model`, without the copy), its
    own outputs restored on exit: a large model is held once to write a probe session's input."""
    types = {vi.name: vi.type.tensor_type.elem_type for vi in [*model.graph.value_info, *model.graph.output]}
    outputs = list(model.graph.output)
    del model.graph.output[:]
    try:
        for name in names:
            model.graph.output.append(
                onnx.helper.make_tensor_value_info(name, types.get(name) or onnx.TensorProto.FLOAT, None)
            )
        yield model
    finally:
        del model.graph.output[:]
        model.graph.output.extend(outputs)


def attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    """The value of ``node``'s attribute ``name``, or ``default`` when it has none."""
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def used_names(graph: onnx.GraphProto) -> set[str]:
    """Every name ``graph`` uses: node names, node inputs and outputs, values, initializers."""
    names: set[str] = set()
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
        names.add(node.name)
    for vi in [*graph.input, *graph.output, *graph.value_info]:
        names.add(vi.name)
    names.update(t.name for t in graph.initializer)
    return names


def unique_name(base: str, names: set[str]) -> str:
    """``base`` or ``base_1``, ``base_2``... whichever is free first in ``names``; reserves it there."""
    name, i = base, 0
    while name in names:
        i += 1
        name = f"{base}_{i}"
    names.add(name)
    return name


def replace_name(field: MutableSequence[str], old: str, new: str) -> None:
    """Rename ``old`` to ``new`` in a node's ``input`` or ``output`` field."""
    for i, value in enumerate(field):
        if value == old:
            field[i] = new


def drop_value_infos(graph: onnx.GraphProto, name: str) -> None:
    """Remove stale ``value_info`` entries for ``name`` (its type is set on the graph input/output)."""
    keep = [vi for vi in graph.value_info if vi.name != name]
    del graph.value_info[:]
    graph.value_info.extend(keep)
