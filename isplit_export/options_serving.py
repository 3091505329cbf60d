"""The serving commands' options: :class:`ServeOptions` (``isplit-export serve``) and :class:`RunOptions`
(``isplit-export run``), with the ``HOST:PORT`` parser and the protocol and backend vocabularies. Torch-free."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from isplit_export.backend_names import RUN_BACKENDS, RunBackend
from isplit_export.errors import BadInputError

WireProtocol = Literal["grpc", "http"]
PROTOCOLS: tuple[str, ...] = get_args(WireProtocol)
"""``RunOptions.protocol``: the Open Inference Protocol over gRPC, or JSON over HTTP/REST."""
LOOPBACK = "127.0.0.1"


def parse_address(text: str, flag: str = "--url") -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); one :class:`BadInputError` line naming the flag otherwise."""
    host, sep, port = str(text).strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise BadInputError(f"{flag} {text!r}: pass HOST:PORT, e.g. {LOOPBACK}:8001")
    return host.strip("[]"), int(port)


def _check_port(port: int, flag: str) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise BadInputError(f"{flag} {port}: pass a TCP port in 1..65535")


@dataclass(frozen=True)
class ServeOptions:
    """``isplit-export serve``: the bundle's tails over gRPC (``port``) and HTTP (``http_port``) with MLServer.

    ``split`` None serves every split; ``threads`` are the onnxruntime intra-op threads of each tail
    (0: onnxruntime's default, all cores); ``expect_sha256`` pins the manifest (checked by the contract).
    """

    bundle: Path = Path("bundle")
    split: int | None = None
    host: str = LOOPBACK
    port: int = 8001
    http_port: int | None = None
    """HTTP/REST port (None: ``port + 1``)."""
    threads: int = 0
    expect_sha256: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "bundle", Path(self.bundle))
        if self.http_port is None:
            object.__setattr__(self, "http_port", self.port + 1)
        _check_port(self.port, "--port")
        _check_port(int(self.http_port or 0), "--http-port")
        if self.http_port == self.port:
            raise BadInputError(f"--http-port {self.http_port} equals --port: pass two different ports")
        if self.split is not None and self.split < 1:
            raise BadInputError(f"--split {self.split}: pass a split number 1..N (as in splits/NN-*)")
        if self.threads < 0:
            raise BadInputError(f"--threads {self.threads}: pass 0 (onnxruntime's default) or more")
        if not self.host:
            raise BadInputError(f"--host {self.host!r}: pass an address to listen on, e.g. {LOOPBACK}")


@dataclass(frozen=True)
class RunOptions:
    """``isplit-export run``: the head here, the boundary to a server at ``server``, every request measured.

    Without ``data`` the split's golden inputs are sent. ``requests`` sends that many (cycling over the
    images), ``duration_s`` sends for that long; neither: each image once. ``concurrency`` requests are
    kept in flight. A failed request (error, ``timeout_ms``, wrong answer) is retried ``retries`` times
    after ``backoff_ms``, doubling, at most :data:`MAX_BACKOFF_MS`. The server must be ready within
    ``wait_s``. ``out``: ``run.json`` (None: ``BUNDLE/run.json``); ``fail_after``: the circuit breaker (docs/serving.md).
    ``expect_sha256`` pins the manifest.
    """

    bundle: Path = Path("bundle")
    server: str = f"{LOOPBACK}:8001"
    split: int = 1
    data: Path | None = None
    images: int | None = None
    requests: int | None = None
    duration_s: float | None = None
    concurrency: int = 1
    protocol: WireProtocol = "grpc"
    timeout_ms: float = 1000.0
    retries: int = 6
    backoff_ms: float = 100.0
    wait_s: float = 10.0
    backend: RunBackend = "auto"
    threads: int = 1
    """onnxruntime intra-op threads of the local head (and of the local reference runs)."""
    out: Path | None = None
    expect_sha256: str | None = None
    no_write: bool = False
    fail_after: int = 5
    trust_engines: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "bundle", Path(self.bundle))
        for name in ("data", "out"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        parse_address(self.server)
        checks = (
            (self.split >= 1, f"--split {self.split}: pass a split number 1..N (as in splits/NN-*)"),
            (self.images is None or self.images >= 1, f"--images {self.images}: pass a positive number"),
            (
                self.requests is None or self.requests >= 1,
                f"--requests {self.requests}: pass a positive number",
            ),
            (
                self.duration_s is None or 0 < self.duration_s <= 86400.0,
                f"--duration {self.duration_s}: pass seconds in (0, 86400]",
            ),
            (
                self.requests is None or self.duration_s is None,
                "--requests and --duration exclude each other: pass one",
            ),
            (
                1 <= self.concurrency <= 256,
                f"--concurrency {self.concurrency}: pass 1..256 requests in flight",
            ),
            (self.protocol in PROTOCOLS, f"--protocol {self.protocol!r}: choose {' or '.join(PROTOCOLS)}"),
            (
                0 < self.timeout_ms <= 600_000,
                f"--timeout-ms {self.timeout_ms}: pass milliseconds in (0, 600000]",
            ),
            (0 <= self.retries <= 20, f"--retries {self.retries}: pass 0..20"),
            (
                0 <= self.backoff_ms <= MAX_BACKOFF_MS,
                f"--backoff-ms {self.backoff_ms}: pass 0..{MAX_BACKOFF_MS:g}",
            ),
            (0 <= self.wait_s <= 600, f"--wait {self.wait_s}: pass 0..600 seconds"),
            (self.backend in RUN_BACKENDS, f"--backend {self.backend!r}: choose {' or '.join(RUN_BACKENDS)}"),
            (self.threads >= 0, f"--threads {self.threads}: pass 0 (onnxruntime's default) or more"),
            (0 <= self.fail_after <= 1_000_000, f"--fail-after {self.fail_after}: pass 0 (never) or a count"),
            (
                self.out is None or not self.no_write,
                "--out and --no-write contradict each other: pass one of them",
            ),
        )
        for ok, message in checks:
            if not ok:
                raise BadInputError(message)


MAX_BACKOFF_MS = 5000.0
"""Cap of one retry's wait: a retry budget stays bounded in time whatever ``retries`` is."""
