"""One ``run.json`` entry as the terminal summary reads it (:class:`RunSummary`), and the entries a
run keeps when it merges its own into an existing file (:func:`kept_runs`).

``isplit-export run`` builds the entry (``serving/records.run_entry``), prints it
(``serving/records.format_run``) and decides its exit code and its interrupted line
(``jobs/run.py``) from this typed view, so no module outside ``contract/`` subscripts the entry.
:class:`~isplit_export.contract.RunRecord` is what ``plan`` takes from a written ``run.json``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from isplit_export.contract.jsonio import _bad, opt_dict, read_json, req_int, req_number, req_str
from isplit_export.contract.results import ServedCheck
from isplit_export.contract.schema import MAX_FLOPS, RUN_FILE, RUN_SCHEMA
from isplit_export.errors import IsplitError

MAX_LISTED = 1000
"""Most failed requests an entry lists."""


def _num(d: Mapping[str, Any], key: str, f: str) -> float | None:
    return req_number(d, key, RUN_FILE, f"{f}.{key}", lo=-MAX_FLOPS, hi=MAX_FLOPS, optional=True)


def _count(d: Mapping[str, Any], key: str, f: str) -> int:
    return int(req_int(d, key, RUN_FILE, f"{f}.{key}", optional=True) or 0)


@dataclass(frozen=True)
class Stats:
    """Milliseconds of one stage over the run (``latency_ms.<stage>``, ``server_compute.ms``)."""

    n: int | None
    p50: float | None
    p95: float | None
    p99: float | None
    mean: float | None

    @classmethod
    def from_json(cls, s: Any, f: str) -> Stats | None:
        """Validate a stats block; None when the stage measured nothing."""
        if s is None:
            return None
        if not isinstance(s, Mapping):
            raise _bad(RUN_FILE, f, "an object or null", s)
        n = req_int(s, "n", RUN_FILE, f"{f}.n", optional=True)
        return cls(n, *(_num(s, k, f) for k in ("p50", "p95", "p99", "mean")))


@dataclass(frozen=True)
class FailedRequest:
    """A request that failed after its retries (``failures[i]``)."""

    request: int
    image: str
    status: str
    attempts: int
    error: str

    @classmethod
    def from_json(cls, r: Any, f: str) -> FailedRequest:
        """Validate one listed failure."""
        if not isinstance(r, Mapping):
            raise _bad(RUN_FILE, f, "an object", r)
        return cls(
            request=_count(r, "request", f),
            image=str(r.get("image")),
            status=str(r.get("status")),
            attempts=_count(r, "attempts", f),
            error=str(r.get("error")),
        )


@dataclass(frozen=True)
class RunSummary:
    """What a run printed and decided: where it ran, its latencies, bytes, task figures, verdicts, accounting."""

    split: str
    model: str
    address: str
    protocol: str
    concurrency: int
    backend: str
    backend_choice: str | None
    latency: tuple[tuple[str, Stats | None], ...]
    """``latency_ms``: each stage (``head``, ``encode``, ``round_trip``, ...) in the order written."""
    server_compute: Stats | None
    local_head_ms: float | None
    local_tail_ms: float | None
    transport_overhead_ms_p50: float | None
    throughput_rps: float | None
    wall_s: float | None
    payload_per_image: int | list[int] | None
    bundle_bytes_per_image: int | None
    request_on_wire: int | None
    framing: int | None
    agreement_with_full_model: float | None
    accuracy: float | None
    full_model_accuracy: float | None
    labelled: int | None
    goldens: ServedCheck
    vs_local_pair: ServedCheck
    requests: int
    ok: int
    failed: int
    skipped: int
    failures: tuple[FailedRequest, ...]
    interrupted: bool
    stopped_reason: str | None
    """``circuit breaker`` or ``signal`` when the run stopped early."""
    stopped_signal: str | None
    fail_after: int | None
    passed: bool

    @classmethod
    def from_json(cls, e: Mapping[str, Any], f: str = "run") -> RunSummary:
        """Validate the entry's fields the summary and the exit code read."""
        server, options = opt_dict(e, "server", RUN_FILE, f"{f}.server"), opt_dict(e, "options", RUN_FILE)
        lat = opt_dict(e, "latency_ms", RUN_FILE, f"{f}.latency_ms")
        local = opt_dict(e, "local_ms", RUN_FILE, f"{f}.local_ms")
        b, t = opt_dict(e, "bytes", RUN_FILE, f"{f}.bytes"), opt_dict(e, "task", RUN_FILE, f"{f}.task")
        c, stopped = opt_dict(e, "images", RUN_FILE, f"{f}.images"), opt_dict(e, "stopped", RUN_FILE)
        failures = e.get("failures", [])
        if not isinstance(failures, list) or len(failures) > MAX_LISTED:
            raise _bad(RUN_FILE, f"{f}.failures", f"a list of at most {MAX_LISTED}", failures)
        payload = b.get("payload_per_image")
        if not (payload is None or isinstance(payload, int | list)) or isinstance(payload, bool):
            raise _bad(RUN_FILE, f"{f}.bytes.payload_per_image", "a byte count or a list of them", payload)
        passed, interrupted = e.get("passed"), e.get("interrupted", False)
        if not isinstance(passed, bool) or not isinstance(interrupted, bool):
            raise _bad(RUN_FILE, f"{f}.passed", "true or false", passed)
        return cls(
            split=str(req_str(e, "split", RUN_FILE, f"{f}.split")),
            model=str(req_str(e, "model", RUN_FILE, f"{f}.model")),
            address=str(req_str(server, "address", RUN_FILE, f"{f}.server.address")),
            protocol=str(req_str(server, "protocol", RUN_FILE, f"{f}.server.protocol")),
            concurrency=_count(options, "concurrency", f"{f}.options"),
            backend=str(req_str(e, "backend", RUN_FILE, f"{f}.backend")),
            backend_choice=str(e.get("backend_choice") or "") or None,
            latency=tuple((str(k), Stats.from_json(v, f"{f}.latency_ms.{k}")) for k, v in lat.items()),
            server_compute=Stats.from_json(
                opt_dict(e, "server_compute", RUN_FILE).get("ms"), f"{f}.server_compute.ms"
            ),
            local_head_ms=_num(local, "head_ms", f"{f}.local_ms"),
            local_tail_ms=_num(local, "tail_ms", f"{f}.local_ms"),
            transport_overhead_ms_p50=_num(e, "transport_overhead_ms_p50", f),
            throughput_rps=_num(e, "throughput_rps", f),
            wall_s=_num(e, "wall_s", f),
            payload_per_image=payload,
            bundle_bytes_per_image=req_int(b, "bundle_bytes_per_image", RUN_FILE, optional=True),
            request_on_wire=req_int(b, "request_on_wire", RUN_FILE, optional=True),
            framing=req_int(b, "framing", RUN_FILE, lo=-(1 << 40), optional=True),
            agreement_with_full_model=_num(t, "agreement_with_full_model", f"{f}.task"),
            accuracy=_num(t, "accuracy", f"{f}.task"),
            full_model_accuracy=_num(t, "full_model_accuracy", f"{f}.task"),
            labelled=req_int(t, "labelled", RUN_FILE, f"{f}.task.labelled", optional=True),
            goldens=ServedCheck.from_json(opt_dict(e, "goldens", RUN_FILE), RUN_FILE, f"{f}.goldens"),
            vs_local_pair=ServedCheck.from_json(
                opt_dict(e, "vs_local_pair", RUN_FILE), RUN_FILE, f"{f}.vs_local_pair"
            ),
            requests=_count(c, "requests", f"{f}.images"),
            ok=_count(c, "ok", f"{f}.images"),
            failed=_count(c, "failed", f"{f}.images"),
            skipped=_count(c, "skipped", f"{f}.images"),
            failures=tuple(FailedRequest.from_json(r, f"{f}.failures[{i}]") for i, r in enumerate(failures)),
            interrupted=interrupted,
            stopped_reason=req_str(stopped, "reason", RUN_FILE, f"{f}.stopped.reason", optional=True),
            stopped_signal=req_str(stopped, "signal", RUN_FILE, f"{f}.stopped.signal", optional=True),
            fail_after=req_int(stopped, "fail_after", RUN_FILE, f"{f}.stopped.fail_after", optional=True),
            passed=passed,
        )

    @property
    def local(self) -> bool:
        """Whether the local pair was timed here (``local_ms``)."""
        return self.local_head_ms is not None and self.local_tail_ms is not None


def kept_runs(path: Path, manifest_sha256: str) -> dict[str, Any]:
    """The entries of the ``run.json`` at ``path`` by split folder, as written, when the file is ours and
    names this manifest; ``{}`` for none, another manifest's, or a broken file (which the run replaces)."""
    if not path.is_file():
        return {}
    try:
        old = read_json(path, str(path))  # bounded, strict
    except IsplitError:
        return {}
    if old.get("schema") != RUN_SCHEMA or old.get("manifest_sha256") != manifest_sha256:
        return {}
    runs = old.get("runs")
    return dict(runs) if isinstance(runs, Mapping) else {}
