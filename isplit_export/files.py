"""Byte-level helpers shared by every stage: hashing, deterministic and atomic writers.

Everything written here is reproducible: the same data gives the same bytes (no timestamps, fixed
ordering), which is what lets two runs of the same command produce identical bundles.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

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


def umask() -> int:
    """The process umask (read without changing it for longer than one call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _chmod_default(path: Path, *, directory: bool) -> None:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would (0666/0777 minus the umask): mkstemp and
    mkdtemp create 0600/0700, which an artefact server or a device service account cannot read."""
    os.chmod(path, (0o777 if directory else 0o666) & ~umask())


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file + rename: never a half-written file, never
    written through a symlink at ``path``; the mode follows the umask."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        _chmod_default(Path(tmp), directory=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically, see :func:`write_bytes_atomic`."""
    write_bytes_atomic(path, text.encode("utf-8"))


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


def jsonable(value: Any) -> Any:
    """An options value as JSON data: paths as POSIX text, tuples as lists, dataclasses as objects."""
    if isinstance(value, Path):
        return value.as_posix()
    if isinstance(value, tuple):
        return [jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value
