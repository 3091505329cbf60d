"""The containment rule: a bundle path is relative, has no ``..``, crosses no symlink, stays inside."""

from __future__ import annotations

import os
import posixpath
import stat
from pathlib import Path, PurePosixPath
from typing import Any

from isplit_export.contract.schema import MANIFEST_FILE
from isplit_export.errors import BadInputError, GateFailedError


def check_rel(rel: Any, what: str) -> PurePosixPath:
    """A bundle path as written in a manifest: a relative POSIX path without ``..``, empty or odd parts."""
    if not isinstance(rel, str) or not rel or "\x00" in rel or "\\" in rel or len(rel) > 1024:
        raise GateFailedError(
            f"{what} lists {str(rel)[:80]!r}, which is not a path inside the bundle: rebuild the bundle"
        )
    p = PurePosixPath(rel)
    if p.is_absolute() or any(part in ("..", ".", "") for part in rel.split("/")):
        raise GateFailedError(
            f"{what} lists {rel!r}, which is not a path inside the bundle: rebuild the bundle"
        )
    return p


def join_rel(base: str, rel: Any, what: str) -> str:
    """``rel`` relative to the bundle folder ``base`` (e.g. ``../../x.onnx`` from a split folder),
    normalised into a bundle path; refused if it leaves the bundle."""
    if not isinstance(rel, str) or not rel or "\x00" in rel or "\\" in rel or rel.startswith("/"):
        raise GateFailedError(
            f"{what} names {str(rel)[:80]!r}, which is not a path inside the bundle: rebuild the bundle"
        )
    joined = posixpath.normpath(posixpath.join(base, rel))
    if joined.startswith("../") or joined in ("..", ".") or joined.startswith("/"):
        raise GateFailedError(f"{what} names {rel!r}, which leaves the bundle: rebuild the bundle")
    check_rel(joined, what)
    return joined


def bundle_path(bundle: Path, rel: Any, what: str = MANIFEST_FILE, *, must_exist: bool = True) -> Path:
    """``bundle / rel`` under the containment rule: relative, no ``..``, no symlink on the way, and
    inside the bundle after resolving. ``must_exist=False`` allows missing trailing parts (outputs)."""
    parts = check_rel(rel, what).parts
    root = Path(bundle).resolve()
    cur = root
    for i, part in enumerate(parts):
        cur = cur / part
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            if must_exist:
                return root.joinpath(*parts)  # the caller reports the missing file with its own words
            break
        except OSError as e:
            raise BadInputError(
                f"cannot read bundle path {rel} ({e.strerror}): fix its permissions"
            ) from None
        if stat.S_ISLNK(st.st_mode):
            raise GateFailedError(
                f"bundle path {rel} crosses a symlink ({'/'.join(parts[: i + 1])}); a bundle holds none: rebuild the bundle"
            )
    path = root.joinpath(*parts)
    try:
        path.resolve().relative_to(root)
    except ValueError:
        raise GateFailedError(f"bundle path {rel} resolves outside the bundle: rebuild the bundle") from None
    return path


def bundle_root(bundle: Path | str) -> Path:
    """The bundle folder, which must be a directory holding ``manifest.json``."""
    b = Path(bundle)
    if not b.is_dir():
        raise BadInputError(f"bundle directory {b} not found: pass the --out folder of an isplit-export run")
    return b
