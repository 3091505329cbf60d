"""What ``isplit-export run`` records: each request, folded in as it ends, the split's ``run.json``
entry (percentiles, bytes, checks, the accounting of every request), the file, and the terminal summary.
"""

from __future__ import annotations

import ipaddress
import platform
import socket
import threading
import time
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from isplit_export import contract, numbers
from isplit_export.errors import BadInputError, first_line
from isplit_export.files import json_dumps, write_text_atomic
from isplit_export.options_serving import RunOptions, parse_address
from isplit_export.outdir import check_writable_file
from isplit_export.serving.bundle_access import BundleAccess, SplitAccess
from isplit_export.verification.backends import gate_for
from isplit_export.verification.checks import served_check, unjudged
from isplit_export.version import __version__

RUN_FILE, RUN_SCHEMA = contract.RUN_FILE, contract.RUN_SCHEMA
ERROR_CHARS = 300
"""A request's recorded error is its first line, at most this many characters."""
MAX_LISTED_FAILURES = 100
"""run.json lists at most this many failed/skipped requests one by one (all are counted)."""


@dataclass
class Image_:
    """One image to send: its name, its (1, C, H, W) input (None: unreadable) and label (-1 unknown)."""

    name: str
    x: np.ndarray | None
    label: int = -1
    error: str | None = None


@dataclass
class Request:
    """One request: one image through head, wire and tail; ``status`` ok / failed / skipped."""

    n: int
    image: int
    status: str = "skipped"
    attempts: int = 0
    head_ms: float | None = None
    encode_ms: float | None = None
    round_trip_ms: float | None = None
    server_ms: float | None = None
    end_to_end_ms: float | None = None
    bytes_sent: int | None = None
    error: str | None = None


class Recorder:
    """Every finished request, folded in as it ends: compact per-request timings (about 50 bytes a
    request), counts, the first failures, and no logits beyond one row per distinct image, so the
    client's memory stays flat however long it runs. Thread-safe."""

    def __init__(self, images: list[Image_], ref: dict[int, dict[str, np.ndarray]]) -> None:
        self.images, self.ref = images, ref
        self.lock = threading.Lock()
        self.counts = {"ok": 0, "failed": 0, "skipped": 0}
        self.ms: dict[str, array[float]] = {
            k: array("d") for k in ("head", "encode", "round_trip", "server", "end_to_end", "transport")
        }
        self.payload: set[int] = set()
        self.failures: list[dict[str, Any]] = []
        self.worst: dict[int, tuple[float, np.ndarray]] = {}
        self.full_seen = self.full_agree = self.labelled = self.correct = self.full_correct = 0

    def add(self, req: Request, logits: np.ndarray | None) -> None:
        with self.lock:
            self.counts[req.status] += 1
            if req.bytes_sent is not None:
                self.payload.add(req.bytes_sent)
            if req.status != "ok" or logits is None:
                if len(self.failures) < MAX_LISTED_FAILURES:
                    self.failures.append(
                        {
                            "request": req.n,
                            "image": self.images[req.image].name,
                            "status": req.status,
                            "attempts": req.attempts,
                            "error": req.error,
                        }
                    )
                return
            for key, v in (
                ("head", req.head_ms),
                ("encode", req.encode_ms),
                ("round_trip", req.round_trip_ms),
                ("end_to_end", req.end_to_end_ms),
                ("server", req.server_ms),
            ):
                if v is not None:
                    self.ms[key].append(v)
            if req.server_ms is not None and req.round_trip_ms is not None:
                # what the split adds over computing head + tail in one place: encode, network, protocol
                self.ms["transport"].append((req.encode_ms or 0.0) + req.round_trip_ms - req.server_ms)
            r = self.ref[req.image]
            diff = float(np.max(np.abs(logits.astype(np.float64) - r["pair"])))
            if req.image not in self.worst or diff > self.worst[req.image][0]:
                self.worst[req.image] = (diff, np.array(logits, copy=True))
            top = int(np.argmax(logits))
            full_top = int(np.argmax(r["full"])) if "full" in r else None
            if full_top is not None:
                self.full_seen += 1
                self.full_agree += int(top == full_top)
            label = self.images[req.image].label
            if label >= 0 and full_top is not None:
                self.labelled += 1
                self.correct += int(top == label)
                self.full_correct += int(full_top == label)


