"""Strongly typed fp16 copies of ONNX models, for TensorRT 11 (which has no ``--fp16`` any more).

TensorRT 11 builds every network strongly typed: each tensor keeps the type the ONNX file gives it, and
the weak-typing flags that let the builder pick fp16 kernels are gone (NVIDIA, "Migrating from
TensorRT 10.x to 11.x"). An fp16 engine therefore needs an ONNX file whose tensors *are* fp16.
:func:`to_fp16` makes one: every float32 weight becomes float16, a ``Cast(to=FLOAT16)`` follows each
float32 graph input and a ``Cast(to=FLOAT)`` precedes each float32 graph output, so the file keeps the
fp32 interface of the original (the goldens and the host code stay the same) while every layer between
runs in fp16. NVIDIA's own path is ModelOpt AutoCast; this is the same idea with no extra dependency,
checked by the ONNX checker and run by onnxruntime in the tests.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from isplit_export.exporting.onnx_graph import copy_model

KEEP_FLOAT32 = {"Resize": {1, 2}, "Upsample": {1}}
"""Inputs that ONNX types as float32 whatever the data type (``roi`` / ``scales``): left alone."""


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` computing in fp16 with an unchanged float32 interface (see the module docstring)."""
    out = copy_model(model)
    g = out.graph
    keep = {
        node.input[i] for node in g.node for i in KEEP_FLOAT32.get(node.op_type, ()) if i < len(node.input)
    }
    for init in g.initializer:
        if init.data_type == TensorProto.FLOAT and init.name not in keep:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name))
    for node in g.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if (
                    attr.name == "value"
                    and attr.t.data_type == TensorProto.FLOAT
                    and node.output[0] not in keep
                ):
                    attr.t.CopyFrom(
                        numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float16), attr.t.name)
                    )
        if node.op_type == "Cast":
            for attr in node.attribute:
                if attr.name == "to" and attr.i == TensorProto.FLOAT:
                    attr.i = TensorProto.FLOAT16
    renames: dict[str, str] = {}
    casts_in = []
    for inp in g.input:
        if inp.type.tensor_type.elem_type == TensorProto.FLOAT and inp.name not in {
            i.name for i in g.initializer
        }:
            renames[inp.name] = f"{inp.name}__fp16"
            casts_in.append(
                helper.make_node(
                    "Cast",
                    [inp.name],
                    [renames[inp.name]],
                    to=TensorProto.FLOAT16,
                    name=f"{inp.name}__to_fp16",
                )
            )
    for node in g.node:
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]
    casts_out = []
    for o in g.output:
        if o.type.tensor_type.elem_type == TensorProto.FLOAT:
            inner = f"{o.name}__fp16"
            for node in g.node:
                for i, name in enumerate(node.output):
                    if name == o.name:
                        node.output[i] = inner
            casts_out.append(
                helper.make_node("Cast", [inner], [o.name], to=TensorProto.FLOAT, name=f"{o.name}__to_fp32")
            )
    nodes = [*casts_in, *g.node, *casts_out]
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]  # stale float32 annotations; shape inference re-derives them
    onnx.checker.check_model(out)
    return out
