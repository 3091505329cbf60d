"""Strict, bounded JSON (:func:`read_json`) and the field checks that name the bad field in one line."""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from isplit_export.contract.schema import (
    _BRACKETS,
    _HEX64,
    _STRINGS,
    MAX_FLOPS,
    MAX_JSON_BYTES,
    MAX_JSON_DEPTH,
    RUN_FILE,
    VERIFY_FILE,
)
from isplit_export.errors import BadInputError, GateFailedError


def _rebuild(where: str) -> str:
    """The fix named at the end of each line: verify.json is re-made by verify, the rest by an export."""
    if where.endswith(VERIFY_FILE):
        return "re-run isplit-export verify, or plan with --estimated"
    if where.endswith(RUN_FILE):
        return "re-run isplit-export run, or plan with --estimated"
    return "rebuild the bundle (isplit-export MODEL --out DIR)"


# --------------------------------------------------------------------------------------------------
# strict, bounded JSON


def json_depth(text: str) -> int:
    """Deepest ``[``/``{`` nesting of a JSON text, counted outside strings, without parsing it."""
    depth = deepest = 0
    for ch in _BRACKETS.findall(_STRINGS.sub('""', text)):
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def parse_json(
    data: bytes, what: str, *, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH
) -> Any:
    """Strict JSON from bytes: UTF-8, at most ``max_bytes`` and ``max_depth`` deep, no NaN/Infinity, no duplicate keys."""
    if len(data) > max_bytes:
        raise BadInputError(f"{what} is {len(data)} bytes, over the {max_bytes} byte limit: {_rebuild(what)}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInputError(f"{what} is not UTF-8 text: {_rebuild(what)}") from None
    depth = json_depth(text)
    if depth > max_depth:
        raise BadInputError(
            f"{what} nests {depth} levels deep, over the limit of {max_depth}: {_rebuild(what)}"
        )
    try:
        return json.loads(text, parse_constant=_no_constant, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as e:
        raise BadInputError(
            f"{what} is not valid JSON ({e.msg} at line {e.lineno}): {_rebuild(what)}"
        ) from None
    except (ValueError, RecursionError) as e:
        raise BadInputError(f"{what} is not strict JSON ({e}): {_rebuild(what)}") from None


def _read_bytes(path: Path, what: str, limit: int) -> bytes:
    """Up to ``limit`` + 1 bytes of a regular file (never a symlink, a FIFO or a device)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise BadInputError(f"{what} not found: {_rebuild(what)}") from None
    except OSError as e:
        raise BadInputError(f"cannot read {what} ({e.strerror}): fix its permissions") from None
    if stat.S_ISLNK(st.st_mode):
        raise GateFailedError(f"{what} is a symlink; a bundle holds none: {_rebuild(what)}")
    if not stat.S_ISREG(st.st_mode):
        raise BadInputError(f"{what} is not a regular file: {_rebuild(what)}")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as f:
            return f.read(limit + 1)
    except OSError as e:
        raise BadInputError(f"cannot read {what} ({e.strerror}): fix its permissions") from None


def read_json(path: Path, what: str, *, max_bytes: int = MAX_JSON_BYTES) -> dict[str, Any]:
    """A strict, bounded JSON object from ``path`` (see :func:`parse_json`); symlinks refused."""
    data = parse_json(_read_bytes(Path(path), what, max_bytes), what, max_bytes=max_bytes)
    if not isinstance(data, dict):
        raise BadInputError(f"{what} is not a JSON object: {_rebuild(what)}")
    return data


# --------------------------------------------------------------------------------------------------
# field checks: one line naming the field


def _bad(source: str, field: str, want: str, got: Any) -> BadInputError:
    shown = (
        type(got).__name__
        if not isinstance(got, (int, float, str)) or isinstance(got, bool)
        else repr(got)[:40]
    )
    return BadInputError(f"{source}: field '{field}' must be {want}, got {shown}: {_rebuild(source)}")


def req_dict(obj: Mapping[str, Any], key: str, source: str, field: str | None = None) -> dict[str, Any]:
    """``obj[key]``, which must be a JSON object."""
    v = obj.get(key)
    if not isinstance(v, dict):
        raise _bad(source, field or key, "an object", v)
    return v


def opt_dict(obj: Mapping[str, Any], key: str, source: str, field: str | None = None) -> dict[str, Any]:
    """``obj[key]`` as an object, ``{}`` when absent or null."""
    v = obj.get(key)
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise _bad(source, field or key, "an object or null", v)
    return v


def req_str(
    obj: Mapping[str, Any], key: str, source: str, field: str | None = None, *, optional: bool = False
) -> str | None:
    """``obj[key]`` as a non-empty string (or None when ``optional`` and absent/null)."""
    v = obj.get(key)
    if v is None and optional:
        return None
    if not isinstance(v, str) or not v or len(v) > 4096:
        raise _bad(source, field or key, "a non-empty string", v)
    return v


def req_int(
    obj: Mapping[str, Any],
    key: str,
    source: str,
    field: str | None = None,
    *,
    lo: int = 0,
    hi: int = 1 << 62,
    optional: bool = False,
) -> int | None:
    """``obj[key]`` as an integer in ``[lo, hi]`` (booleans and floats refused)."""
    v = obj.get(key)
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise _bad(source, field or key, f"an integer in [{lo}, {hi}]", v)
    return v


def req_number(
    obj: Mapping[str, Any],
    key: str,
    source: str,
    field: str | None = None,
    *,
    lo: float = 0.0,
    hi: float = MAX_FLOPS,
    positive: bool = False,
    optional: bool = False,
) -> float | None:
    """``obj[key]`` as a finite number in ``[lo, hi]`` (``> lo`` with ``positive``)."""
    v = obj.get(key)
    if v is None and optional:
        return None
    if (
        not isinstance(v, (int, float))
        or isinstance(v, bool)
        or not (math.isfinite(v) and lo <= v <= hi and (v > lo or not positive))
    ):
        want = f"a finite number in ({lo:g}, {hi:g}]" if positive else f"a finite number in [{lo:g}, {hi:g}]"
        raise _bad(source, field or key, want, v)
    return float(v)


def check_sha256_text(value: Any, what: str) -> str:
    """``value`` as a lower-case hex sha256 (64 characters), else one line naming ``what``."""
    if not isinstance(value, str) or not _HEX64.match(value.strip().lower()):
        raise BadInputError(
            f"{what} {str(value)[:80]!r} is not a sha256: pass the 64 hex digits CI published"
        )
    return value.strip().lower()
