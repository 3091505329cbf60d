"""Bounded ``.npz`` loading: zip and ``.npy`` headers checked before anything is decompressed, no pickle."""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

from isplit_export.contract.schema import MAX_NPZ_MEMBER_BYTES, MAX_NPZ_MEMBERS, MAX_NPZ_TOTAL_BYTES
from isplit_export.errors import BadInputError, GateFailedError


def load_npz_bounded(path: Path, what: str, *, max_member: int = MAX_NPZ_MEMBER_BYTES,
                     max_total: int = MAX_NPZ_TOTAL_BYTES, max_members: int = MAX_NPZ_MEMBERS) -> dict[str, np.ndarray]:  # fmt: skip
    """Arrays of an ``.npz`` with the decompressed size bounded per member and in total, no pickle.

    The zip's central directory (declared sizes) and each ``.npy`` header (shape x itemsize) are
    checked before a byte is decompressed; the reader never returns more than the declared size.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if len(infos) > max_members:
                raise BadInputError(f"{what} has {len(infos)} members, over the limit of {max_members}: rebuild the bundle")
            total = sum(i.file_size for i in infos)
            for info in infos:
                if info.file_size > max_member:
                    raise BadInputError(
                        f"{what} member {info.filename[:60]!r} expands to {info.file_size} bytes, over the "
                        f"{max_member} byte limit (a zip bomb?): rebuild the bundle"
                    )
            if total > max_total:
                raise BadInputError(
                    f"{what} expands to {total} bytes, over the {max_total} byte limit (a zip bomb?): rebuild the bundle"
                )
            out: dict[str, np.ndarray] = {}
            for info in infos:
                if not info.filename.endswith(".npy") or "/" in info.filename:
                    raise BadInputError(f"{what} member {info.filename[:60]!r} is not a .npy array: rebuild the bundle")
                with zf.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                    elif version in ((2, 0), (3, 0)):
                        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                    else:
                        raise ValueError(f"unknown .npy version {version}")
                    if dtype.hasobject:
                        raise BadInputError(f"{what} member {info.filename[:60]!r} holds Python objects (pickle): rebuild the bundle")
                    count = math.prod(int(d) for d in shape)
                    nbytes = count * dtype.itemsize
                    if nbytes > info.file_size:
                        raise BadInputError(
                            f"{what} member {info.filename[:60]!r} declares {nbytes} bytes of data in "
                            f"{info.file_size} bytes: rebuild the bundle"
                        )
                    body = f.read(nbytes)
                if len(body) != nbytes:
                    raise BadInputError(f"{what} member {info.filename[:60]!r} is truncated: rebuild the bundle")
                arr = np.frombuffer(body, dtype=dtype, count=count)
                arr = arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)
                out[info.filename[: -len(".npy")]] = np.array(arr)
            return out
    except (BadInputError, GateFailedError):
        raise
    except (OSError, zipfile.BadZipFile, ValueError, EOFError, TypeError) as e:
        text = str(e).strip().splitlines()
        raise BadInputError(f"cannot read {what} ({text[0][:120] if text else type(e).__name__}): rebuild the bundle") from None


def load_golden(path: Path, what: str) -> dict[str, np.ndarray]:
    """A split's ``golden.npz``, size-bounded: ``input``, ``boundary``, ``logits`` and ``labels`` (-1 when unknown)."""
    golden = load_npz_bounded(path, what)
    missing = [k for k in ("input", "boundary", "logits") if k not in golden]
    if missing:
        raise BadInputError(f"{what} lacks {', '.join(missing)}: rebuild the bundle")
    n = golden["input"].shape[0] if golden["input"].ndim else 0
    if n == 0:
        raise BadInputError(f"{what} holds no golden input: rebuild the bundle")
    golden.setdefault("labels", np.full(n, -1, dtype=np.int64))
    return golden
