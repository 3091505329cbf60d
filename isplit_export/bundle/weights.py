"""Shared, content-addressed weight files: every weight of a bundle stored once per precision.

A bundle holds many ONNX files over the same weights: ``full.onnx``, each split's head and tail,
their INT8 twins and the codec-free ``*.trt.onnx`` copies for TensorRT. Inline, a resnet50 Jetson
bundle with three splits repeats its 98 MB of weights eleven times. With ``--weights-layout shared``
(the default) :func:`share_weights` rewrites the finished bundle so that every initializer of at least
:data:`MIN_EXTERNAL_BYTES` is ONNX *external data* (``location``, ``offset``, ``length``) pointing into
one pack file per element type under ``weights/``:

    OUT/full.onnx                     OUT/weights/float32-<sha256[:16]>.bin
    OUT/01-<node>.head.onnx           OUT/weights/int8-<sha256[:16]>.bin
    OUT/01-<node>.head.int8.onnx      ...
    OUT/splits/01-<node>/golden.npz, build_engines.sh, engine_plan.json, ...

Identical tensors (same element type and bytes, whatever their names) are stored once; each pack is
named by the sha256 of its content, so a pack's name changes when any byte does. Offsets are aligned to
:data:`ALIGNMENT` bytes (memory mapping).

**Why the ONNX files move to the bundle root.** onnx (``onnx.load`` and the checker), onnxruntime and
TensorRT's ONNX parser all resolve ``location`` relative to the directory of the model file and all
three *refuse* a location that leaves it (``../``: onnx "points outside the directory", onnxruntime
"External data path escapes model directory", TensorRT "Relative paths to parent (../) are not
allowed"). A file in ``splits/01-x/`` can therefore never point into ``OUT/weights/``: every ONNX file
that shares weights has to sit in ``OUT/`` itself. The split folders keep everything else (goldens,
calibration tensors, engine plans), the manifest's ``files`` entries name the new paths, and each
engine plan refers to its models as ``../../<file>`` (:func:`engine_build.relocate_models`).

Everything stays reproducible (files in sorted order, tensors in graph order, deterministic
serialization), the manifest hashes the pack files like any other file (``verify`` names a modified
pack), and each rewritten file passes ``onnx.checker.check_model(path, full_check=True)``, which is
given the path so that it reads the external data. A copy of the bundle moved anywhere keeps working:
all locations are relative.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import onnx
from onnx import numpy_helper

from isplit_export.errors import TechnicalError
from isplit_export.exporting.onnx_graph import canonicalize
from isplit_export.options import WEIGHT_LAYOUTS as LAYOUTS
from isplit_export.targets.engine_build import ENGINE_BUILD_FILE, relocate_models

__all__ = ["ALIGNMENT", "LAYOUTS", "MIN_EXTERNAL_BYTES", "WEIGHTS_DIR", "inline_info", "share_weights"]

WEIGHTS_DIR = "weights"
MIN_EXTERNAL_BYTES = 1024
"""Smaller initializers (scales, zero points, small biases, shapes) stay inside the ONNX file."""

ALIGNMENT = 4096
"""Each tensor starts at a multiple of this offset in its pack (a page: lets runtimes map it)."""


@dataclass
class _Pack:
    """One weights file under construction: an element type's unique tensors, back to back."""

    dtype: str
    path: Path
    handle: BinaryIO
    size: int = 0
    tensors: int = 0
    index: dict[str, tuple[int, int]] = field(default_factory=dict)  # sha256 -> (offset, length)
    digest: Any = field(default_factory=hashlib.sha256)

    def add(self, data: bytes) -> tuple[int, int]:
        """``(offset, length)`` of ``data`` in the pack, appending it when it is new."""
        key = hashlib.sha256(data).hexdigest()
        if key not in self.index:
            pad = -self.size % ALIGNMENT
            if pad:
                self._write(b"\0" * pad)
            self.index[key] = (self.size, len(data))
            self._write(data)
            self.tensors += 1
        return self.index[key]

    def _write(self, data: bytes) -> None:
        self.handle.write(data)
        self.digest.update(data)
        self.size += len(data)


def _tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """The initializers of ``graph`` and of its sub-graphs (If/Loop bodies), in graph order."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _tensors(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _tensors(g)


_RAW_TYPES = frozenset(
    {
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.FLOAT16,
        onnx.TensorProto.DOUBLE,
        onnx.TensorProto.INT8,
        onnx.TensorProto.UINT8,
        onnx.TensorProto.INT16,
        onnx.TensorProto.INT32,
        onnx.TensorProto.INT64,
        onnx.TensorProto.BOOL,
    }
)
"""Element types whose ``raw_data`` are already the pack's bytes (numpy's little-endian layout)."""


def _tensor_bytes(tensor: onnx.TensorProto) -> tuple[str, bytes] | None:
    """``(numpy dtype name, little-endian bytes)`` of a tensor to move into a pack; None to keep it inline.

    ``raw_data`` of the plain numeric types is used as it is (ONNX stores it little-endian), without a
    numpy copy; any other tensor goes through ``numpy_helper.to_array``.
    """
    if tensor.data_type in _RAW_TYPES and tensor.HasField("raw_data"):
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
        if math.prod(tensor.dims) * dtype.itemsize < MIN_EXTERNAL_BYTES:
            return None
        return dtype.name, tensor.raw_data
    array = numpy_helper.to_array(tensor)
    if array.nbytes < MIN_EXTERNAL_BYTES or array.dtype.hasobject:
        return None
    return array.dtype.name, array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()


def _externalize(tensor: onnx.TensorProto, location: str, offset: int, length: int) -> None:
    """Turn ``tensor`` into an external-data reference (its bytes now live in ``location``)."""
    for name in (
        "raw_data",
        "float_data",
        "int32_data",
        "int64_data",
        "double_data",
        "uint64_data",
        "string_data",
    ):
        tensor.ClearField(name)
    del tensor.external_data[:]
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


def _skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same model in a fresh message: a cleared field keeps its memory until its message is freed
    (protobuf's arena), so holding the loaded models would hold every weight of the bundle at once."""
    fresh = onnx.ModelProto()
    fresh.ParseFromString(model.SerializeToString())
    return fresh


