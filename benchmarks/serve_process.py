"""``isplit-export serve BUNDLE`` in a child process on 127.0.0.1, started and stopped by its caller.

One home for the serving benchmark and the serving tests (tests/support/serving_helpers.py imports it):
benchmarks import the package, never the tests.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


class ServeProcess:
    """``isplit-export serve BUNDLE`` (1 onnxruntime thread) on a gRPC and an HTTP port, free ones unless given;
    started and stopped by the caller."""

    def __init__(
        self,
        bundle: Path,
        *,
        split: int | None = None,
        port: int | None = None,
        http_port: int | None = None,
        log: Path | None = None,
        cwd: Path | None = None,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.bundle = bundle
        self.cwd = cwd
        """Working directory of the server process (a relative ``bundle`` is resolved there)."""
        self.split = split
        self.port = port or free_port()
        self.http_port = http_port or free_port()
        self.log = log
        self.extra = extra
        """More ``serve`` arguments (``--expect-sha256 ...``)."""
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def start(self) -> ServeProcess:
        """Start the server process (does not wait for it)."""
        cmd = [
            sys.executable,
            "-m",
            "isplit_export.cli",
            "serve",
            str(self.bundle),
            *(() if self.split is None else ("--split", str(self.split))),
            "--host",
            LOOPBACK,
            "--port",
            str(self.port),
            "--http-port",
            str(self.http_port),
            "--threads",
            "1",
            *self.extra,
        ]
        out = open(self.log, "ab") if self.log is not None else subprocess.DEVNULL  # noqa: SIM115
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=self.cwd)
        return self

    def wait_ready(self, model: str, timeout: float = 90.0) -> None:
        """Block until the model answers ready over gRPC (bounded); raise if the process died or time ran out."""
        import tritonclient.grpc as grpcclient

        deadline = time.monotonic() + timeout
        fast = [
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 500),
        ]  # poll a server that is still starting, promptly
        client = grpcclient.InferenceServerClient(self.address, channel_args=fast)
        try:
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"serve exited with {self.proc.returncode} (log: {self.log})")
                try:
                    if client.is_server_ready() and client.is_model_ready(model):
                        return
                except Exception:
                    pass
                time.sleep(0.2)
        finally:
            client.close()
        raise TimeoutError(f"server at {self.address} not ready within {timeout} s (log: {self.log})")

    def kill(self) -> None:
        """SIGKILL: the server dies mid-run, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def stop(self, timeout: float = 30.0, sig: int = signal.SIGTERM) -> int:
        """``sig`` (SIGTERM, or SIGINT as Ctrl-C) and wait (bounded); the exit code (killed if it does not stop in time)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        return int(self.proc.returncode)
