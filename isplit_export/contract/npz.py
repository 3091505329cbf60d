"""Bounded ``.npz`` loading: zip and ``.npy`` headers checked before anything is decompressed, no pickle; only
the members a reader uses are read, streamed, within a budget from the manifest's shapes."""

from __future__ import annotations

import math
import zipfile
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from isplit_export.contract.manifest import Manifest
from isplit_export.contract.schema import MAX_NPZ_MEMBER_BYTES, MAX_NPZ_MEMBERS, MAX_NPZ_TOTAL_BYTES
from isplit_export.contract.splits import Split
from isplit_export.errors import BadInputError, GateFailedError

GOLDEN_MEMBERS = ("input", "boundary", "logits", "labels", "logits_int8")
"""The members of ``golden.npz`` that verify and run read; any other member is never decompressed."""
MAX_GOLDEN_IMAGES = 4096
"""Golden images per split at most, where the manifest does not say (its ``options.golden_images``)."""
NPY_HEADER_SLACK = 4096
"""Room for a ``.npy`` header above the data in a member's budget."""
_CHUNK = 1 << 20


def golden_budget(m: Manifest, entry: Split) -> dict[str, int]:
    """The most bytes each golden member may expand to, from the manifest's shapes: golden images x the
    per-image elements (input, boundary, classes) x 8 bytes (the widest element) + a header."""
    manifest = m.data
    options = manifest.get("options") if isinstance(manifest.get("options"), Mapping) else {}
    n = options.get("golden_images") if isinstance(options, Mapping) else None
    n = (
        n
        if isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= MAX_GOLDEN_IMAGES
        else MAX_GOLDEN_IMAGES
    )
    model = manifest.get("model") if isinstance(manifest.get("model"), Mapping) else {}
    classes = model.get("num_classes") if isinstance(model, Mapping) else None
    dims: dict[str, list[Any]] = {
        "input": _per_image(manifest.get("input")),
        "boundary": _per_image(entry.raw.get("boundary")),
        "logits": [classes],
        "logits_int8": [classes],
        "labels": [],
    }
    out = {}
    for name, d in dims.items():
        if all(isinstance(x, int) and not isinstance(x, bool) and 0 < x <= 1 << 31 for x in d):
            out[name] = n * math.prod(d) * 8 + NPY_HEADER_SLACK
    return out


def _per_image(block: Any) -> list[Any]:
    """A block's ``shape`` without its batch axis (``[]`` when it has none); ``[None]`` (no budget: the
    global limits hold) when the block or its shape is not a JSON object / list (a bound, never a crash)."""
    shape = block.get("shape") if isinstance(block, Mapping) else None if block is None else 0
    if not shape:
        return [] if shape is None or shape == [] else [None]
    return list(shape[1:]) if isinstance(shape, list) else [None]


def _read_into(f: IO[bytes], arr: np.ndarray, nbytes: int) -> int:
    """Stream ``nbytes`` from ``f`` into ``arr``'s memory, a chunk at a time (never the whole body twice)."""
    view = arr.reshape(-1).view(np.uint8).data if nbytes else memoryview(bytearray())
    got = 0
    while got < nbytes:
        chunk = f.read(min(_CHUNK, nbytes - got))
        if not chunk:
            break
        view[got : got + len(chunk)] = chunk
        got += len(chunk)
    return got