def _new_name(rel: str) -> str:
    """The bundle-root name of an ONNX file: ``splits/01-x/head.onnx`` -> ``01-x.head.onnx``."""
    parts = PurePosixPath(rel).parts
    return rel if len(parts) == 1 else f"{parts[-2]}.{parts[-1]}"


def share_weights(root: Path, split_dirs: Sequence[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Rewrite the bundle being built in ``root`` to the shared layout (see the module docstring).

    Every ``*.onnx`` file under ``root`` moves to ``root`` itself with its large initializers as
    external data in ``root/weights/``; the engine plan of each split folder in ``split_dirs`` is
    updated to the new paths. Returns the manifest's ``weights`` block (the layout, the packs: element
    type, tensor count, bytes, and the settings) and the moves (old -> new bundle path) for the
    caller to apply to the manifest's split entries.
    """
    sources = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.onnx"))
    moves = {rel: _new_name(rel) for rel in sources}
    if len(set(moves.values())) != len(moves):
        raise TechnicalError(
            f"two ONNX files of the bundle would get the same name in the shared layout: {moves}"
        )
    clash = sorted(new for new in moves.values() if new not in moves and (root / new).exists())
    if clash:
        raise TechnicalError(f"cannot move ONNX files to the bundle root: {', '.join(clash)} already exist")
    wdir = root / WEIGHTS_DIR
    wdir.mkdir()
    packs: dict[str, _Pack] = {}
    models: dict[str, onnx.ModelProto] = {}
    try:
        for rel in sources:
            try:
                model = onnx.load(str(root / rel))
            except Exception as exc:
                raise TechnicalError(f"cannot read {rel} to share its weights: {exc}") from exc
            for tensor in _tensors(model.graph):
                if tensor.data_location == onnx.TensorProto.EXTERNAL:
                    raise TechnicalError(f"{rel}: initializer {tensor.name} already uses external data")
                found = _tensor_bytes(tensor)
                if found is None:
                    continue
                dtype, data = found
                if dtype not in packs:
                    path = wdir / f".{dtype}.partial"
                    packs[dtype] = _Pack(dtype, path, open(path, "wb"))  # noqa: SIM115  # closed below
                offset, length = packs[dtype].add(data)
                _externalize(tensor, dtype, offset, length)  # location fixed below, once the pack is named
            models[rel] = _skeleton(model)
            del model
    finally:
        for pack in packs.values():
            pack.handle.close()
    names: dict[str, str] = {}
    for dtype, pack in sorted(packs.items()):
        names[dtype] = f"{WEIGHTS_DIR}/{dtype}-{pack.digest.hexdigest()[:16]}.bin"
        os.replace(pack.path, root / names[dtype])
    for rel, model in models.items():
        for tensor in _tensors(model.graph):
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                tensor.external_data[0].value = names[tensor.external_data[0].value]
        target = root / moves[rel]
        if rel != moves[rel]:
            (root / rel).unlink()
        target.write_bytes(canonicalize(model).SerializeToString(deterministic=True))
        try:
            onnx.checker.check_model(str(target), full_check=True)
        except onnx.checker.ValidationError as exc:
            raise TechnicalError(f"{moves[rel]} fails the ONNX checker in the shared layout: {exc}") from exc
    for sdir in split_dirs:
        plan_dir = root / sdir
        if (plan_dir / ENGINE_BUILD_FILE).is_file():
            up = "../" * len(PurePosixPath(sdir).parts)
            relocate_models(
                plan_dir,
                {
                    PurePosixPath(old).name: up + new
                    for old, new in moves.items()
                    if PurePosixPath(old).parent == PurePosixPath(sdir)
                },
            )
    block = {
        "layout": "shared",
        "dir": WEIGHTS_DIR,
        "min_external_bytes": MIN_EXTERNAL_BYTES,
        "alignment": ALIGNMENT,
        "files": {
            names[d]: {"dtype": d, "tensors": p.tensors, "bytes": p.size} for d, p in sorted(packs.items())
        },
    }
    return block, moves


def inline_info() -> dict[str, Any]:
    """The manifest's ``weights`` block for ``--weights-layout inline``: every ONNX file self-contained."""
    return {"layout": "inline"}
