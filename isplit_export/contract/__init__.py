"""The bundle contract, owned in one place: every reader of a bundle goes through this module.

A bundle travels (CI -> artefact store -> device), so every reader treats it as hostile input
(SPEC section 5). This module is the lowest layer (stdlib, numpy, :mod:`errors`, :mod:`files`; no
torch, no onnx) and holds:

- the schema constants and file names (:data:`SCHEMA`, :data:`MANIFEST_FILE`, ...);
- strict, bounded JSON reading (:func:`read_json`): size and nesting depth capped, no NaN/Infinity,
  no duplicate keys, a JSON object at the top;
- :func:`read_manifest`: the manifest's bytes are read once, hashed (:attr:`Manifest.sha256`) and
  validated: the type of every field the tools use, with one line naming the field;
- the containment rule (:func:`bundle_path`): a bundle path is relative, has no ``..``, crosses no
  symlink, and still lies inside the bundle after resolving;
- hashes (:func:`check_files`, :func:`check_listed`), and the provenance pin
  (:func:`check_expected_sha256`: the manifest's sha256 must be the one CI published);
- bounded ``.npz`` loading (:func:`load_npz_bounded`): zip and ``.npy`` headers are checked before
  anything is decompressed, no pickle;
- validated accessors for ``ranking.json`` (:func:`read_ranking`), ``verify.json``
  (:func:`read_verify_latencies`) and ``engine_plan.json`` (:func:`read_engine_plan`);
- one split selection rule (:func:`select_splits`: 1-based position, which equals ``rank``).

Errors: a malformed file is :class:`BadInputError` (exit 2); a file that does not match its hash, a
path leaving the bundle, a symlink, or a manifest other than the pinned one is
:class:`GateFailedError` (exit 1, "tampered").
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import posixpath
import re
import stat
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from isplit_export.errors import BadInputError, GateFailedError
from isplit_export.files import sha256_file

SCHEMA = "isplit.bundle/1"
MANIFEST_FILE = "manifest.json"
RANKING_FILE = "ranking.json"
REPORT_FILE = "report.md"
VERIFY_FILE = "verify.json"
RUN_FILE = "run.json"
RUN_SCHEMA = "isplit.run/1"
PLAN_FILE = "plan.json"
ENGINE_PLAN_FILE = "engine_plan.json"
ENGINE_PLAN_SCHEMA = "isplit.engine_plan/1"
ENGINES_DIR = "engines"
"""Inside a split folder: the only place ``build-engines`` writes (engines, timing cache, build.json)."""
RANKING_SCHEMA_PREFIX = "isplit.ranking/"
RANK_OUTPUT_FILES = frozenset({"ranking.json", "cui.png", "cde.png", "tradeoff.png"})
"""What ``isplit-export rank --out`` writes: a folder holding only these is a rank output of this tool."""

MAX_JSON_BYTES = 64 << 20
"""Largest JSON file a reader accepts (a resnet50 bundle's manifest is ~100 KB, its ranking ~1 MB)."""
MAX_JSON_DEPTH = 64
"""Deepest nesting of ``[``/``{`` accepted (our files nest < 10 deep); deeper is refused before parsing."""
MAX_NPZ_MEMBER_BYTES = 512 << 20
"""Largest decompressed ``.npy`` member of an ``.npz`` (a golden input batch is a few MB)."""
MAX_NPZ_TOTAL_BYTES = 1 << 30
"""Largest decompressed total of one ``.npz``."""
MAX_NPZ_MEMBERS = 64

MAX_MS = 1e7
"""Largest latency figure accepted (ms; about 3 hours per image)."""
MAX_FLOPS = 1e18
MAX_DIM = 1 << 31
MAX_ELEMENTS = 1 << 40

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_TENSOR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:/-]{0,127}$")
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_BRACKETS = re.compile(r"[\[\]{}]")


def _rebuild(where: str) -> str:
    """The fix named at the end of each line: verify.json is re-made by verify, the rest by an export."""
    if where.endswith(VERIFY_FILE):
        return "re-run isplit-export verify, or plan with --estimated"
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


