"""Write an ONNX model to a file, one weight tensor at a time, with the bytes protobuf itself gives.

``SerializeToString`` builds the whole message in a buffer that grows by doubling and then copies it
into a Python ``bytes``: about four times the model at its peak (vgg16's 546 MB tail: 2.3 GB). Protobuf
writes a message's fields in field-number order (deterministic mode only changes how maps are
ordered; ONNX has none), so a model's serialisation is that of its weight-free shell with the
initializer records spliced in where the graph's field 5 belongs, and each tensor's ``raw_data`` where
its field 9 belongs. :func:`write_onnx` writes exactly those pieces: at most one tensor's bytes are held.
A test holds the result byte-equal to ``SerializeToString(deterministic=True)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import onnx
from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet

from isplit_export.errors import BadInputError
from isplit_export.exporting.onnx_graph import copy_fields

_LENGTH_DELIMITED = 2
_GRAPH = 7
"""``ModelProto.graph``."""
_INITIALIZER = 5
"""``GraphProto.initializer``."""
_RAW_DATA = 9
"""``TensorProto.raw_data``."""


MAX_BYTES = 2**31 - 1
"""Protobuf's limit for one message: an ONNX file larger than this cannot be read back."""


def write_onnx(model: onnx.ModelProto, path: Path) -> None:
    """Write ``model`` to ``path`` as ``model.SerializeToString(deterministic=True)`` would, streamed.

    A model over :data:`MAX_BYTES` is refused (:class:`BadInputError`, nothing left at ``path``)."""
    try:
        with path.open("wb") as f:
            for chunk in serialized_chunks(model):
                f.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def serialized_chunks(model: onnx.ModelProto) -> Iterator[bytes]:
    """The serialisation of ``model`` in pieces; joined, they equal ``SerializeToString(deterministic=True)``.

    A model or graph carrying fields this onnx does not know is serialised whole (their place in the
    order is protobuf's business)."""
    if _unknown(model) or _unknown(model.graph):
        yield _serialize(model)
        return
    shell = onnx.ModelProto()
    copy_fields(model, shell, skip="graph")
    shell_bytes = _serialize(shell)
    cut = _insert_at(shell_bytes, _GRAPH)
    graph_shell = onnx.GraphProto()
    copy_fields(model.graph, graph_shell, skip="initializer")
    graph_bytes = _serialize(graph_shell)
    inits = [_TensorPieces(t) for t in model.graph.initializer]
    graph_size = len(graph_bytes) + sum(_record_size(_INITIALIZER, p.size) for p in inits)
    total = len(shell_bytes) + (_record_size(_GRAPH, graph_size) if model.HasField("graph") else 0)
    if total > MAX_BYTES:
        raise BadInputError(
            f"the ONNX model would be {total / 2**30:.2f} GiB, over protobuf's 2 GiB limit for one file "
            "(the export writes every model, full.onnx included, as one file first): choose a smaller model"
        )
    yield shell_bytes[:cut]
    if model.HasField("graph"):
        gcut = _insert_at(graph_bytes, _INITIALIZER)
        yield _key(_GRAPH) + _varint(graph_size)
        yield graph_bytes[:gcut]
        for tensor, pieces in zip(model.graph.initializer, inits, strict=True):
            yield _key(_INITIALIZER) + _varint(pieces.size)
            yield from pieces.chunks(tensor)
        yield graph_bytes[gcut:]
    yield shell_bytes[cut:]


class _TensorPieces:
    """One initializer as its ``raw_data``-free shell and the size of the record it makes."""

    def __init__(self, tensor: onnx.TensorProto) -> None:
        self.has_raw = tensor.HasField("raw_data") and not _unknown(tensor)
        if not self.has_raw:
            self.shell = _serialize(tensor)
            self.cut = len(self.shell)
            self.size = len(self.shell)
            return
        shell = onnx.TensorProto()
        copy_fields(tensor, shell, skip="raw_data")
        self.shell = _serialize(shell)
        self.cut = _insert_at(self.shell, _RAW_DATA)
        self.raw_len = len(tensor.raw_data)
        self.size = len(self.shell) + _record_size(_RAW_DATA, self.raw_len)

    def chunks(self, tensor: onnx.TensorProto) -> Iterator[bytes]:
        if not self.has_raw:
            yield self.shell
            return
        yield self.shell[: self.cut]
        yield _key(_RAW_DATA) + _varint(self.raw_len)
        yield tensor.raw_data
        yield self.shell[self.cut :]


def _serialize(message: Message) -> bytes:
    return message.SerializeToString(deterministic=True)


def _unknown(message: Message) -> bool:
    return len(UnknownFieldSet(message)) > 0


def _record_size(field: int, length: int) -> int:
    """Bytes of a length-delimited record of ``field`` with a ``length``-byte payload."""
    return len(_key(field)) + len(_varint(length)) + length


def _key(field: int) -> bytes:
    return _varint(field << 3 | _LENGTH_DELIMITED)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _insert_at(data: bytes, field: int) -> int:
    """Where a record of ``field`` goes in the serialised message ``data``: before its first top-level
    field with a larger number (``data`` has none of ``field`` itself)."""
    pos = 0
    while pos < len(data):
        start = pos
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if number >= field:
            if number == field:
                raise ValueError(f"field {field} is already in the message")
            return start
        if wire == 0:
            _, pos = _read_varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == _LENGTH_DELIMITED:
            length, pos = _read_varint(data, pos)
            pos += length
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"unexpected wire type {wire} in field {number}")
    return len(data)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
