"""Serving is the trust boundary (issue 24: S1, S3, R1, R2, R3), against real ``isplit-export serve`` processes.

Every server here is a real MLServer on 127.0.0.1 (``tests/support/serving_helpers.Server``), started on
free ports and stopped at the end; requests are raw HTTP bodies and raw gRPC messages
(``tests/support/serving_probes``), as a hostile client sends them. Each test failed on ``bee0a76``.
"""

from __future__ import annotations

import json
import math
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from isplit_export.cli import main
from tests.support import serving_probes as probes
from tests.support.helpers import DIGITS
from tests.support.serving_helpers import LOOPBACK, Server, free_port

pytest.importorskip("tritonclient.grpc")  # (not mlserver: both register the same protobuf names)

CLI = [sys.executable, "-m", "isplit_export.cli"]


def _cli(*args: object, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """The CLI in a child process (bounded): serve installs signal handlers and runs its own loop."""
    return subprocess.run(
        [*CLI, *(str(a) for a in args)], capture_output=True, text=True, timeout=timeout, check=False
    )


def _one_line(p: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert p.returncode == code, (p.returncode, p.stdout[-2000:], p.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert "Traceback" not in p.stderr and "serving" not in p.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def _model(bundle: Path) -> tuple[str, list[int], str]:
    """The first served model's name, one image's boundary dims and its datatype (from the Triton block)."""
    entry = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))["triton"]["models"][0]
    return (
        str(entry["name"]),
        [int(d) for d in entry["input"]["dims"][1:]],
        str(entry["input"]["data_type"])[5:],
    )


def _sha(bundle: Path) -> str:
    from isplit_export.contract import manifest_sha256

    return manifest_sha256(bundle)


@pytest.fixture(scope="module")
def fp16_bundle(tmp_path_factory: pytest.TempPathFactory, digits_weights: Path, digits_dir: Path) -> Path:
    """A digits bundle with an fp16 boundary (a float wire: NaN can be sent) and a Triton repository."""
    out = tmp_path_factory.mktemp("serve16") / "bundle"
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
                "fp16",
                "--triton",
                "--out",
                str(out),
                "--latency-runs",
                "1",
            ]
        )
        == 0
    )
    return out


# --------------------------------------------------------------------------------------------------
# S1: only what the manifest lists is served; the repository API is off


def test_an_unlisted_model_folder_is_refused_and_never_runs(tmp_path: Path, int8_bundle: Path) -> None:
    bundle = tmp_path / "b"
    shutil.copytree(int8_bundle, bundle)
    marker = tmp_path / "marker"
    probes.plant_evil_model(bundle, marker)
    _one_line(
        _cli("verify", bundle, "--no-write", "--expect-sha256", _sha(bundle)),
        1,
        "evil/",
        "manifest does not list",
    )
    _one_line(_cli("serve", bundle, "--port", free_port(), "--http-port", free_port()), 1, "evil/")
    _one_line(_cli("run", bundle, "--url", f"{LOOPBACK}:{free_port()}", "--wait", "0"), 1, "evil/")
    assert not marker.exists()
    shutil.rmtree(bundle / "evil")
    # an unlisted model folder inside the Triton repository: the same finding (Triton would load it)
    (bundle / "triton" / "evil" / "1").mkdir(parents=True)
    (bundle / "triton" / "evil" / "config.pbtxt").write_text('name: "evil"\nbackend: "python"\n')
    _one_line(_cli("verify", bundle, "--no-write"), 1, "triton/evil/")
    shutil.rmtree(bundle / "triton" / "evil")
    assert _cli("verify", bundle, "--no-write").returncode == 0


def test_the_repository_api_is_off_and_the_tails_are_private_copies(
    tmp_path: Path, int8_bundle: Path
) -> None:
    bundle = tmp_path / "b"
    shutil.copytree(int8_bundle, bundle)
    name, dims, datatype = _model(bundle)
    before = set(Path(tempfile.gettempdir()).glob("isplit-serve-*"))
    server = Server(bundle, log=tmp_path / "serve.log", extra=("--expect-sha256", _sha(bundle))).start()
    try:
        server.wait_ready(name)
        for path in (
            "/v2/repository/index",
            "/v2/repository/models/evil/load",
            f"/v2/repository/models/{name}/load",
            f"/v2/repository/models/{name}/unload",
        ):
            status, text = probes.http_post(server.http_port, path, b"{}")
            assert status == 403 and "repository API is off" in text, (path, status, text)
        for verb in ("load", "unload"):
            code, details = probes.grpc_repository(server.address, verb, name)
            assert code == "PERMISSION_DENIED" and "repository API is off" in details
        # the tail still answers, and it is served from a private copy: the bundle's file no longer matters
        (
            bundle / json.loads((bundle / "manifest.json").read_text())["splits"][0]["files"]["tail"]
        ).write_bytes(b"gone")
        ok = {"datatype": datatype, "shape": [1, *dims], "raw": bytes(math.prod(dims))}
        assert probes.grpc_infer(server.address, name, "boundary", ok) == ("OK", "")
        assert len(set(Path(tempfile.gettempdir()).glob("isplit-serve-*")) - before) == 1  # the private store
    finally:
        assert server.stop() == 0
    assert (
        set(Path(tempfile.gettempdir()).glob("isplit-serve-*")) - before == set()
    )  # removed when it stopped


