"""Validated readers of ``ranking.json`` (hashed), and of ``verify.json`` and ``run.json`` (outputs
of ``verify`` and ``run``, used only when they name this manifest)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from isplit_export.contract.bundle_files import check_listed
from isplit_export.contract.jsonio import (
    _bad,
    opt_dict,
    read_json,
    req_dict,
    req_int,
    req_number,
    req_str,
)
from isplit_export.contract.manifest import Manifest, _validate_latencies
from isplit_export.contract.paths import bundle_path
from isplit_export.contract.provenance import Latency, VerifyLatency
from isplit_export.contract.ranking import RankingFile
from isplit_export.contract.schema import (
    MAX_ELEMENTS,
    MAX_FLOPS,
    MAX_MS,
    RUN_FILE,
    RUN_SCHEMA,
    VERIFY_FILE,
)
from isplit_export.errors import BadInputError
from isplit_export.numbers import rounded


def read_ranking(manifest: Manifest) -> RankingFile:
    """``ranking.json`` (``manifest.ranking.file``): listed, hashed, inside the bundle, then validated
    (:class:`RankingFile`; ``total_flops`` and ``input_bytes`` required: ``plan`` costs the cuts)."""
    rel = manifest.ranking_file
    path = check_listed(manifest, rel, "ranking")
    r = read_json(path, rel)
    req_int(r, "total_flops", rel, lo=1, hi=int(MAX_FLOPS))
    req_int(r, "input_bytes", rel, lo=4, hi=MAX_ELEMENTS * 4)
    return RankingFile.from_json(r, rel)


def read_verify_latencies(manifest: Manifest) -> list[VerifyLatency]:
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
        out.append(
            VerifyLatency(
                dir=str(req_str(row, "dir", VERIFY_FILE, f"rows[{i}].dir")),
                backend=str(req_str(row, "backend", VERIFY_FILE, f"rows[{i}].backend")),
                precision=str(req_str(row, "precision", VERIFY_FILE, f"rows[{i}].precision")),
                latency=Latency.from_json(lat, VERIFY_FILE, f"rows[{i}].latency_ms"),
            )
        )
    return out


MIN_LINK_MS = 1e-3
"""The smallest link time a run.json may carry (1 µs): below it no transfer took place, and a rate derived
from it would be unbounded (``5e-324`` ms gives ``inf`` Mbit/s)."""
ADDRESS_CLASSES = ("loopback", "same-host", "remote")
"""``run.json`` ``server.address_class``: where the server was, seen from the client (only ``remote``
measures a link)."""


RUN_DIGITS = 6
"""Significant digits of the figures ``run.json`` records (:func:`isplit_export.numbers.rounded`)."""
MAX_SERVED_FAILURES = 64
"""Most failure lines a served check of run.json records."""


@dataclass(frozen=True)
class ServedCheck:
    """A pair judged over the wire in ``run.json`` (``goldens``: the golden boundaries through the server
    against the golden logits; ``vs_local_pair``: the served tail against the local pair), by
    :func:`isplit_export.verification.checks.served_check`: the gate, its outcome and the metrics."""

    gate: str
    passed: bool
    failures: tuple[str, ...]
    metrics: Mapping[str, float | None] | None
    """:func:`~isplit_export.verification.metrics.compare_logits` (None: nothing was compared)."""
    images: int
    distinct_compared: int | None = None
    """(``vs_local_pair``) how many distinct images the comparison covered."""

    def to_json(self) -> dict[str, Any]:
        """The block as ``run.json`` holds it, in docs/serving.md's order: ``goldens`` leads with ``images``,
        ``vs_local_pair`` (which counts ``distinct_compared``) with ``gate``."""
        out: dict[str, Any] = (
            {"images": self.images, "gate": self.gate}
            if self.distinct_compared is None
            else {"gate": self.gate, "images": self.images, "distinct_compared": self.distinct_compared}
        )
        if self.metrics is not None:
            out["metrics"] = {k: rounded(v, RUN_DIGITS, finite=True) for k, v in self.metrics.items()}
        return out | {"passed": self.passed, "failures": list(self.failures)}

    def metric(self, name: str) -> float | None:
        """The metric ``name`` (``max_abs_rel``, ...); None when nothing was compared."""
        return None if self.metrics is None else self.metrics.get(name)

    @classmethod
    def from_json(cls, d: Mapping[str, Any], src: str, f: str) -> ServedCheck:
        """Validate a served check: ``passed`` a boolean, bounded failure lines, metrics numbers or null."""
        passed = d.get("passed")
        if not isinstance(passed, bool):
            raise _bad(src, f"{f}.passed", "true or false", passed)
        failures = d.get("failures", [])
        if not isinstance(failures, list) or len(failures) > MAX_SERVED_FAILURES:
            raise _bad(src, f"{f}.failures", f"a list of at most {MAX_SERVED_FAILURES} lines", failures)
        for i, line in enumerate(failures):
            if not isinstance(line, str) or len(line) > 1000:
                raise _bad(src, f"{f}.failures[{i}]", "a string of at most 1000 characters", line)
        metrics = d.get("metrics")
        if metrics is not None:
            metrics = opt_dict(d, "metrics", src, f"{f}.metrics")
            for k in metrics:
                req_number(metrics, k, src, f"{f}.metrics.{k}", lo=-1e30, hi=1e30, optional=True)
        return cls(
            gate=str(req_str(d, "gate", src, f"{f}.gate")),
            passed=passed,
            failures=tuple(failures),
            metrics=None if metrics is None else MappingProxyType(dict(metrics)),
            images=int(req_int(d, "images", src, f"{f}.images", optional=True) or 0),
            distinct_compared=req_int(d, "distinct_compared", src, f"{f}.distinct_compared", optional=True),
        )


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
    goldens: ServedCheck | None = None
    """The golden boundaries through the server (None in a run.json written before it was typed)."""
    vs_local_pair: ServedCheck | None = None
    """The served tail against the local pair."""

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
    checks = {
        k: None
        if r.get(k) is None
        else ServedCheck.from_json(opt_dict(r, k, RUN_FILE, f"{f}.{k}"), RUN_FILE, f"{f}.{k}")
        for k in ("goldens", "vs_local_pair")
    }
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
        goldens=checks["goldens"],
        vs_local_pair=checks["vs_local_pair"],
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
