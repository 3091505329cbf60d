"""The run job (``isplit-export run BUNDLE --url H:P``): the device side of a split deployment,
every request measured.

    isplit-export serve bundle --port 8001 &
    isplit-export run bundle --url 127.0.0.1:8001 --requests 200 --concurrency 4

For each request (one image, batch 1) the head runs here (onnxruntime, or the TensorRT engines with
``--backend tensorrt``), the boundary goes to the server exactly as the bundle encodes it (uint8,
fp16, fp32, or a bottleneck's code) with ``tritonclient`` (gRPC, or JSON over HTTP), and the logits
come back. Recorded per request: head ms, encode ms (building the protocol's tensor), round-trip ms
(network + server, the successful attempt), the server's own compute time where the protocol gives
it (MLServer: our runtime's ``compute_us`` response parameter; Triton: its statistics extension,
averaged over the run), bytes sent. Reported: p50/p95/p99, throughput, top-1 agreement with the full
model (``full.onnx`` run here), accuracy where labels are known, the served logits against the local
pair's (the fp32 gate: same ONNX, other process), and the bundle's goldens sent through the server
(the encoding's gate, as ``verify``).

``--out`` (default ``BUNDLE/run.json``) is checked before the first request (a folder, a missing parent
folder, an unwritable file or a read-only bundle: one line, exit 2); ``--no-write`` writes nothing. The
CLI prints the summary first, then writes the file. The head runs with ``--backend auto`` (the default)
on the TensorRT head engine when TensorRT imports and ``build-engines`` built that engine on this
machine, else on onnxruntime; the summary's first line says which, and why.

Faults, all bounded: the server must be ready within ``--wait`` seconds, else one line naming the
address and the fix (:data:`isplit_export.serving.client.EXIT_UNREACHABLE`). A request that errors, exceeds ``--timeout-ms`` or
comes back with the wrong name, shape or dtype is retried ``--retries`` times with exponential
backoff (``--backoff-ms``, doubling, capped at :data:`~isplit_export.options_serving.MAX_BACKOFF_MS`). Every
request ends as exactly one of ``ok``, ``failed`` (after its retries) or ``skipped`` (never sent: the
run was interrupted, or its image could not be read); ``run.json`` counts each and lists the failed
ones. A circuit breaker stops a run whose server is gone: after ``--fail-after`` consecutive failed
requests (default 5; 0: never) nothing more is sent and the requests not sent yet are counted as
skipped. Responses are bounded (:func:`~isplit_export.serving.client.response_limit`: the logits of one
image plus 64 KiB). Exit codes: 0 all ok and every check passed; 1 a check failed (goldens, agreement with the
local pair); :data:`isplit_export.serving.client.EXIT_UNREACHABLE` (5) no server; :data:`EXIT_REQUESTS_FAILED` (6) some request
failed after its retries or was skipped (the circuit breaker included); 2 bad input; 130 interrupted
(143: SIGTERM), after run.json was written with the accounting (the error line says where).

``run.json`` (schema :data:`isplit_export.contract.RUN_SCHEMA`, strict JSON, documented in ``docs/serving.md``) goes into the
bundle by default, keyed by split so that runs of several splits add up; ``isplit-export plan`` then
uses its measured device, link and server times.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from isplit_export import contract, progress
from isplit_export.errors import BadInputError, IsplitError
from isplit_export.options_serving import RunOptions
from isplit_export.serving.bundle_access import BundleAccess, SplitAccess, open_bundle
from isplit_export.serving.client import (
    DATATYPES,
    Client,
    require_packages,
    send,
    wait_ready,
)
from isplit_export.serving.local import Head, load_images, local_latency, local_reference
from isplit_export.serving.records import (
    Image_,
    Recorder,
    Request,
    check_run_path,
    run_entry,
    write_run,
)
from isplit_export.serving.schedule import Schedule
from isplit_export.verification.backends import gate_for
from isplit_export.verification.checks import served_check, unjudged

EXIT_REQUESTS_FAILED = 6
"""At least one request failed after its retries, or was skipped."""
EXIT_SIGNAL = {"SIGINT": 130, "SIGTERM": 143}


class RunInterruptedError(IsplitError):
    """Ctrl-C or SIGTERM stopped the run after run.json was written (or ``--no-write``): the one line says
    what was written, with the accounting; exit 130 (SIGINT) or 143 (SIGTERM)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class RunResult:
    """The run's record (``data`` is run.json's entry for the split), its exit code, where it went.

    ``served``: per distinct image (index into the run's images), the served logits that differed most
    from the local pair's (what ``vs_local_pair`` compared). ``path``: where :meth:`write` puts run.json
    (None: ``--no-write``); ``written`` once it did.
    """

    data: dict[str, Any]
    exit_code: int
    written: Path | None
    served: dict[int, np.ndarray] = field(default_factory=dict)
    path: Path | None = None
    bundle: BundleAccess | None = None
    split: SplitAccess | None = None

    def write(self) -> Path | None:
        """Merge the entry into run.json at :attr:`path` (nothing with ``--no-write``); returns the path."""
        if (
            self.path is not None
            and self.bundle is not None
            and self.split is not None
            and self.written is None
        ):
            self.written = write_run(self.path, self.bundle, self.split, self.data)
        return self.written

    @property
    def summary(self) -> contract.RunSummary:
        """The entry as the contract reads it (what the summary prints and the exit code says)."""
        return contract.RunSummary.from_json(self.data)

    def interrupted_error(self) -> RunInterruptedError | None:
        """The one line of an interrupted run (what was written, the accounting), or None."""
        r = self.summary
        if not r.interrupted:
            return None
        where = f"wrote {self.written}" if self.written is not None else "nothing written (--no-write)"
        sig = r.stopped_signal or "SIGINT"
        return RunInterruptedError(
            f"{'terminated (SIGTERM)' if sig == 'SIGTERM' else 'interrupted'}: {where} with every request "
            f"accounted for: {r.ok} ok, {r.failed} failed, {r.skipped} skipped (not sent)",
            EXIT_SIGNAL.get(sig, 130),
        )