# --------------------------------------------------------------------------------------------------
# S3: --expect-sha256 on serve and run, checked before anything is served or sent


def test_serve_and_run_refuse_another_manifest_before_anything(tmp_path: Path, int8_bundle: Path) -> None:
    wrong = "0" * 64
    port = free_port()
    t = time.monotonic()
    _one_line(
        _cli("serve", int8_bundle, "--port", port, "--expect-sha256", wrong),
        1,
        "not the expected",
        "00000000",
    )
    assert time.monotonic() - t < 60
    with socket.socket() as probe:  # nothing was left listening on the port
        assert probe.connect_ex((LOOPBACK, port)) != 0
    with socket.socket() as listener:  # run: not one connection is made to the server
        listener.bind((LOOPBACK, 0))
        listener.listen(4)
        listener.setblocking(False)
        address = f"{LOOPBACK}:{listener.getsockname()[1]}"
        _one_line(
            _cli(
                "run",
                int8_bundle,
                "--url",
                address,
                "--expect-sha256",
                wrong,
                "--out",
                tmp_path / "r.json",
            ),
            1,
            "not the expected",
        )
        with pytest.raises(BlockingIOError):
            listener.accept()
    assert not (tmp_path / "r.json").exists()
    _one_line(_cli("run", int8_bundle, "--url", address, "--expect-sha256", "abc"), 2, "--expect-sha256")


# --------------------------------------------------------------------------------------------------
# R1 + R3: bounded requests; every malformed request is a 400 / INVALID_ARGUMENT with one line


def test_a_150_mb_request_is_refused_and_the_server_stays_small(tmp_path: Path, int8_bundle: Path) -> None:
    name, dims, datatype = _model(int8_bundle)
    server = Server(int8_bundle, log=tmp_path / "serve.log").start()
    try:
        server.wait_ready(name)
        assert server.proc is not None
        time.sleep(1.0)
        idle = probes.rss_mib(server.proc.pid)
        batch = 150_000_000 // (2 * math.prod(dims)) + 1  # "0," per value: >= 150 MB
        chunks, length = probes.big_json_body("boundary", dims, datatype, batch)
        assert length >= 150_000_000
        status = probes.http_post_stream(server.http_port, f"/v2/models/{name}/infer", chunks, length)
        assert status in (413, 0), status  # 413, or the connection closed on the refused body
        time.sleep(1.0)
        assert probes.rss_mib(server.proc.pid) - idle < 50.0
        # a chunked body (no Content-Length) over the limit: refused as it grows
        status, text = _chunked_post(server.http_port, f"/v2/models/{name}/infer", 4 << 20)
        assert status == 413 and "request body over" in text, (status, text)
        assert probes.rss_mib(server.proc.pid) - idle < 50.0
        # gRPC has the same bound: a 1 MiB message (under gRPC's default 4 MiB) is refused before it is decoded
        big = {"datatype": datatype, "shape": [1, *dims], "raw": bytes(1 << 20)}
        assert probes.grpc_infer(server.address, name, "boundary", big)[0] == "RESOURCE_EXHAUSTED"
        # a compressed body (MLServer would inflate it without a bound): 415
        status, text = _post_with_headers(
            server.http_port, f"/v2/models/{name}/infer", {"Content-Encoding": "gzip"}
        )
        assert status == 415, (status, text)
        # the server still answers a well-formed request
        ok = {"datatype": datatype, "shape": [1, *dims], "raw": bytes(math.prod(dims))}
        assert probes.grpc_infer(server.address, name, "boundary", ok) == ("OK", "")
    finally:
        assert server.stop() == 0