def load_npz_bounded(
    path: Path,
    what: str,
    *,
    max_member: int = MAX_NPZ_MEMBER_BYTES,
    max_total: int = MAX_NPZ_TOTAL_BYTES,
    max_members: int = MAX_NPZ_MEMBERS,
    members: Collection[str] | None = None,
    budget: Mapping[str, int] | None = None,
) -> dict[str, np.ndarray]:
    """Arrays of an ``.npz`` with the decompressed size bounded per member and in total, no pickle.

    The zip's central directory (declared sizes) and each ``.npy`` header (shape x itemsize) are
    checked before a byte is decompressed; the reader never returns more than the declared size.
    ``members``: read only these (others are never decompressed; None: all); ``budget``: a tighter
    limit per member (e.g. :func:`golden_budget`). Each array is streamed into its own memory.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if len(infos) > max_members:
                raise BadInputError(
                    f"{what} has {len(infos)} members, over the limit of {max_members}: rebuild the bundle"
                )
            if members is not None:
                infos = [
                    i
                    for i in infos
                    if i.filename.removesuffix(".npy") in members and i.filename.endswith(".npy")
                ]
            total = sum(i.file_size for i in infos)
            for info in infos:
                limit = min(max_member, (budget or {}).get(info.filename.removesuffix(".npy"), max_member))
                if info.file_size > limit:
                    raise BadInputError(
                        f"{what} member {info.filename[:60]!r} expands to {info.file_size} bytes, over the "
                        f"{limit} byte limit (the manifest's shapes allow no more; a zip bomb?): rebuild the bundle"
                    )
            if total > max_total:
                raise BadInputError(
                    f"{what} expands to {total} bytes, over the {max_total} byte limit (a zip bomb?): rebuild the bundle"
                )
            out: dict[str, np.ndarray] = {}
            for info in infos:
                if not info.filename.endswith(".npy") or "/" in info.filename:
                    raise BadInputError(
                        f"{what} member {info.filename[:60]!r} is not a .npy array: rebuild the bundle"
                    )
                with zf.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                    elif version in ((2, 0), (3, 0)):
                        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                    else:
                        raise ValueError(f"unknown .npy version {version}")
                    if dtype.hasobject:
                        raise BadInputError(
                            f"{what} member {info.filename[:60]!r} holds Python objects (pickle): rebuild the bundle"
                        )
                    count = math.prod(int(d) for d in shape)
                    nbytes = count * dtype.itemsize
                    if nbytes > info.file_size:
                        raise BadInputError(
                            f"{what} member {info.filename[:60]!r} declares {nbytes} bytes of data in "
                            f"{info.file_size} bytes: rebuild the bundle"
                        )
                    arr = np.empty(count, dtype=dtype)
                    got = _read_into(f, arr, nbytes)
                if got != nbytes:
                    raise BadInputError(
                        f"{what} member {info.filename[:60]!r} is truncated: rebuild the bundle"
                    )
                arr = arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)
                out[info.filename[: -len(".npy")]] = arr
            return out
    except (BadInputError, GateFailedError):
        raise
    except (OSError, zipfile.BadZipFile, ValueError, EOFError, TypeError) as e:
        text = str(e).strip().splitlines()
        raise BadInputError(
            f"cannot read {what} ({text[0][:120] if text else type(e).__name__}): rebuild the bundle"
        ) from None


@dataclass(frozen=True)
class Golden:
    """A split's ``golden.npz``: what the export computed, which ``verify`` and ``run`` replay."""

    input: np.ndarray
    """The preprocessed images, float32 [N, C, H, W]."""
    boundary: np.ndarray
    """The boundary as transmitted (float32, float16 or uint8)."""
    logits: np.ndarray
    """The full PyTorch model's logits, float32 [N, K]."""
    labels: np.ndarray
    """int64 [N], -1 where unknown."""
    logits_int8: np.ndarray | None
    """(int8 targets) what the INT8 QDQ pair computed at export; None when not stored."""

    @property
    def images(self) -> int:
        """How many golden images it holds."""
        return int(self.input.shape[0])


def load_golden(path: Path, what: str, budget: Mapping[str, int] | None = None) -> Golden:
    """A split's ``golden.npz``, size-bounded: ``input``, ``boundary``, ``logits`` and ``labels`` (-1 when unknown),
    and ``logits_int8`` where stored; only those members are read, each within ``budget`` (:func:`golden_budget`)."""
    golden = load_npz_bounded(path, what, members=GOLDEN_MEMBERS, budget=budget)
    missing = [k for k in ("input", "boundary", "logits") if k not in golden]
    if missing:
        raise BadInputError(f"{what} lacks {', '.join(missing)}: rebuild the bundle")
    n = golden["input"].shape[0] if golden["input"].ndim else 0
    if n == 0:
        raise BadInputError(f"{what} holds no golden input: rebuild the bundle")
    return Golden(
        input=golden["input"],
        boundary=golden["boundary"],
        logits=golden["logits"],
        labels=golden.get("labels", np.full(n, -1, dtype=np.int64)),
        logits_int8=golden.get("logits_int8"),
    )


@dataclass(frozen=True)
class CalibrationSet:
    """A bundle's ``calibration/inputs.npz``: the preprocessed calibration images and their labels."""

    input: np.ndarray
    labels: np.ndarray


def load_calibration(path: Path, what: str) -> CalibrationSet:
    """``calibration/inputs.npz``, size-bounded: ``input`` and ``labels`` (-1 when unknown)."""
    data = load_npz_bounded(path, what, members=("input", "labels"))
    if "input" not in data or data["input"].ndim == 0:
        raise BadInputError(f"{what} holds no calibration input: rebuild the bundle")
    n = data["input"].shape[0]
    return CalibrationSet(input=data["input"], labels=data.get("labels", np.full(n, -1, dtype=np.int64)))
