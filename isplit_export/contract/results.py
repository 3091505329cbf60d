"""Validated readers of ``ranking.json`` (hashed), and of ``verify.json`` and ``run.json`` (outputs
of ``verify`` and ``run``, used only when they name this manifest)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from isplit_export.contract.jsonio import (
    _bad,
    _rebuild,
    opt_dict,
    read_json,
    req_dict,
    req_int,
    req_number,
    req_str,
)
from isplit_export.contract.manifest import Manifest, _validate_latencies, check_listed
from isplit_export.contract.paths import bundle_path
from isplit_export.contract.schema import (
    MAX_DIM,
    MAX_ELEMENTS,
    MAX_FLOPS,
    MAX_MS,
    RANKING_FILE,
    RANKING_SCHEMA_PREFIX,
    RUN_FILE,
    RUN_SCHEMA,
    VERIFY_FILE,
)
from isplit_export.errors import BadInputError


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
        if (
            not isinstance(shape, list)
            or not shape
            or len(shape) > 8
            or any(isinstance(d, bool) or not isinstance(d, int) or not 0 < d <= MAX_DIM for d in shape)
            or math.prod(shape) > MAX_ELEMENTS
        ):
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


MIN_LINK_MS = 1e-3
"""The smallest link time a run.json may carry (1 µs): below it no transfer took place, and a rate derived
from it would be unbounded (``5e-324`` ms gives ``inf`` Mbit/s)."""
ADDRESS_CLASSES = ("loopback", "same-host", "remote")
"""``run.json`` ``server.address_class``: where the server was, seen from the client (only ``remote``
measures a link)."""


@dataclass(frozen=True)
class RunRecord:
    """What ``plan`` takes from one ``run.json`` entry, validated against the manifest.

    ``link_ms``: round trip p50 minus the server's compute (transfer + protocol); ``server_ms``: the
    served tail's compute (p50, else the mean); ``head_ms``: the head's p50 with ``backend``.
    """

    dir: str
    index: int
    ok: int
    bytes_per_image: int
    address: str
    protocol: str
    address_class: str
    """``loopback``, ``same-host``, ``remote``; ``unknown`` for runs recorded before the field existed."""
    backend: str | None
    host: str | None
    server_ms: float | None
    link_ms: float | None
    head_ms: float | None

    @property
    def measures_link(self) -> bool:
        """A link time from a server on this machine is protocol overhead, not a network: only ``remote``."""
        return self.address_class == "remote" and self.link_ms is not None and self.ok > 0


def _opt_ms(obj: Mapping[str, Any], key: str, field: str, *, lo: float = 0.0) -> float | None:
    v = req_number(obj, key, RUN_FILE, field, lo=lo, hi=MAX_MS, optional=True)
    return None if v is None else float(v)


def _run_record(manifest: Manifest, key: str, r: Any, splits: Mapping[str, Mapping[str, Any]]) -> RunRecord:
    f = f"runs.{key}"
    if not isinstance(r, dict):
        raise _bad(RUN_FILE, f, "an object", r)
    entry = splits.get(key)
    if entry is None:
        raise BadInputError(
            f"{RUN_FILE}: entry {key[:80]!r} names no split of the bundle's manifest: re-run isplit-export run, "
            "or plan with --estimated"
        )
    if r.get("split", key) != key:
        raise _bad(RUN_FILE, f"{f}.split", repr(key), r.get("split"))
    index = req_int(r, "index", RUN_FILE, f"{f}.index", optional=True)
    if index != entry.get("index"):
        raise _bad(RUN_FILE, f"{f}.index", f"the manifest's index of {key} ({entry.get('index')})", index)
    ok = req_int(
        opt_dict(r, "images", RUN_FILE, f"{f}.images"), "ok", RUN_FILE, f"{f}.images.ok", optional=True
    )
    server = opt_dict(r, "server", RUN_FILE, f"{f}.server")
    where = (
        req_str(server, "address_class", RUN_FILE, f"{f}.server.address_class", optional=True) or "unknown"
    )
    if where not in (*ADDRESS_CLASSES, "unknown"):
        raise _bad(RUN_FILE, f"{f}.server.address_class", " or ".join(ADDRESS_CLASSES), where)
    nbytes = req_int(
        opt_dict(r, "bytes", RUN_FILE, f"{f}.bytes"),
        "bundle_bytes_per_image",
        RUN_FILE,
        f"{f}.bytes.bundle_bytes_per_image",
        lo=1,
        hi=MAX_ELEMENTS * 8,
        optional=True,
    )
    want = (entry.get("boundary") or {}).get("bytes_per_image")
    if nbytes is not None and nbytes != want:
        raise _bad(RUN_FILE, f"{f}.bytes.bundle_bytes_per_image", f"the manifest's {want} of {key}", nbytes)
    compute = opt_dict(r, "server_compute", RUN_FILE, f"{f}.server_compute")
    srv = opt_dict(compute, "ms", RUN_FILE, f"{f}.server_compute.ms")
    p50, mean = (_opt_ms(srv, k, f"{f}.server_compute.ms.{k}") for k in ("p50", "mean"))
    head = opt_dict(
        opt_dict(r, "latency_ms", RUN_FILE, f"{f}.latency_ms"), "head", RUN_FILE, f"{f}.latency_ms.head"
    )
    return RunRecord(
        dir=key,
        index=int(index) if index is not None else -1,
        ok=int(ok or 0),
        bytes_per_image=int(nbytes if nbytes is not None else want or 0),
        address=str(req_str(server, "address", RUN_FILE, f"{f}.server.address", optional=True) or "?"),
        protocol=str(req_str(server, "protocol", RUN_FILE, f"{f}.server.protocol", optional=True) or "?"),
        address_class=where,
        backend=req_str(r, "backend", RUN_FILE, f"{f}.backend", optional=True),
        host=req_str(r, "host", RUN_FILE, f"{f}.host", optional=True),
        server_ms=p50 if p50 is not None else mean,
        link_ms=_opt_ms(r, "link_ms_p50", f"{f}.link_ms_p50", lo=MIN_LINK_MS),
        head_ms=_opt_ms(head, "p50", f"{f}.latency_ms.head.p50"),
    )


def read_runs(manifest: Manifest) -> dict[str, RunRecord]:
    """``run.json`` (``isplit-export run``) by split dir, every figure that ``plan`` uses validated.

    Like ``verify.json`` it is an output, not hashed: used only when it names this manifest (its
    ``manifest_sha256``). Each entry must name a split of the manifest (its dir, index and boundary
    bytes), every measured figure must be finite and in range (a link time of at least
    :data:`MIN_LINK_MS`); anything else is one line, exit 2 (re-run ``run``, or plan with
    ``--estimated``). Absent: ``{}``.
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
    splits = {str(s.get("dir")): s for s in manifest.data.get("splits") or [] if isinstance(s, dict)}
    return {str(key): _run_record(manifest, str(key), r, splits) for key, r in runs.items()}
