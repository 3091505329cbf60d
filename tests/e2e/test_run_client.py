"""Issue 24, the client side of ``isplit-export run``: ``--out`` checked before the first request (R4), the
circuit breaker against a real MLServer killed mid-run (R5), responses bounded against hostile servers
(R6), and the interrupt line that says what was written (R7).

The servers are real: ``isplit-export serve`` (MLServer) in a child process on 127.0.0.1, and, for the
hostile answers, small stand-in servers on 127.0.0.1 (a plain ``http.server`` thread and a ``grpc``
server with tritonclient's service definitions). The stand-ins are not the thing under test: the client is.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from isplit_export.cli import main
from isplit_export.options_serving import RunOptions
from isplit_export.progress import QUIET_ENV
from tests.support.helpers import DIGITS, run_cli
from tests.support.serving_helpers import LOOPBACK, Server, free_port

pytest.importorskip("tritonclient.grpc")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, digits_weights: Path, digits_dir: Path) -> Path:
    """A digits bundle with an int8 boundary (onnx target, one split)."""
    out = tmp_path_factory.mktemp("run-client") / "bundle"
    assert (
        main(
            [
                DIGITS,
                "--weights",
                str(digits_weights),
                "--data",
                str(digits_dir),
                "--top",
                "1",
                "--target",
                "onnx",
                "--boundary",
                "int8",
                "--out",
                str(out),
                "--latency-runs",
                "2",
                "--bootstrap",
                "0",
            ]
        )
        == 0
    )
    return out


def _manifest(b: Path) -> dict[str, Any]:
    return dict(json.loads((b / "manifest.json").read_text(encoding="utf-8")))


def _model(b: Path) -> str:
    from isplit_export.serving.bundle_access import open_bundle

    return open_bundle(b, 1, verify=False).splits[0].model


@pytest.fixture(scope="module")
def served(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(bundle, log=tmp_path_factory.mktemp("log") / "serve.log").start()
    try:
        server.wait_ready(_model(bundle))
        yield server
    finally:
        server.stop()


def _one_line(err: str) -> str:
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# --------------------------------------------------------------------------------------------------
# R4: --out before the first request, --no-write, the summary before the file


@pytest.mark.e2e
def test_out_is_checked_before_the_first_request(
    capsys: pytest.CaptureFixture[str], bundle: Path, tmp_path: Path
) -> None:
    """No server listens and --wait is 20 s: a bad --out is refused at once (exit 2), not after the run."""
    address = f"{LOOPBACK}:{free_port()}"
    (tmp_path / "a-folder").mkdir()
    b = tmp_path / "b"
    shutil.copytree(bundle, b)
    (b / "run.json").mkdir()  # the bundle's own run.json cannot be written
    cases = [
        (bundle, ("--out", tmp_path / "a-folder"), "is a directory"),
        (bundle, ("--out", tmp_path / "missing" / "run.json"), "does not exist"),
        (bundle, ("--out", "/proc/version"), "cannot write"),
        (b, (), "--no-write"),
        (bundle, ("--out", tmp_path / "r.json", "--no-write"), "contradict"),
    ]
    for where, extra, needle in cases:
        t = time.monotonic()
        code, out, err = run_cli(capsys, "run", where, "--url", address, "--wait", "20", *extra)
        assert code == 2 and out == "" and needle in _one_line(err), (extra, code, err)
        assert time.monotonic() - t < 10, extra
    assert not (tmp_path / "missing").exists()
    code, _, err = run_cli(capsys, "run", b, "--url", address, "--wait", "0", "--no-write")
    assert code == 5, err  # --no-write: the run goes on (here to "no server")


@pytest.mark.e2e
def test_summary_first_then_the_file_and_no_write(
    capsys: pytest.CaptureFixture[str], bundle: Path, served: Server, tmp_path: Path
) -> None:
    out_file = tmp_path / "r.json"
    code, out, err = run_cli(
        capsys, "run", bundle, "--url", served.address, "--requests", "4", "--out", out_file
    )
    assert code == 0, err
    lines = out.strip().splitlines()
    assert (
        lines[0].startswith("split ")
        and "head on onnxruntime (auto: TensorRT does not import here)" in lines[0]
    )
    assert lines[-1] == f"wrote {out_file}" and any(x.startswith("requests: 4 ok") for x in lines[:-1])
    r = next(iter(json.loads(out_file.read_text())["runs"].values()))
    assert r["server"]["address_class"] == "loopback" and r["backend"] == "onnxruntime"
    assert r["stopped"] is None
    before = sorted(p.name for p in bundle.iterdir())
    code, out, err = run_cli(capsys, "run", bundle, "--url", served.address, "--requests", "2", "--no-write")
    assert code == 0, err
    assert "wrote" not in out and sorted(p.name for p in bundle.iterdir()) == before


@pytest.mark.e2e
def test_duration_run_shows_requests_and_rate_as_it_goes(
    capsys: pytest.CaptureFixture[str], bundle: Path, served: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stderr not a terminal: a line with the count and rate every 5 s while it sends, then one per stage."""
    monkeypatch.delenv(QUIET_ENV)  # the suite runs quiet (tests/support/fixtures.py)
    code, out, err = run_cli(
        capsys, "run", bundle, "--server", served.address, "--duration", "6", "--no-write"
    )
    assert code == 0, err
    live = [
        re.match(r"^  requests: (\d+) req, ([\d.]+)/s \(elapsed ([\d.]+) s\)$", x) for x in err.splitlines()
    ]
    counts = [int(m.group(1)) for m in live if m]
    assert counts and all(float(m.group(2)) > 0 for m in live if m), err
    stages = [x for x in err.splitlines() if x.startswith("stage ")]
    assert [x.split(":")[0] for x in stages] == ["stage 1/3", "stage 2/3", "stage 3/3"], err
    final = re.match(r"^stage 3/3: requests \((\d+) req, [\d.]+/s, elapsed [\d.]+ s\)$", stages[2])
    assert final and int(final.group(1)) >= counts[-1], err
    ok = re.search(r"^requests: (\d+) ok", out, re.M)
    assert ok and int(ok.group(1)) == int(final.group(1)), (out, err)