def _chunked_post(port: int, path: str, total: int) -> tuple[int, str]:
    import http.client

    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=60)
    try:
        conn.putrequest("POST", path)
        conn.putheader("Transfer-Encoding", "chunked")
        conn.putheader("Content-Type", "application/json")
        conn.endheaders()
        chunk = b"0," * 32768
        try:
            for _ in range(total // len(chunk)):
                conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            conn.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        resp = conn.getresponse()
        return resp.status, resp.read(300).decode("utf-8", "replace")
    finally:
        conn.close()


def _post_with_headers(port: int, path: str, headers: dict[str, str]) -> tuple[int, str]:
    import http.client

    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=30)
    try:
        conn.request(
            "POST",
            path,
            body=b"\x1f\x8b" + bytes(20),
            headers={"Content-Type": "application/json", **headers},
        )
        resp = conn.getresponse()
        return resp.status, resp.read(300).decode("utf-8", "replace")
    finally:
        conn.close()


def _assert_refused(server: Server, name: str, cases: list[probes.Malformed]) -> None:
    for case in cases:
        status, text = probes.http_post(
            server.http_port, f"/v2/models/{name}/infer", probes.json_bytes(case.json)
        )
        assert status == 400, (case.name, status, text)
        error = json.loads(text)["error"]
        assert error and "\n" not in error, (case.name, text)
        code, details = probes.grpc_infer(server.address, name, "boundary", case.grpc)
        assert code == "INVALID_ARGUMENT" and details and "\n" not in details, (case.name, code, details)


def test_malformed_requests_are_400_never_500(tmp_path: Path, int8_bundle: Path, fp16_bundle: Path) -> None:
    for bundle in (int8_bundle, fp16_bundle):
        name, dims, datatype = _model(bundle)
        server = Server(bundle, log=tmp_path / f"serve-{datatype}.log").start()
        try:
            server.wait_ready(name)
            cases = probes.malformed_requests("boundary", dims, datatype)
            assert len(cases) == 10
            _assert_refused(server, name, cases)
            if (
                datatype == "FP16"
            ):  # NaN and infinity in the tail's own dtype: refused, not encoded into logits
                n = math.prod(dims)
                nan16 = struct.pack("<e", float("nan")) * n
                inf16 = struct.pack("<e", float("inf")) + bytes(2 * (n - 1))
                for raw in (nan16, inf16):
                    code, details = probes.grpc_infer(
                        server.address,
                        name,
                        "boundary",
                        {"datatype": "FP16", "shape": [1, *dims], "raw": raw},
                    )
                    assert code == "INVALID_ARGUMENT" and "non-finite" in details, (code, details)
                body = json.dumps(
                    {
                        "inputs": [
                            {
                                "name": "boundary",
                                "datatype": "FP16",
                                "shape": [1, *dims],
                                "data": [1e6] + [0.0] * (n - 1),
                            }
                        ]
                    }
                ).encode()
                status, text = probes.http_post(server.http_port, f"/v2/models/{name}/infer", body)
                assert status == 400 and "non-finite" in text, (status, text)  # 1e6 overflows fp16
            # a well-formed batch of the limit is served
            ok: dict[str, Any] = {
                "datatype": datatype,
                "shape": [8, *dims],
                "raw": bytes(8 * math.prod(dims) * (2 if datatype == "FP16" else 1)),
            }
            assert probes.grpc_infer(server.address, name, "boundary", ok) == ("OK", "")
        finally:
            assert server.stop() == 0


# --------------------------------------------------------------------------------------------------
# R2: one server per port


def test_serve_twice_on_one_port_is_refused_in_one_line(tmp_path: Path, int8_bundle: Path) -> None:
    name, _, _ = _model(int8_bundle)
    first = Server(int8_bundle, log=tmp_path / "first.log").start()
    try:
        first.wait_ready(name)
        for port, http_port in ((first.port, free_port()), (free_port(), first.http_port)):
            _one_line(
                _cli("serve", int8_bundle, "--port", port, "--http-port", http_port),
                2,
                f"{LOOPBACK}:",
                "in use",
            )
        assert first.proc is not None and first.proc.poll() is None
    finally:
        assert first.stop() == 0
    with socket.socket() as held:  # a port held by anything else: the same line, exit 2, no traceback
        held.bind((LOOPBACK, 0))
        held.listen(1)
        port = held.getsockname()[1]
        _one_line(
            _cli("serve", int8_bundle, "--port", port, "--http-port", free_port()),
            2,
            f"{LOOPBACK}:{port}",
            "in use",
        )