def parse_json(data: bytes, what: str, *, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Strict JSON from bytes: UTF-8, at most ``max_bytes`` and ``max_depth`` deep, no NaN/Infinity, no duplicate keys."""
    if len(data) > max_bytes:
        raise BadInputError(f"{what} is {len(data)} bytes, over the {max_bytes} byte limit: {_rebuild(what)}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInputError(f"{what} is not UTF-8 text: {_rebuild(what)}") from None
    depth = json_depth(text)
    if depth > max_depth:
        raise BadInputError(f"{what} nests {depth} levels deep, over the limit of {max_depth}: {_rebuild(what)}")
    try:
        return json.loads(text, parse_constant=_no_constant, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as e:
        raise BadInputError(f"{what} is not valid JSON ({e.msg} at line {e.lineno}): {_rebuild(what)}") from None
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
    shown = type(got).__name__ if not isinstance(got, (int, float, str)) or isinstance(got, bool) else repr(got)[:40]
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


def req_str(obj: Mapping[str, Any], key: str, source: str, field: str | None = None, *, optional: bool = False) -> str | None:
    """``obj[key]`` as a non-empty string (or None when ``optional`` and absent/null)."""
    v = obj.get(key)
    if v is None and optional:
        return None
    if not isinstance(v, str) or not v or len(v) > 4096:
        raise _bad(source, field or key, "a non-empty string", v)
    return v


def req_int(obj: Mapping[str, Any], key: str, source: str, field: str | None = None, *, lo: int = 0,
            hi: int = 1 << 62, optional: bool = False) -> int | None:  # fmt: skip
    """``obj[key]`` as an integer in ``[lo, hi]`` (booleans and floats refused)."""
    v = obj.get(key)
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise _bad(source, field or key, f"an integer in [{lo}, {hi}]", v)
    return v


def req_number(obj: Mapping[str, Any], key: str, source: str, field: str | None = None, *, lo: float = 0.0,
               hi: float = MAX_FLOPS, positive: bool = False, optional: bool = False) -> float | None:  # fmt: skip
    """``obj[key]`` as a finite number in ``[lo, hi]`` (``> lo`` with ``positive``)."""
    v = obj.get(key)
    if v is None and optional:
        return None
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not (
        math.isfinite(v) and lo <= v <= hi and (v > lo or not positive)
    ):
        want = f"a finite number in ({lo:g}, {hi:g}]" if positive else f"a finite number in [{lo:g}, {hi:g}]"
        raise _bad(source, field or key, want, v)
    return float(v)


def check_sha256_text(value: Any, what: str) -> str:
    """``value`` as a lower-case hex sha256 (64 characters), else one line naming ``what``."""
    if not isinstance(value, str) or not _HEX64.match(value.strip().lower()):
        raise BadInputError(f"{what} {str(value)[:80]!r} is not a sha256: pass the 64 hex digits CI published")
    return value.strip().lower()


# --------------------------------------------------------------------------------------------------
# paths: the containment rule


def check_rel(rel: Any, what: str) -> PurePosixPath:
    """A bundle path as written in a manifest: a relative POSIX path without ``..``, empty or odd parts."""
    if not isinstance(rel, str) or not rel or "\x00" in rel or "\\" in rel or len(rel) > 1024:
        raise GateFailedError(f"{what} lists {str(rel)[:80]!r}, which is not a path inside the bundle: rebuild the bundle")
    p = PurePosixPath(rel)
    if p.is_absolute() or any(part in ("..", ".", "") for part in rel.split("/")):
        raise GateFailedError(f"{what} lists {rel!r}, which is not a path inside the bundle: rebuild the bundle")
    return p


def join_rel(base: str, rel: Any, what: str) -> str:
    """``rel`` relative to the bundle folder ``base`` (e.g. ``../../x.onnx`` from a split folder),
    normalised into a bundle path; refused if it leaves the bundle."""
    if not isinstance(rel, str) or not rel or "\x00" in rel or "\\" in rel or rel.startswith("/"):
        raise GateFailedError(f"{what} names {str(rel)[:80]!r}, which is not a path inside the bundle: rebuild the bundle")
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
            raise BadInputError(f"cannot read bundle path {rel} ({e.strerror}): fix its permissions") from None
        if stat.S_ISLNK(st.st_mode):
            raise GateFailedError(f"bundle path {rel} crosses a symlink ({'/'.join(parts[: i + 1])}); a bundle holds none: rebuild the bundle")
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


# --------------------------------------------------------------------------------------------------
# the manifest


@dataclass(frozen=True)
class Manifest:
    """A validated manifest: its parsed ``data``, the sha256 of the exact bytes parsed, and the bundle."""

    bundle: Path
    data: dict[str, Any]
    sha256: str

    @property
    def splits(self) -> list[dict[str, Any]]:
        return list(self.data["splits"])

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        return dict(self.data["files"])


def _validate_split(s: Any, i: int, src: str) -> None:
    f = f"splits[{i}]"
    if not isinstance(s, dict):
        raise _bad(src, f, "an object", s)
    check_rel(req_str(s, "dir", src, f"{f}.dir"), f"{src} {f}.dir")
    files = req_dict(s, "files", src, f"{f}.files")
    for k, v in files.items():
        req_str(files, k, src, f"{f}.files.{k}")
        check_rel(v, f"{src} {f}.files.{k}")
    if s.get("rank") is not None and req_int(s, "rank", src, f"{f}.rank", lo=1) != i + 1:
        raise BadInputError(f"{src}: field '{f}.rank' must be {i + 1} (splits are stored in rank order): {_rebuild(src)}")
    req_int(s, "index", src, f"{f}.index", optional=True)
    req_str(s, "node", src, f"{f}.node", optional=True)
    b = opt_dict(s, "boundary", src, f"{f}.boundary")
    req_str(b, "encoding", src, f"{f}.boundary.encoding", optional=True)
    req_str(b, "dtype", src, f"{f}.boundary.dtype", optional=True)
    req_int(b, "bytes_per_image", src, f"{f}.boundary.bytes_per_image", lo=0, hi=MAX_ELEMENTS * 8, optional=True)
    req_number(b, "scale", src, f"{f}.boundary.scale", lo=0.0, hi=1e30, positive=True, optional=True)
    req_int(b, "zero_point", src, f"{f}.boundary.zero_point", lo=0, hi=255, optional=True)


def _validate_latencies(lat: Mapping[str, Any], src: str, field: str) -> None:
    for key, v in lat.items():
        if v is not None:
            req_number(lat, key, src, f"{field}.{key}", lo=0.0, hi=MAX_MS, positive=True)


def validate_manifest(m: Any, src: str = MANIFEST_FILE) -> dict[str, Any]:
    """Check the schema and the type of every field the tools read; one :class:`BadInputError` line naming the field."""
    if not isinstance(m, dict):
        raise BadInputError(f"{src} is not a JSON object: {_rebuild(src)}")
    if m.get("schema") != SCHEMA:
        raise BadInputError(
            f"{src} has schema {str(m.get('schema'))[:40]!r}, expected {SCHEMA!r}: rebuild the bundle with this isplit-export version"
        )
    files = req_dict(m, "files", src)
    for rel in files:
        check_rel(rel, f"{src} files")
        e = req_dict(files, rel, src, f"files.{rel}")
        check_sha256_text(e.get("sha256"), f"{src} files.{rel}.sha256")
        req_int(e, "bytes", src, f"files.{rel}.bytes", optional=True)
    splits = m.get("splits")
    if not isinstance(splits, list):
        raise _bad(src, "splits", "a list", splits)
    for i, s in enumerate(splits):
        _validate_split(s, i, src)
    req_str(m, "boundary_encoding", src, optional=True)
    ranking = opt_dict(m, "ranking", src)
    req_str(ranking, "file", src, "ranking.file", optional=True)
    if ranking.get("file") is not None:
        check_rel(ranking["file"], f"{src} ranking.file")
    req_int(ranking, "top", src, "ranking.top", lo=1, optional=True)
    target = opt_dict(m, "target", src)
    req_str(target, "name", src, "target.name", optional=True)
    options = opt_dict(m, "options", src)
    req_str(options, "objective", src, "options.objective", optional=True)
    req_str(options, "server", src, "options.server", optional=True)
    cons = opt_dict(options, "constraints", src, "options.constraints")
    for k in cons:
        if k not in ("max_head_flops", "max_boundary_kib", "max_latency_ms"):
            raise BadInputError(f"{src}: field 'options.constraints.{k}' is not a constraint: {_rebuild(src)}")
        req_number(cons, k, src, f"options.constraints.{k}", hi=1e12, positive=True, optional=True)
    inp = opt_dict(m, "input", src)
    name = req_str(inp, "name", src, "input.name", optional=True)
    if name is not None and not _TENSOR_NAME.match(name):
        raise _bad(src, "input.name", "a tensor name", name)
    run = opt_dict(m, "run", src)
    if run.get("report_sha256") is not None:
        check_sha256_text(run["report_sha256"], f"{src} run.report_sha256")
    req_str(run, "host", src, "run.host", optional=True)
    lat = opt_dict(run, "latency_ms", src, "run.latency_ms")
    for rel in lat:
        _validate_latencies(req_dict(lat, rel, src, f"run.latency_ms.{rel}"), src, f"run.latency_ms.{rel}")
    return m


def read_manifest(bundle: Path | str) -> Manifest:
    """Read ``bundle/manifest.json`` once, hash those bytes and validate them (see :func:`validate_manifest`)."""
    root = bundle_root(bundle)
    path = root / MANIFEST_FILE
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise BadInputError(
            f"{path} not found: {root} is not an isplit-export bundle (create one with isplit-export MODEL --out DIR)"
        ) from None
    except OSError as e:
        raise BadInputError(f"cannot read {path} ({e.strerror}): fix its permissions") from None
    if stat.S_ISLNK(st.st_mode):
        raise GateFailedError(f"{path} is a symlink; a bundle holds none: rebuild the bundle")
    raw = _read_bytes(path, str(path), MAX_JSON_BYTES)
    data = validate_manifest(parse_json(raw, str(path)), str(path))
    return Manifest(root, data, hashlib.sha256(raw).hexdigest())


def load_manifest(bundle: Path | str) -> dict[str, Any]:
    """The validated manifest dict of ``bundle`` (:func:`read_manifest` without the hash)."""
    return read_manifest(bundle).data


def manifest_sha256(bundle: Path | str) -> str:
    """sha256 of ``bundle/manifest.json``: the value CI publishes and ``--expect-sha256`` pins."""
    return read_manifest(bundle).sha256


def check_expected_sha256(manifest: Manifest | Path | str, expected: str | None) -> str:
    """Refuse a manifest whose sha256 is not ``expected`` (the value CI published); returns the actual hash.

    ``expected=None`` checks nothing. Reusable by every reader (verify, plan, build-engines, serve).
    """
    m = manifest if isinstance(manifest, Manifest) else read_manifest(manifest)
    if expected is None:
        return m.sha256
    want = check_sha256_text(expected, "--expect-sha256")
    if m.sha256 != want:
        raise GateFailedError(
            f"manifest.json has sha256 {m.sha256[:16]}..., not the expected {want[:16]}...: this is not the bundle "
            "CI published (tampered or another build): fetch the published bundle"
        )
    return m.sha256


def is_tool_bundle(path: Path) -> bool:
    """True when ``path`` holds a readable ``manifest.json`` of schema :data:`SCHEMA` (used by ``--force``)."""
    try:
        data = parse_json(_read_bytes(Path(path) / MANIFEST_FILE, MANIFEST_FILE, MAX_JSON_BYTES), MANIFEST_FILE)
    except (BadInputError, GateFailedError):
        return False
    return isinstance(data, dict) and data.get("schema") == SCHEMA


def is_rank_output(path: Path) -> bool:
    """True when ``path`` holds only what ``rank --out`` writes, with a ranking.json of ours."""
    try:
        names = {p.name for p in Path(path).iterdir()}
        data = parse_json(_read_bytes(Path(path) / RANKING_FILE, RANKING_FILE, MAX_JSON_BYTES), RANKING_FILE)
    except (OSError, BadInputError, GateFailedError):
        return False
    schema = data.get("schema") if isinstance(data, dict) else None
    return names <= RANK_OUTPUT_FILES and isinstance(schema, str) and schema.startswith(RANKING_SCHEMA_PREFIX)


# --------------------------------------------------------------------------------------------------
# hashes


def _hash_one(bundle: Path, rel: str, expected: str) -> Path:
    path = bundle_path(bundle, rel)
    if not path.is_file():
        raise GateFailedError(
            f"bundle file {rel} is missing (listed in manifest.json): rebuild the bundle or restore the file"
        )
    try:
        actual = sha256_file(path)
    except OSError as e:
        raise BadInputError(f"cannot read bundle file {rel} ({e.strerror}): fix its permissions") from None
    if actual != expected:
        raise GateFailedError(
            f"bundle file {rel} was modified (its sha256 differs from manifest.json): rebuild the bundle or restore the file"
        )
    return path


def check_files(bundle: Path | str, manifest: Manifest | Mapping[str, Any]) -> None:
    """Re-hash every file of ``manifest["files"]`` and ``report.md`` (``run.report_sha256``).

    Raises :class:`GateFailedError` naming the first missing, modified, symlinked or escaping file.
    Files the manifest does not list (``verify.json``, ``plan.json``, ``engines/``) are ignored.
    """
    data = manifest.data if isinstance(manifest, Manifest) else validate_manifest(dict(manifest))
    root = Path(bundle)
    for rel, entry in data["files"].items():
        _hash_one(root, rel, entry["sha256"])
    run = data.get("run") or {}
    if run.get("report_sha256") is not None:
        _hash_one(root, REPORT_FILE, run["report_sha256"])


def check_listed(manifest: Manifest, rel: str, what: str) -> Path:
    """The bundle file ``rel``, which must be listed (hashed) in the manifest; re-hashed here."""
    entry = manifest.data["files"].get(rel)
    if entry is None:
        raise GateFailedError(f"{what} {rel} is not listed (hashed) in manifest.json files: rebuild the bundle")
    return _hash_one(manifest.bundle, rel, entry["sha256"])


# --------------------------------------------------------------------------------------------------
# splits


def select_splits(manifest: Manifest | Mapping[str, Any], split: int | None) -> list[tuple[int, dict[str, Any]]]:
    """``(NN, entry)`` of the splits to use: all, or only split ``split`` (1-based position == its rank)."""
    data = manifest.data if isinstance(manifest, Manifest) else manifest
    splits: list[dict[str, Any]] = data["splits"]
    if not splits:
        raise BadInputError("this bundle has no splits: rebuild it with --top 1 or more")
    if split is None:
        return list(enumerate(splits, start=1))
    if isinstance(split, bool) or not isinstance(split, int) or not 1 <= split <= len(splits):
        raise BadInputError(f"split {split} out of range: this bundle has splits 1..{len(splits)}")
    return [(split, splits[split - 1])]


def split_file(manifest: Manifest | Mapping[str, Any], bundle: Path, entry: Mapping[str, Any], key: str) -> Path:
    """The split's file ``key`` (head, tail, golden...), which must be one of the hashed files."""
    data = manifest.data if isinstance(manifest, Manifest) else manifest
    rel = entry["files"].get(key)
    if not isinstance(rel, str):
        raise BadInputError(f"manifest.json split {entry['dir']} has no '{key}' file: rebuild the bundle")
    if rel not in data["files"]:
        raise GateFailedError(f"bundle file {rel} is not listed (hashed) in manifest.json files: rebuild the bundle")
    return bundle_path(Path(bundle), rel)


# --------------------------------------------------------------------------------------------------
# npz


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


# --------------------------------------------------------------------------------------------------
# ranking.json, verify.json, engine_plan.json


def _validate_ranking(r: dict[str, Any], src: str) -> dict[str, Any]:
    schema = r.get("schema")
    if schema is not None and (not isinstance(schema, str) or not schema.startswith(RANKING_SCHEMA_PREFIX)):
        raise _bad(src, "schema", f"{RANKING_SCHEMA_PREFIX}N", schema)
    total = req_int(r, "total_flops", src, lo=1, hi=int(MAX_FLOPS))
    req_int(r, "input_bytes", src, lo=4, hi=MAX_ELEMENTS * 4)
    req_str(r, "model", src, optional=True)
    req_int(r, "top", src, lo=1, optional=True)
    cands = r.get("candidates")
    if not isinstance(cands, list) or not cands:
        raise _bad(src, "candidates", "a non-empty list", cands)
    seen: set[int] = set()
    for i, c in enumerate(cands):
        f = f"candidates[{i}]"
        if not isinstance(c, dict):
            raise _bad(src, f, "an object", c)
        idx = req_int(c, "index", src, f"{f}.index", hi=1 << 20)
        if idx in seen:
            raise BadInputError(f"{src}: field '{f}.index' repeats cut {idx}: {_rebuild(src)}")
        seen.add(int(idx or 0))
        req_str(c, "node", src, f"{f}.node")
        req_str(c, "module", src, f"{f}.module", optional=True)
        req_number(c, "cui", src, f"{f}.cui", hi=1e30)
        req_number(c, "log10_cui", src, f"{f}.log10_cui", lo=-1e6, hi=1e6, optional=True)
        req_int(c, "rank", src, f"{f}.rank", lo=1, optional=True)
        req_number(c, "head_flops_share", src, f"{f}.head_flops_share", hi=1.0)
        req_number(c, "head_flops", src, f"{f}.head_flops", hi=float(total or 0), optional=True)
        shape = c.get("shape")
        if (not isinstance(shape, list) or not shape or len(shape) > 8
                or any(isinstance(d, bool) or not isinstance(d, int) or not 0 < d <= MAX_DIM for d in shape)
                or math.prod(shape) > MAX_ELEMENTS):  # fmt: skip
            raise _bad(src, f"{f}.shape", "a list of 1-8 positive dimensions", shape)
    return r


def read_ranking(manifest: Manifest) -> dict[str, Any]:
    """``ranking.json`` (``manifest.ranking.file``): listed, hashed, inside the bundle, then validated."""
    rel = (manifest.data.get("ranking") or {}).get("file") or RANKING_FILE
    path = check_listed(manifest, rel, "ranking")
    return _validate_ranking(read_json(path, rel), rel)


def read_verify_latencies(manifest: Manifest) -> list[dict[str, Any]]:
    """The rows of ``verify.json`` that carry ``latency_ms``, validated (finite, positive, bounded).

    ``verify.json`` is an output of ``verify``, not hashed; it is used only when it names this
    manifest (its ``manifest_sha256``), and every figure is checked. Absent: ``[]``.
    """
    path = manifest.bundle / VERIFY_FILE
    if not os.path.lexists(path):
        return []
    v = read_json(path, VERIFY_FILE)
    if v.get("manifest_sha256") != manifest.sha256:
        raise BadInputError(
            f"{VERIFY_FILE} belongs to another manifest (its manifest_sha256 differs): re-run isplit-export verify, "
            "or plan with --estimated"
        )
    rows = v.get("rows")
    if not isinstance(rows, list):
        raise _bad(VERIFY_FILE, "rows", "a list", rows)
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise _bad(VERIFY_FILE, f"rows[{i}]", "an object", row)
        lat = opt_dict(row, "latency_ms", VERIFY_FILE, f"rows[{i}].latency_ms")
        if not lat:
            continue
        _validate_latencies(lat, VERIFY_FILE, f"rows[{i}].latency_ms")
        for k in ("dir", "backend", "precision"):
            req_str(row, k, VERIFY_FILE, f"rows[{i}].{k}")
        out.append(row)
    return out


@dataclass(frozen=True)
class EnginePart:
    """One engine of a split's plan, with paths already checked: ``onnx`` hashed, ``engine`` inside ``engines/``."""

    onnx: Path
    engine: Path
    engine_rel: str
    dla_core: int | None
    input_name: str
    min_shape: list[int]
    opt_shape: list[int]
    max_shape: list[int]


@dataclass(frozen=True)
class EnginePlan:
    """A split's validated ``engine_plan.json``: where to read (hashed) and where to write (``engines/``)."""

    data: dict[str, Any]
    split_dir: Path
    precision: str
    workspace_mib: int
    timing_cache: Path
    record: Path
    parts: dict[str, EnginePart]


def engine_output(bundle: Path, split_rel: str, rel: Any, what: str) -> Path:
    """Where ``build-engines`` may write ``rel`` (relative to the split folder): inside the split's
    ``engines/`` folder, never through a symlink."""
    joined = join_rel(split_rel, rel, what)
    base = f"{split_rel}/{ENGINES_DIR}/"
    if not joined.startswith(base):
        raise GateFailedError(f"{what} names {rel!r}, outside {base}: build-engines writes only there; rebuild the bundle")
    return bundle_path(bundle, joined, what, must_exist=False)


def _shape(spec: Mapping[str, Any], key: str, src: str, field: str) -> list[int]:
    v = spec.get(key)
    if (not isinstance(v, list) or not v or len(v) > 8
            or any(isinstance(d, bool) or not isinstance(d, int) or not 0 < d <= 1 << 20 for d in v)):  # fmt: skip
        raise _bad(src, field, "a list of 1-8 positive dimensions", v)
    return list(v)


def read_engine_plan(manifest: Manifest, entry: Mapping[str, Any]) -> EnginePlan:
    """A split's ``engine_plan.json``: listed and hashed, every field typed, every input path hashed, every
    output path inside the split's ``engines/`` folder."""
    split_rel = str(entry["dir"])
    rel = f"{split_rel}/{ENGINE_PLAN_FILE}"
    if rel not in manifest.data["files"]:
        raise BadInputError(
            f"{rel} is not in the bundle: this split has no TensorRT plan (export with a Jetson or x86-tensorrt target)"
        )
    path = check_listed(manifest, rel, "engine plan")
    p = read_json(path, rel)
    if p.get("schema") != ENGINE_PLAN_SCHEMA:
        raise _bad(rel, "schema", repr(ENGINE_PLAN_SCHEMA), p.get("schema"))
    precision = req_str(p, "precision", rel)
    if precision not in ("fp32", "fp16", "int8"):
        raise _bad(rel, "precision", "fp32, fp16 or int8", precision)
    workspace = req_int(p, "workspace_mib", rel, lo=1, hi=1 << 20)
    req_str(p, "target", rel)
    timing = engine_output(manifest.bundle, split_rel, p.get("timing_cache"), f"{rel} timing_cache")
    record = engine_output(manifest.bundle, split_rel, p.get("record", f"{ENGINES_DIR}/build.json"),
                           f"{rel} record")  # fmt: skip
    engines = req_dict(p, "engines", rel)
    parts: dict[str, EnginePart] = {}
    for part in ("head", "tail"):
        spec = req_dict(engines, part, rel, f"engines.{part}")
        onnx_rel = join_rel(split_rel, spec.get("onnx"), f"{rel} engines.{part}.onnx")
        onnx = check_listed(manifest, onnx_rel, f"{rel} engines.{part}.onnx")
        engine_rel = req_str(spec, "engine", rel, f"engines.{part}.engine") or ""
        engine = engine_output(manifest.bundle, split_rel, engine_rel, f"{rel} engines.{part}.engine")
        dla = req_int(spec, "dla_core", rel, f"engines.{part}.dla_core", hi=7, optional=True)
        shapes = req_dict(spec, "input", rel, f"engines.{part}.input")
        name = req_str(shapes, "name", rel, f"engines.{part}.input.name") or ""
        if not _TENSOR_NAME.match(name):
            raise _bad(rel, f"engines.{part}.input.name", "a tensor name", name)
        parts[part] = EnginePart(
            onnx, engine, engine_rel, dla, name,
            *(_shape(shapes, k, rel, f"engines.{part}.input.{k}") for k in ("min", "opt", "max")),
        )  # fmt: skip
    return EnginePlan(p, bundle_path(manifest.bundle, split_rel), str(precision), int(workspace or 1), timing, record, parts)


def write_output(path: Path, data: bytes) -> None:
    """Write ``data`` to a checked output path through a temporary file + rename (never through a symlink)."""
    from isplit_export.files import write_bytes_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, data)


