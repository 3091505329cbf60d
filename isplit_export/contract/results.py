"""Validated readers of ``ranking.json`` (hashed), and of ``verify.json`` and ``run.json`` (outputs
of ``verify`` and ``run``, used only when they name this manifest)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
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