def stats(values: list[float]) -> dict[str, Any] | None:
    """n, p50/p95/p99, mean, min and max of some milliseconds (None if there are none)."""
    if not values:
        return None
    a = np.asarray(values, dtype=np.float64)
    return {
        "n": len(values),
        "p50": rounded(float(np.percentile(a, 50))),
        "p95": rounded(float(np.percentile(a, 95))),
        "p99": rounded(float(np.percentile(a, 99))),
        "mean": rounded(float(a.mean())),
        "min": rounded(float(a.min())),
        "max": rounded(float(a.max())),
    }


def _p50(values: Sequence[float]) -> float | None:
    """The median :func:`stats` records (``p50``), None if there are no values."""
    if not len(values):
        return None
    return rounded(float(np.percentile(np.asarray(values, dtype=np.float64), 50)))


def rounded(v: float | None) -> float | None:
    """Six significant digits; None for None and non-finite values (run.json is strict JSON)."""
    return numbers.rounded(v, 6, finite=True)


# --------------------------------------------------------------------------------------------------
# run.json


def run_entry(
    options: RunOptions,
    split: SplitAccess,
    source: str,
    images: list[Image_],
    ref: dict[int, dict[str, np.ndarray]],
    rec: Recorder,
    goldens: contract.ServedCheck,
    local: dict[str, float] | None,
    wire: list[int],
    wall: float,
    rss: list[float],
    stats_before: tuple[int, int] | None,
    stats_after: tuple[int, int] | None,
    interrupted: bool,
) -> dict[str, Any]:
    """The run.json entry of the split (see docs/serving.md for every field)."""
    counts = dict(rec.counts)
    pair_gate = gate_for("fp32")
    compared = {"images": counts["ok"], "distinct_compared": len(rec.worst)}
    if rec.worst:
        keys = sorted(rec.worst)
        pair = np.concatenate([ref[i]["pair"] for i in keys])
        served = np.concatenate([rec.worst[i][1] for i in keys])
        vs_pair = served_check(pair, served, pair_gate, **compared)
    else:
        vs_pair = unjudged(pair_gate, "no request succeeded", **compared)
    task: dict[str, Any] = {}
    if rec.full_seen:
        task["agreement_with_full_model"] = rounded(rec.full_agree / rec.full_seen)
    if rec.labelled:
        task.update(
            accuracy=rounded(rec.correct / rec.labelled),
            full_model_accuracy=rounded(rec.full_correct / rec.labelled),
            labelled=rec.labelled,
        )
    server_ms = list(rec.ms["server"])
    server: dict[str, Any] = {"source": None, "ms": None}
    server_p50 = None  # the served tail's compute: p50 per request, else the statistics extension's mean
    if server_ms:
        server = {"source": "response parameter compute_us (per request)", "ms": stats(server_ms)}
        server_p50 = _p50(server_ms)
    elif stats_before is not None and stats_after is not None and stats_after[0] > stats_before[0]:
        mean = (stats_after[1] - stats_before[1]) / (stats_after[0] - stats_before[0]) / 1e6
        server = {
            "source": "statistics extension compute_infer (mean over the run)",
            "ms": {"mean": rounded(mean)},
        }
        server_p50 = rounded(mean)
    latency = {k: stats(list(rec.ms[k])) for k in ("head", "encode", "round_trip", "end_to_end", "transport")}
    head_p50, round_trip_p50, end_to_end_p50 = (_p50(rec.ms[k]) for k in ("head", "round_trip", "end_to_end"))
    overhead = None
    if local is not None and end_to_end_p50 is not None and head_p50 is not None:
        overhead = rounded(end_to_end_p50 - head_p50 - local["tail_ms"])
    link = None
    if round_trip_p50 is not None:
        link = rounded(round_trip_p50 - (server_p50 or 0.0))
    payload = sorted(rec.payload)
    listed = sorted(rec.failures, key=lambda f: int(f["request"]))
    host, port = parse_address(options.server)
    where = address_class(host)
    passed = goldens.passed and vs_pair.passed and not counts["failed"] and not counts["skipped"]
    return {
        "split": split.dir,
        "index": split.index,
        "model": split.model,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": platform.platform(),
        "server": {"address": f"{host}:{port}", "protocol": options.protocol, "address_class": where},
        "backend": options.backend,
        "options": {
            "requests": options.requests,
            "duration_s": options.duration_s,
            "concurrency": options.concurrency,
            "timeout_ms": options.timeout_ms,
            "retries": options.retries,
            "backoff_ms": options.backoff_ms,
            "threads": options.threads,
            "data": source,
        },
        "images": {"distinct": len(images), "requests": sum(counts.values()), **counts},
        "interrupted": interrupted,
        "wall_s": rounded(wall),
        "throughput_rps": rounded(counts["ok"] / wall) if wall > 0 else None,
        "latency_ms": latency,
        "server_compute": server,
        "link_ms_p50": link,
        "local_ms": local,
        "transport_overhead_ms_p50": overhead,
        "bytes": {
            "bundle_bytes_per_image": split.bytes_per_image,
            "payload_per_image": payload[0] if len(payload) == 1 else payload,
            "request_on_wire": wire[0] if wire else None,
            "framing": (wire[0] - split.bytes_per_image) if wire else None,
            "framing_note": (
                "gRPC: protobuf ModelInferRequest + 5-byte message prefix; HTTP/2 frame and "
                "header bytes not included"
                if options.protocol == "grpc"
                else "HTTP: the JSON request body (numbers as text); HTTP headers not included"
            ),
        },
        "client_rss_mib": {
            "start": rounded(rss[0]),
            "quarter": rounded(rss[len(rss) // 4]),
            "end": rounded(rss[-1]),
            "max": rounded(max(rss)),
            "samples": len(rss),
        }
        if rss
        else None,
        "goldens": goldens.to_json(),
        "vs_local_pair": vs_pair.to_json(),
        "task": task,
        "failures": listed,
        "passed": passed,
    }


def address_class(host: str) -> str:
    """Where the server is, seen from here: ``loopback`` (127.0.0.0/8, ::1, localhost), ``same-host`` (an
    address of this machine) or ``remote``; ``plan`` derives a link only from ``remote`` runs.

    Same host: a UDP socket "connected" to the address (no packet is sent) gets that very address as its
    own source address; an unresolvable name counts as remote.
    """
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_UDP)
    except (OSError, UnicodeError):
        return "remote"
    classes = set()
    for family, _, _, _, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        if ip.is_loopback or ip.is_unspecified:
            classes.add("loopback")
            continue
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.connect((str(ip), 9))
                own = ipaddress.ip_address(str(s.getsockname()[0]).split("%")[0])
        except OSError:
            own = None
        classes.add("same-host" if own == ip else "remote")
    for c in ("loopback", "same-host"):
        if c in classes:
            return c
    return "remote"


def check_run_path(options: RunOptions, root: Path) -> Path | None:
    """Where run.json goes (None: ``--no-write``), checked before the first request: not a folder, its
    folder exists, writable (probed for real; a read-only bundle is named as such). One line, exit 2."""
    if options.no_write:
        return None
    path = options.out if options.out is not None else root / RUN_FILE
    flag = "--out" if options.out is not None else f"run.json in the bundle ({root})"
    hint = (
        "pass --out FILE or --no-write" if options.out is None else "pass a writable --out FILE or --no-write"
    )
    if path.is_dir():
        raise BadInputError(f"{flag} {path} is a directory: {hint}")
    if not path.parent.is_dir():
        raise BadInputError(f"{flag}: folder {path.parent} does not exist: create it, or {hint}")
    try:
        check_writable_file(path, "--out")
    except BadInputError as e:
        raise BadInputError(f"cannot write {path} (a read-only bundle or folder?): {hint}") from e
    return path


def write_run(path: Path, bundle: BundleAccess, split: SplitAccess, data: dict[str, Any]) -> Path:
    """Merge the split's entry into run.json at ``path`` (other splits' entries of the same manifest are kept)."""
    runs = contract.kept_runs(path, bundle.manifest_sha256) | {split.dir: data}
    doc = {
        "schema": RUN_SCHEMA,
        "tool": {"name": "isplit-export", "version": __version__},
        "manifest_sha256": bundle.manifest_sha256,
        "runs": runs,
    }
    try:
        write_text_atomic(path, json_dumps(doc))
    except OSError as e:
        raise BadInputError(
            f"cannot write {path} ({first_line(e, ERROR_CHARS)}): pass a writable --out FILE, or --no-write"
        ) from e
    return path


# --------------------------------------------------------------------------------------------------
# the terminal summary


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{float(v):.3f}"


def _verdict(check: contract.ServedCheck) -> str:
    return f"gate {check.gate} {'pass' if check.passed else 'FAIL'}"


def format_run(data: Mapping[str, Any], written: Path | None = None) -> str:
    """The latency table, agreement, bytes and the accounting of every image (of the entry as
    :class:`~isplit_export.contract.RunSummary` reads it)."""
    r = contract.RunSummary.from_json(data)
    choice = f" ({r.backend_choice})" if r.backend_choice else ""
    lines = [
        f"split {r.split} -> model {r.model} at {r.address} ({r.protocol}), "
        f"{r.requests} requests, concurrency {r.concurrency}, "
        f"head on {r.backend}{choice}",
        f"{'ms':16} {'p50':>8} {'p95':>8} {'p99':>8} {'mean':>8} {'n':>6}",
    ]
    rows = [(k.replace("_", " "), v) for k, v in r.latency]
    rows.insert(3, ("server compute", r.server_compute))
    for name, st in rows:
        n = "-" if st is None or st.n is None else st.n
        p50, p95, p99, mean = (None,) * 4 if st is None else (st.p50, st.p95, st.p99, st.mean)
        lines.append(f"{name:16} {_fmt(p50):>8} {_fmt(p95):>8} {_fmt(p99):>8} {_fmt(mean):>8} {n:>6}")
    if r.local_head_ms is not None and r.local_tail_ms is not None:
        lines.append(
            f"local head ({r.backend}) + tail (onnxruntime) here: {r.local_head_ms:.3f} + "
            f"{r.local_tail_ms:.3f} ms; "
            f"transport overhead p50: {_fmt(r.transport_overhead_ms_p50)} ms"
        )
    lines.append(f"throughput: {_fmt(r.throughput_rps)} requests/s over {_fmt(r.wall_s)} s")
    lines.append(
        f"bytes per image: payload {r.payload_per_image} B (bundle bytes_per_image {r.bundle_bytes_per_image} B), "
        f"on the wire {r.request_on_wire} B (framing {r.framing} B)"
    )
    if r.agreement_with_full_model is not None:
        acc = (
            f"; accuracy {r.accuracy:.1%} (full model {r.full_model_accuracy or 0.0:.1%}, {r.labelled} labelled)"
            if r.accuracy is not None
            else ""
        )
        lines.append(f"agreement with the full model: {r.agreement_with_full_model:.1%}{acc}")
    vp, g = r.vs_local_pair, r.goldens
    lines.append(
        f"served vs local pair: max_abs_rel {_fmt(vp.metric('max_abs_rel'))}, {_verdict(vp)}; "
        f"goldens: {g.images} through the server, {_verdict(g)}"
    )
    for reason in [*vp.failures, *g.failures]:
        lines.append(f"check failed: {reason}")
    lines.append(f"requests: {r.ok} ok, {r.failed} failed after retries, {r.skipped} skipped")
    if r.stopped_reason == "circuit breaker":
        lines.append(
            f"stopped: {r.fail_after} requests in a row failed (--fail-after); the rest were not sent"
        )
    for f in r.failures[:10]:
        lines.append(
            f"  request {f.request} ({f.image}): {f.status} after {f.attempts} attempt(s): {f.error}"
        )
    if written is not None:
        lines.append(f"wrote {written}")
    return "\n".join(lines)


__all__ = [
    "ERROR_CHARS",
    "MAX_LISTED_FAILURES",
    "RUN_FILE",
    "RUN_SCHEMA",
    "Image_",
    "Recorder",
    "Request",
    "address_class",
    "check_run_path",
    "format_run",
    "rounded",
    "run_entry",
    "stats",
    "write_run",
]