def _opt_number(obj: Mapping[str, Any], key: str, src: str, field: str) -> float | None:
    v = req_number(obj, key, src, field, lo=0.0, hi=MAX_MS, optional=True)
    return None if v is None else float(v)


def read_runs(manifest: Manifest) -> dict[str, dict[str, Any]]:
    """``run.json`` (``isplit-export run``) by split dir, every figure that ``plan`` uses validated.

    Like ``verify.json`` it is an output, not hashed: used only when it names this manifest (its
    ``manifest_sha256``), with every measured figure finite, non-negative and bounded. Absent: ``{}``.
    """
    path = manifest.bundle / RUN_FILE
    if not os.path.lexists(path):
        return {}
    bundle_path(manifest.bundle, RUN_FILE, RUN_FILE)  # no symlink, inside the bundle
    doc = read_json(path, RUN_FILE)
    if doc.get("schema") != RUN_SCHEMA:
        raise _bad(RUN_FILE, "schema", repr(RUN_SCHEMA), doc.get("schema"))
    if doc.get("manifest_sha256") != manifest.sha256:
        raise BadInputError(
            f"{RUN_FILE} belongs to another manifest (its manifest_sha256 differs): re-run isplit-export run, "
            "or plan with --estimated"
        )
    runs = req_dict(doc, "runs", RUN_FILE)
    for key, r in runs.items():
        f = f"runs.{key}"
        if not isinstance(r, dict):
            raise _bad(RUN_FILE, f, "an object", r)
        req_int(r, "index", RUN_FILE, f"{f}.index", optional=True)
        req_int(opt_dict(r, "images", RUN_FILE, f"{f}.images"), "ok", RUN_FILE, f"{f}.images.ok", optional=True)
        server = opt_dict(r, "server", RUN_FILE, f"{f}.server")
        for k in ("protocol", "address"):
            req_str(server, k, RUN_FILE, f"{f}.server.{k}", optional=True)
        for k in ("backend", "host"):
            req_str(r, k, RUN_FILE, f"{f}.{k}", optional=True)
        srv = opt_dict(opt_dict(r, "server_compute", RUN_FILE, f"{f}.server_compute"), "ms", RUN_FILE,
                       f"{f}.server_compute.ms")  # fmt: skip
        for k in ("p50", "mean"):
            _opt_number(srv, k, RUN_FILE, f"{f}.server_compute.ms.{k}")
        _opt_number(r, "link_ms_p50", RUN_FILE, f"{f}.link_ms_p50")
        head = opt_dict(opt_dict(r, "latency_ms", RUN_FILE, f"{f}.latency_ms"), "head", RUN_FILE, f"{f}.latency_ms.head")
        _opt_number(head, "p50", RUN_FILE, f"{f}.latency_ms.head.p50")
        req_int(opt_dict(r, "bytes", RUN_FILE, f"{f}.bytes"), "bundle_bytes_per_image", RUN_FILE,
                f"{f}.bytes.bundle_bytes_per_image", lo=0, hi=MAX_ELEMENTS * 8, optional=True)  # fmt: skip
    return runs