def _rss_mib() -> float | None:
    """This process's resident memory (Linux /proc), None elsewhere."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


def _goldens(client: Client, options: RunOptions, split: SplitAccess, classes: int) -> contract.ServedCheck:
    """The bundle's golden boundaries through the server, against the golden logits (verify's gate)."""
    g = split.load_golden()
    gate = gate_for(split.encoding.name)
    got: list[np.ndarray] = []
    stop = threading.Event()
    for i in range(len(g.boundary)):
        req = Request(n=-1, image=i)
        _, logits = send(client, options, np.ascontiguousarray(g.boundary[i : i + 1]), classes, req, stop)
        if logits is None:
            return unjudged(gate, f"golden {i}: {req.error}", images=len(g.boundary))
        got.append(logits)
    return served_check(g.logits, np.concatenate(got), gate, images=len(got))


def run(
    options: RunOptions, on_result: Callable[[Request], None] | None = None, *, write: bool = True
) -> RunResult:
    """Run the split against the server; see the module docstring. ``on_result`` sees each finished request.

    ``--out`` is checked before anything is sent. With ``write`` the entry goes into run.json here (the CLI
    passes False: it prints the summary first, then calls :meth:`RunResult.write`).
    """
    require_packages(options)
    bundle = open_bundle(options.bundle, options.split, verify=True, expect_sha256=options.expect_sha256)
    path = check_run_path(options, bundle.root)  # before the first request: a run's results are kept
    split = bundle.splits[0]
    classes = bundle.manifest.num_classes or 0
    if classes < 1:
        raise BadInputError("manifest.json model block has no num_classes: rebuild the bundle")
    progress.expect(3)
    progress.stage("load the images and the head")
    images, source = load_images(options, bundle, split)
    head = Head(bundle, split, options.backend, options.threads, options.trust_engines)
    try:
        result = _run(options, on_result, bundle, split, classes, images, source, head)
    finally:
        head.close()
    result.path, result.bundle, result.split = path, bundle, split
    if write:
        result.write()
    return result


def _run(
    options: RunOptions,
    on_result: Callable[[Request], None] | None,
    bundle: BundleAccess,
    split: SplitAccess,
    classes: int,
    images: list[Image_],
    source: str,
    head: Head,
) -> RunResult:
    """:func:`run` once the bundle, the images and the head are loaded."""
    progress.stage("wait for the server; goldens, reference and local latency")
    wait_ready(options, split.model)
    probe = Client(options, split.model, classes)
    try:
        dtype, shape = probe.metadata()
        want = DATATYPES[split.encoding.dtype]
        if dtype != want or [d for d in shape[1:]] != list(split.shape):
            raise BadInputError(
                f"model {split.model} at {options.server} takes {dtype} {shape}, but split {split.dir} sends "
                f"{want} [-1, {', '.join(map(str, split.shape))}]: serve this bundle's tails (isplit-export serve)"
            )
        goldens = _goldens(probe, options, split, classes)
        stats_before = probe.compute_statistics()
    finally:
        probe.close()
    ref = local_reference(bundle, split, images, head, options.threads)
    local = local_latency(split, images, head, options.threads)

    total = (
        options.requests if options.requests is not None else (None if options.duration_s else len(images))
    )
    deadline = time.monotonic() + options.duration_s if options.duration_s is not None else None
    sched = Schedule(total, deadline)
    rec = Recorder(images, ref)
    lock = threading.Lock()
    wire: list[int] = []
    flight = [0, 0]  # requests in flight now, most at once
    streak = [0]  # consecutive failed requests (the circuit breaker's count)
    tripped: list[str] = []

    def breaker(req: Request) -> None:
        """Count a failed request; ``fail_after`` in a row (the server is gone) stop the schedule."""
        if req.status not in ("ok", "failed"):
            return
        with lock:
            streak[0] = streak[0] + 1 if req.status == "failed" else 0
            if options.fail_after and streak[0] >= options.fail_after and not tripped:
                tripped.append(str(req.error))
                sched.stop.set()

    def worker() -> None:
        client = Client(options, split.model, classes)
        try:
            while (n := sched.next()) is not None:
                i = n % len(images)
                req = Request(n=n, image=i)
                im = images[i]
                logits = None
                if im.x is None:
                    req.error = im.error
                else:
                    t = time.perf_counter()
                    boundary = head(im.x)
                    req.head_ms = (time.perf_counter() - t) * 1e3
                    req.bytes_sent = int(boundary.nbytes)
                    with lock:
                        flight[0] += 1
                        flight[1] = max(flight[1], flight[0])
                    try:
                        inp, logits = send(client, options, boundary, classes, req, sched.stop)
                    finally:
                        with lock:
                            flight[0] -= 1
                    if not wire:
                        wire.append(client.wire_bytes(inp))
                    if req.status == "ok":
                        req.end_to_end_ms = (
                            (req.head_ms or 0.0) + (req.encode_ms or 0.0) + (req.round_trip_ms or 0.0)
                        )
                rec.add(req, logits)
                breaker(req)
                if on_result is not None:
                    on_result(req)
        finally:
            client.close()

    rss: list[float] = []
    interrupted = False
    signals: list[str] = []
    previous = _install_sigterm(signals)
    sent = progress.stage("requests", total=total, unit="req", every=5.0)
    t0 = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=options.concurrency, thread_name_prefix="isplit-run") as pool:
            futures = [pool.submit(worker) for _ in range(options.concurrency)]
            try:
                while not all(f.done() for f in futures):
                    m = _rss_mib()
                    if m is not None:
                        rss.append(m)
                    sent.advance(sum(rec.counts.values()) - sent.done)
                    time.sleep(0.25)
            except KeyboardInterrupt:
                interrupted = True
                sched.stop.set()
            for f in futures:
                f.result()
    finally:
        _restore_sigterm(previous)
    wall = time.perf_counter() - t0
    sent.advance(sum(rec.counts.values()) - sent.done)
    progress.done()
    stats_after = None
    if not rec.ms["server"] and not tripped:
        probe = Client(options, split.model, classes)
        stats_after = probe.compute_statistics()
        probe.close()
    why = "not sent: the run was interrupted"
    if tripped:
        why = (
            f"not sent: {options.fail_after} requests in a row failed (--fail-after), the last: {tripped[0]}"
        )
    if total is not None and sched.issued < total:  # never sent: interrupted, or the circuit breaker
        for n in range(sched.issued, total):
            rec.add(Request(n=n, image=n % len(images), error=why[:300]), None)
    data = run_entry(
        options,
        split,
        source,
        images,
        ref,
        rec,
        goldens,
        local,
        wire,
        wall,
        rss,
        stats_before,
        stats_after,
        interrupted,
    )
    sig = signals[0] if signals else "SIGINT"
    stopped: dict[str, Any] | None = None
    if tripped:
        stopped = {"reason": "circuit breaker", "fail_after": options.fail_after, "last_error": tripped[0]}
    elif interrupted:
        stopped = {"reason": "signal", "signal": sig}
    data.update(in_flight_max=flight[1], backend=head.backend, backend_choice=head.why, stopped=stopped)
    code = EXIT_SIGNAL[sig] if interrupted else _exit_code(contract.RunSummary.from_json(data))
    return RunResult(data=data, exit_code=code, written=None, served={i: w[1] for i, w in rec.worst.items()})


def _install_sigterm(signals: list[str]) -> Any:
    """SIGTERM stops the run like Ctrl-C (the main thread only; elsewhere nothing is installed); ``signals``
    records it."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        signals.append("SIGTERM")
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, handler)


def _restore_sigterm(previous: Any) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


def _exit_code(run: contract.RunSummary) -> int:
    if run.failed or run.skipped:
        return EXIT_REQUESTS_FAILED
    return 0 if run.passed else 1


__all__ = ["EXIT_REQUESTS_FAILED", "RunInterruptedError", "RunResult", "run"]