# --------------------------------------------------------------------------------------------------
# R5: the circuit breaker


@pytest.mark.e2e
def test_circuit_breaker_stops_a_run_whose_server_died(bundle: Path, tmp_path: Path) -> None:
    """200 requests, the server SIGKILLed after 5: without the breaker each of the ~195 left would spend its
    retries (0.2 + 0.4 s of backoff each, about 2 minutes in all); with ``fail_after=3`` the run stops after
    three failed requests, and the 190-odd never sent are counted as skipped."""
    from isplit_export.jobs.run import EXIT_REQUESTS_FAILED, run
    from isplit_export.serving.records import Request

    server = Server(bundle, log=tmp_path / "serve.log").start()
    server.wait_ready(_model(bundle))
    seen: list[str] = []

    def on_result(req: Request) -> None:
        seen.append(req.status)
        if len(seen) == 5:
            server.kill()

    try:
        options = RunOptions(
            bundle=bundle,
            server=server.address,
            requests=200,
            retries=2,
            backoff_ms=200,
            timeout_ms=2000,
            fail_after=3,
            out=tmp_path / "run.json",
        )
        t = time.monotonic()
        result = run(options, on_result=on_result)
        elapsed = time.monotonic() - t
    finally:
        server.kill()
    c = result.data["images"]
    assert c["requests"] == 200 and c["ok"] + c["failed"] + c["skipped"] == 200
    assert c["ok"] == 5 and c["failed"] == 3 and c["skipped"] == 192
    assert elapsed < 30, elapsed
    assert result.exit_code == EXIT_REQUESTS_FAILED
    assert result.data["stopped"]["reason"] == "circuit breaker" and result.data["stopped"]["fail_after"] == 3
    skipped = [f for f in result.data["failures"] if f["status"] == "skipped"]
    assert skipped and all("--fail-after" in f["error"] for f in skipped)
    doc = json.loads((tmp_path / "run.json").read_text())
    assert next(iter(doc["runs"].values()))["images"]["skipped"] == 192  # written, every image accounted for


# --------------------------------------------------------------------------------------------------
# R6: bounded responses


