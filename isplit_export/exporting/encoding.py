"""Boundary encodings: how the head's output tensor is put on the wire between device and server.

Three encodings, applied as graph edits at the split so that the ONNX pair itself carries them:

- ``fp32``: the boundary as the model computes it (4 bytes per element);
- ``fp16``: the head ends with ``Cast(to=FLOAT16)``, the tail starts with ``Cast(to=FLOAT)`` (2 bytes);
- ``int8``: the head ends with ``QuantizeLinear`` to **uint8** (asymmetric, per tensor), the tail starts
  with the matching ``DequantizeLinear`` (1 byte). The transmitted tensor really is 8-bit.

:func:`encode_array` / :func:`decode_array` are numpy references that reproduce onnxruntime bit for
bit (float32 division, round half to even, saturation), so goldens can be made and checked without a
session. Torch-free, so ``verify`` can use it on a device without PyTorch.

Note for TensorRT: its ONNX parser takes ``QuantizeLinear`` / ``DequantizeLinear`` only with int8 data
and a zero point of 0, so it cannot parse the uint8 codec nodes. A TensorRT engine has to be built from
:func:`strip_head_encoding` / :func:`strip_tail_decoding` of the pair, with :func:`encode_array` /
:func:`decode_array` run around the engines.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from isplit_export.errors import BadInputError
from isplit_export.exporting.onnx_graph import (
    copy_model,
    drop_value_infos,
    remove_initializers,
    replace_name,
    unique_name,
    used_names,
)

ENCODINGS = ("fp32", "fp16", "int8")
"""Valid boundary encoding names, in increasing compression."""

BOUNDARY = "boundary"
"""Name of the head's graph output and of the tail's graph input."""

ENCODED_INNER_NAME = "boundary_fp32"
"""Preferred internal name of the float32 boundary once an encoding node sits at the split."""

_DTYPES = {"fp32": "float32", "fp16": "float16", "int8": "uint8"}
_ONNX_TYPES = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16, "uint8": TensorProto.UINT8}
_QMIN, _QMAX = 0, 255
_F32_TINY = float(np.finfo(np.float32).tiny)
_F32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class BoundaryEncoding:
    """One boundary encoding with its parameters.

    ``dtype`` is the numpy dtype name of the transmitted tensor (float32 / float16 / uint8). For
    ``int8``, ``scale`` (a float32-representable value) and ``zero_point`` (0..255) are the
    ``QuantizeLinear`` parameters: ``q = saturate(round_half_even(x / scale) + zero_point)``.
    """

    name: str
    dtype: str
    scale: float | None = None
    zero_point: int | None = None

    def __post_init__(self) -> None:
        if self.name not in ENCODINGS:
            raise BadInputError(_unknown(self.name))
        if self.dtype != _DTYPES[self.name]:
            raise BadInputError(
                f"boundary encoding {self.name!r} transmits {_DTYPES[self.name]}, not {self.dtype!r}"
            )
        if self.name == "int8":
            s, zp = self.scale, self.zero_point
            if s is None or zp is None:
                raise BadInputError("int8 boundary encoding needs a scale and a zero_point (run calibration)")
            if isinstance(zp, bool) or not isinstance(zp, (int, np.integer)) or not _QMIN <= int(zp) <= _QMAX:
                raise BadInputError(f"int8 boundary zero_point must be an integer in [0, 255], got {zp!r}")
            if not isinstance(s, (int, float, np.floating)) or not math.isfinite(s) or not s >= _F32_TINY:
                raise BadInputError(f"int8 boundary scale must be a positive finite float32, got {s!r}")
            if float(np.float32(s)) != float(s):
                raise BadInputError(f"int8 boundary scale {s!r} is not exactly representable as float32")
            object.__setattr__(self, "scale", float(s))
            object.__setattr__(self, "zero_point", int(zp))
        elif self.scale is not None or self.zero_point is not None:
            raise BadInputError(f"boundary encoding {self.name!r} takes no scale / zero_point")

    @property
    def bytes_per_element(self) -> int:
        """Bytes per transmitted element: 4, 2 or 1."""
        return int(np.dtype(self.dtype).itemsize)

    def bytes_per_image(self, shape: Sequence[int]) -> int:
        """Transmitted bytes for one image whose boundary has the per-image ``shape`` (no batch axis)."""
        return int(math.prod(int(d) for d in shape)) * self.bytes_per_element

    def to_json(self) -> dict[str, Any]:
        """JSON form as stored in the manifest's ``boundary`` block (scale / zero_point null unless int8)."""
        return {
            "encoding": self.name,
            "dtype": self.dtype,
            "scale": self.scale,
            "zero_point": self.zero_point,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> BoundaryEncoding:
        """Inverse of :meth:`to_json` (also accepts ``name`` for ``encoding``); validates every field."""
        name = d.get("encoding", d.get("name"))
        if not isinstance(name, str):
            raise BadInputError(f"boundary encoding entry has no encoding name: {dict(d)!r}")
        if name not in ENCODINGS:
            raise BadInputError(_unknown(name))
        return cls(
            name=name,
            dtype=str(d.get("dtype", _DTYPES[name])),
            scale=d.get("scale"),
            zero_point=d.get("zero_point"),
        )


def element_bytes(name: str) -> int:
    """Bytes per transmitted element of encoding ``name`` (fp32 4, fp16 2, int8 1)."""
    if name not in ENCODINGS:
        raise BadInputError(_unknown(name))
    return int(np.dtype(_DTYPES[name]).itemsize)


def _unknown(name: str) -> str:
    return f"unknown boundary encoding {name!r}: choose one of {', '.join(ENCODINGS)}"


def calibrate_encoding(name: str, samples: np.ndarray) -> BoundaryEncoding:
    """The encoding ``name`` with its parameters computed from calibration boundary tensors.

    fp32 and fp16 have no parameters. int8 is asymmetric uint8, per tensor, from the min/max of
    ``samples`` (MinMax: deterministic, and nothing seen in calibration is clipped). The range is
    widened to include 0 so that 0 (ReLU outputs, padding) is exactly representable; after a ReLU
    the zero point is 0 and all 256 levels cover [0, max], twice the resolution of symmetric int8.
    The scale is rounded to float32 first and the zero point derived from that float32 scale, so
    numpy and onnxruntime use the very same numbers. An all-zero range gets scale 1.0, zero point 0;
    a range so small that its scale would underflow float32 gets the smallest normal float32.
    """
    if name not in ENCODINGS:
        raise BadInputError(_unknown(name))
    if name != "int8":
        return BoundaryEncoding(name=name, dtype=_DTYPES[name])
    x = np.asarray(samples)
    if x.size == 0:
        raise BadInputError("int8 boundary calibration needs at least one sample, got an empty array")
    if not np.issubdtype(x.dtype, np.floating):
        raise BadInputError(f"int8 boundary calibration needs float samples, got dtype {x.dtype}")
    if not np.isfinite(x).all():
        raise BadInputError("int8 boundary calibration samples contain NaN or infinity")
    lo = min(float(x.min()), 0.0)
    hi = max(float(x.max()), 0.0)
    if hi == lo:  # all zero: any scale works, 1.0 keeps the numbers readable
        return BoundaryEncoding(name="int8", dtype="uint8", scale=1.0, zero_point=0)
    scale = float(np.float32((hi - lo) / (_QMAX - _QMIN)))
    scale = min(max(scale, _F32_TINY), _F32_MAX)
    zero_point = int(np.clip(np.rint(_QMIN - lo / scale), _QMIN, _QMAX))
    return BoundaryEncoding(name="int8", dtype="uint8", scale=scale, zero_point=zero_point)


# --------------------------------------------------------------------------------------------------
# numpy references


def encode_array(x: np.ndarray, enc: BoundaryEncoding) -> np.ndarray:
    """The tensor ``enc`` transmits for the float32 boundary ``x``, exactly as onnxruntime computes it.

    int8: ``saturate(round_half_even(float32(x) / float32(scale)) + zero_point)`` to uint8, the
    ``QuantizeLinear`` definition; NaN inputs are not supported.
    """
    x32 = np.asarray(x, dtype=np.float32)
    if enc.name == "fp32":
        return x32.copy()
    if enc.name == "fp16":
        return x32.astype(np.float16)
    assert enc.scale is not None and enc.zero_point is not None
    q = np.rint(x32 / np.float32(enc.scale))
    q = np.clip(q, _QMIN - enc.zero_point, _QMAX - enc.zero_point) + np.float32(enc.zero_point)
    return q.astype(np.uint8)


def decode_array(q: np.ndarray, enc: BoundaryEncoding) -> np.ndarray:
    """The float32 boundary the tail sees for the transmitted tensor ``q`` (``DequantizeLinear`` / ``Cast``)."""
    arr = np.asarray(q)
    if arr.dtype != np.dtype(enc.dtype):
        raise BadInputError(f"{enc.name} boundary must be {enc.dtype}, got {arr.dtype}")
    if enc.name != "int8":
        return arr.astype(np.float32)
    assert enc.scale is not None and enc.zero_point is not None
    return (arr.astype(np.int32) - enc.zero_point).astype(np.float32) * np.float32(enc.scale)


# --------------------------------------------------------------------------------------------------
# graph edits


def encode_head(head: onnx.ModelProto, enc: BoundaryEncoding, *, inplace: bool = False) -> onnx.ModelProto:
    """A copy of ``head`` (``inplace``: ``head`` itself, edited) whose graph output ``boundary`` carries the
    encoded tensor.

    fp32: unchanged copy. fp16: ``Cast(to=FLOAT16)`` appended. int8: ``QuantizeLinear`` with scalar
    float32 scale and uint8 zero point initializers appended. The old float32 output is renamed
    (``boundary_fp32`` unless taken); the output keeps its shape, dynamic batch dim included.
    """
    model = head if inplace else copy_model(head)
    if enc.name == "fp32":
        return model
    _require_opset(model, 13)
    graph = model.graph
    out = _find_value(graph.output, BOUNDARY, "head graph output")
    _require_float(out, "head graph output")
    if not any(BOUNDARY in n.output for n in graph.node):
        raise BadInputError(f"head graph output {BOUNDARY!r} is not produced by a node: cannot encode it")
    names = used_names(graph)
    inner = unique_name(ENCODED_INNER_NAME, names)
    for node in graph.node:
        replace_name(node.input, BOUNDARY, inner)
        replace_name(node.output, BOUNDARY, inner)
    drop_value_infos(graph, BOUNDARY)
    inner_vi = onnx.ValueInfoProto()
    inner_vi.CopyFrom(out)
    inner_vi.name = inner
    graph.value_info.append(inner_vi)
    graph.node.append(_codec_node(graph, enc, names, src=inner, dst=BOUNDARY, encode=True))
    out.type.tensor_type.elem_type = _ONNX_TYPES[enc.dtype]
    return model


def decode_tail(tail: onnx.ModelProto, enc: BoundaryEncoding, *, inplace: bool = False) -> onnx.ModelProto:
    """A copy of ``tail`` (``inplace``: ``tail`` itself, edited) whose graph input ``boundary`` takes the
    encoded tensor.

    The input gets the encoded dtype and is followed by ``Cast(to=FLOAT)`` (fp16) or
    ``DequantizeLinear`` (int8) feeding the old consumers under a new name (``boundary_fp32`` unless
    taken). fp32: unchanged copy.
    """
    model = tail if inplace else copy_model(tail)
    if enc.name == "fp32":
        return model
    _require_opset(model, 13)
    graph = model.graph
    inp = _find_value(graph.input, BOUNDARY, "tail graph input")
    _require_float(inp, "tail graph input")
    if any(o.name == BOUNDARY for o in graph.output):
        raise BadInputError(f"tail graph output {BOUNDARY!r} is its input: nothing to decode into")
    names = used_names(graph)
    inner = unique_name(ENCODED_INNER_NAME, names)
    for node in graph.node:
        replace_name(node.input, BOUNDARY, inner)
    drop_value_infos(graph, BOUNDARY)
    inner_vi = onnx.ValueInfoProto()
    inner_vi.CopyFrom(inp)
    inner_vi.name = inner
    graph.value_info.append(inner_vi)
    decode = _codec_node(graph, enc, names, src=BOUNDARY, dst=inner, encode=False)
    nodes = [decode, *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    inp.type.tensor_type.elem_type = _ONNX_TYPES[enc.dtype]
    return model


def strip_head_encoding(head: onnx.ModelProto, *, inplace: bool = False) -> onnx.ModelProto:
    """Undo :func:`encode_head`: a copy (``inplace``: ``head``) whose ``boundary`` output is float32 again.

    An fp32 head comes back unchanged. Used to quantize an already-encoded head, and wherever a
    consumer cannot take the codec node (TensorRT parses no uint8 ``QuantizeLinear``).
    """
    return _strip_codec(head, head=True, inplace=inplace)


def strip_tail_decoding(tail: onnx.ModelProto, *, inplace: bool = False) -> onnx.ModelProto:
    """Undo :func:`decode_tail`: a copy (``inplace``: ``tail``) whose ``boundary`` input is float32 again."""
    return _strip_codec(tail, head=False, inplace=inplace)


def _strip_codec(source: onnx.ModelProto, *, head: bool, inplace: bool) -> onnx.ModelProto:
    """A head (its ``boundary`` output) or tail (its input) without the boundary codec node."""
    model = source if inplace else copy_model(source)
    graph = model.graph
    value = _find_value(
        graph.output if head else graph.input, BOUNDARY, "head graph output" if head else "tail graph input"
    )
    if value.type.tensor_type.elem_type == TensorProto.FLOAT:
        return model
    node = _remove_codec(graph, _codec_of(graph, BOUNDARY, produced=head))
    inner = node.input[0] if head else node.output[0]
    for n in graph.node:
        replace_name(n.input, inner, BOUNDARY)
        if head:
            replace_name(n.output, inner, BOUNDARY)
    drop_value_infos(graph, inner)
    value.type.tensor_type.elem_type = TensorProto.FLOAT
    return model


def _codec_of(graph: onnx.GraphProto, name: str, *, produced: bool) -> int:
    """Index of the single Cast / QuantizeLinear / DequantizeLinear node producing (or decoding) ``name``."""
    if produced:
        found = [i for i, n in enumerate(graph.node) if name in n.output]
    else:
        found = [i for i, n in enumerate(graph.node) if n.input and n.input[0] == name]
    codecs = ("Cast", "QuantizeLinear", "DequantizeLinear")
    if (
        len(found) != 1
        or graph.node[found[0]].op_type not in codecs
        or graph.node[found[0]].domain not in ("", "ai.onnx")
    ):
        raise BadInputError(f"{name!r} is not encoded by a single boundary codec node: cannot strip it")
    return found[0]


def _remove_codec(graph: onnx.GraphProto, index: int) -> onnx.NodeProto:
    """Remove node ``index`` and the initializers only it used (scale, zero point); returns the node."""
    node = onnx.NodeProto()
    node.CopyFrom(graph.node[index])
    del graph.node[index]
    used = {i for n in graph.node for i in n.input}
    remove_initializers(graph, set(node.input[1:]) - used)
    return node


def _codec_node(
    graph: onnx.GraphProto, enc: BoundaryEncoding, names: set[str], *, src: str, dst: str, encode: bool
) -> onnx.NodeProto:
    """The Cast / QuantizeLinear / DequantizeLinear node between ``src`` and ``dst``; adds initializers."""
    node_name = unique_name("boundary_encode" if encode else "boundary_decode", names)
    if enc.name == "fp16":
        to = TensorProto.FLOAT16 if encode else TensorProto.FLOAT
        return helper.make_node("Cast", [src], [dst], name=node_name, to=to)
    assert enc.scale is not None and enc.zero_point is not None
    scale_name = unique_name("boundary_encoding_scale", names)
    zp_name = unique_name("boundary_encoding_zero_point", names)
    graph.initializer.append(numpy_helper.from_array(np.array(enc.scale, dtype=np.float32), scale_name))
    graph.initializer.append(numpy_helper.from_array(np.array(enc.zero_point, dtype=np.uint8), zp_name))
    op = "QuantizeLinear" if encode else "DequantizeLinear"
    return helper.make_node(op, [src, scale_name, zp_name], [dst], name=node_name)


def _require_opset(model: onnx.ModelProto, minimum: int) -> None:
    version = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if version < minimum:
        raise BadInputError(f"boundary encoding needs ONNX opset >= {minimum}, the model has {version}")


def _find_value(values: Iterable[onnx.ValueInfoProto], name: str, what: str) -> onnx.ValueInfoProto:
    for vi in values:
        if vi.name == name:
            return vi
    raise BadInputError(f"the model has no {what} named {name!r}")


def _require_float(vi: onnx.ValueInfoProto, what: str) -> None:
    elem = vi.type.tensor_type.elem_type
    if elem != TensorProto.FLOAT:
        raise BadInputError(
            f"{what} {vi.name!r} is {TensorProto.DataType.Name(elem)}, expected FLOAT: already encoded?"
        )
