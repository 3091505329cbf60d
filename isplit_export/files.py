"""Byte-level helpers shared by every stage: hashing, deterministic writers, atomic directories.

Everything written here is reproducible: the same data gives the same bytes (no timestamps, fixed
ordering), which is what lets two runs of the same command produce identical bundles.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from isplit_export.errors import BadInputError

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, streamed in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def json_dumps(obj: Any) -> str:
    """Canonical JSON text: 2-space indent, insertion order, trailing newline, no NaN."""
    return json.dumps(obj, indent=2, allow_nan=False) + "\n"


def write_json(path: Path, obj: Any) -> None:
    """Write :func:`json_dumps` of ``obj`` to ``path``."""
    path.write_text(json_dumps(obj), encoding="utf-8")


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file + rename: never a half-written file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write an ``.npz`` that ``np.load`` reads, byte-identical for identical arrays.

    ``np.savez`` stamps the current time into the zip headers; this writer uses a fixed date and
    stores the members in the given order, uncompressed.
    """
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Read an ``.npz`` fully into memory (never with pickle)."""
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def check_out(out: Path, *, force: bool) -> None:
    """Refuse an existing ``out`` unless ``force``, and a file in its place always (BadInputError)."""
    if out.exists() and not force:
        raise BadInputError(f"output directory {out} already exists: pass --force to replace it, or choose another --out")
    if out.exists() and not out.is_dir():
        raise BadInputError(f"--out {out} is a file, not a directory: choose another --out")


@contextlib.contextmanager
def atomic_directory(out: Path, *, force: bool) -> Iterator[Path]:
    """Yield a fresh temporary directory that becomes ``out`` only if the block succeeds.

    The temporary directory sits next to ``out`` (same file system, so the final step is a rename).
    An existing ``out`` is refused unless ``force``; with ``force`` it is replaced only after the new
    content is complete, so an interrupted or failed run never leaves ``out`` half-written.
    """
    out = Path(out)
    check_out(out, force=force)
    parent = out.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
    try:
        yield tmp
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