def _peak_reset() -> None:
    """Reset this process's peak RSS (VmHWM), so that the next reading is the peak from now on."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _status_mib(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(key)


HUGE = 300_000_000


class _Hostile(BaseHTTPRequestHandler):
    """Ready, the right metadata, then 300 MB of "logits" for every inference (declared, or chunked)."""

    model = ""
    shape: ClassVar[list[int]] = []
    chunked = False
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _json(self, doc: Any) -> None:
        body = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.endswith("/ready"):
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._json(
            {
                "name": self.model,
                "inputs": [{"name": "boundary", "datatype": "UINT8", "shape": self.shape}],
                "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}],
            }
        )

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if self.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(HUGE))
        self.end_headers()
        block = b"[" + b"0.0," * (1 << 18)
        try:
            for _ in range(HUGE // len(block)):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block) if self.chunked else block)
        except OSError:
            pass  # the client hung up: what it should do


@pytest.mark.e2e
@pytest.mark.parametrize("chunked", [False, True])
def test_http_client_refuses_a_300_mb_response(bundle: Path, chunked: bool) -> None:
    from isplit_export.jobs.run import run

    shape = [-1, *_manifest(bundle)["splits"][0]["boundary"]["shape"][1:]]
    handler = type("H", (_Hostile,), {"model": _model(bundle), "shape": shape, "chunked": chunked})
    httpd = ThreadingHTTPServer((LOOPBACK, 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        options = RunOptions(
            bundle=bundle,
            server=f"{LOOPBACK}:{httpd.server_address[1]}",
            protocol="http",
            requests=3,
            retries=1,
            backoff_ms=10,
            timeout_ms=10000,
            no_write=True,
        )
        rss0 = _status_mib("VmRSS")
        _peak_reset()
        t = time.monotonic()
        result = run(options)
        elapsed = time.monotonic() - t
        peak = _status_mib("VmHWM")
    finally:
        httpd.shutdown()
        httpd.server_close()
    c = result.data["images"]
    assert c["ok"] == 0 and c["failed"] == 3 and result.exit_code == 6
    errors = {f["error"] for f in result.data["failures"]}
    assert len(errors) == 1, errors
    assert "limit for the logits: refused" in errors.pop()
    assert "limit for the logits" in result.data["goldens"]["failures"][0]
    assert peak - rss0 < 50, (rss0, peak)
    assert elapsed < 30


@pytest.mark.e2e
def test_grpc_client_refuses_an_oversized_response(bundle: Path) -> None:
    """A gRPC stand-in (tritonclient's service definition) answering every inference with 64 MB of raw
    logits: refused by the channel's receive limit (the logits of one image + 64 KiB). The stand-in runs in
    this process (its blob and gRPC's serialised copy would blur an RSS reading): the error says which limit."""
    from concurrent import futures

    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    from isplit_export.jobs.run import run

    model = _model(bundle)
    dims = [-1, *_manifest(bundle)["splits"][0]["boundary"]["shape"][1:]]
    blob = bytes(64 << 20)

    class Hostile(service_pb2_grpc.GRPCInferenceServiceServicer):
        def ServerReady(self, request: Any, context: Any) -> Any:
            return service_pb2.ServerReadyResponse(ready=True)

        def ModelReady(self, request: Any, context: Any) -> Any:
            return service_pb2.ModelReadyResponse(ready=True)

        def ModelMetadata(self, request: Any, context: Any) -> Any:
            t = service_pb2.ModelMetadataResponse.TensorMetadata
            return service_pb2.ModelMetadataResponse(
                name=model,
                inputs=[t(name="boundary", datatype="UINT8", shape=dims)],
                outputs=[t(name="logits", datatype="FP32", shape=[-1, 10])],
            )

        def ModelInfer(self, request: Any, context: Any) -> Any:
            out = service_pb2.ModelInferResponse.InferOutputTensor(
                name="logits", datatype="FP32", shape=[1, len(blob) // 4]
            )
            return service_pb2.ModelInferResponse(model_name=model, outputs=[out], raw_output_contents=[blob])

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2), options=[("grpc.max_send_message_length", -1)]
    )
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Hostile(), server)
    port = server.add_insecure_port(f"{LOOPBACK}:0")
    server.start()
    try:
        options = RunOptions(
            bundle=bundle,
            server=f"{LOOPBACK}:{port}",
            requests=3,
            retries=1,
            backoff_ms=10,
            timeout_ms=10000,
            no_write=True,
        )
        result = run(options)
    finally:
        server.stop(0)
    c = result.data["images"]
    assert c["ok"] == 0 and c["failed"] == 3 and result.exit_code == 6
    error = result.data["failures"][0]["error"]
    assert "RESOURCE_EXHAUSTED" in error and "larger than max" in error, error
    assert "\n" not in error and f"vs. {65536 + 4 * 10})" in error  # 10 classes x 4 bytes + 64 KiB


# --------------------------------------------------------------------------------------------------
# R7: interrupted, run.json written, and the line says so


@pytest.mark.e2e
@pytest.mark.parametrize(
    "sig,code,word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
)
def test_interrupt_writes_run_json_and_says_so(
    bundle: Path, served: Server, tmp_path: Path, sig: int, code: int, word: str
) -> None:
    """The real CLI in a child process; the signal is sent to it after its 5th finished request (a hook on
    the recorder times it; the command, its handlers and its output are the real ones)."""
    out_file = tmp_path / "run.json"
    script = (
        "import os, sys\n"
        "from isplit_export.serving import records\n"
        "add = records.Recorder.add\n"
        "def hooked(self, req, logits):\n"
        "    add(self, req, logits)\n"
        f"    if sum(self.counts.values()) == 5: os.kill(os.getpid(), {int(sig)})\n"
        "records.Recorder.add = hooked\n"
        "from isplit_export.cli import main\n"
        f"sys.exit(main(['run', {str(bundle)!r}, '--url', {served.address!r}, '--requests', '1000', "
        f"'--out', {str(out_file)!r}]))\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
    )
    assert p.returncode == code, (p.returncode, p.stdout[-2000:], p.stderr[-2000:])
    line = _one_line(p.stderr)
    assert (
        line.startswith(f"error: {word}")
        and f"wrote {out_file}" in line
        and "nothing was written" not in line
    )
    r = next(iter(json.loads(out_file.read_text())["runs"].values()))
    c = r["images"]
    assert c["ok"] + c["failed"] + c["skipped"] == c["requests"] == 1000 and c["skipped"] >= 900
    assert f"{c['ok']} ok, {c['failed']} failed, {c['skipped']} skipped" in line
    assert r["interrupted"] and r["stopped"] == {"reason": "signal", "signal": signal.Signals(sig).name}
    assert "requests:" in p.stdout and p.stdout.strip().splitlines()[-1] == f"wrote {out_file}"
