"""The ``tritonclient`` side of ``isplit-export run``: one connection per worker (gRPC, or JSON over HTTP),
the server's readiness and metadata, and each request sent with bounded retries and backoff.

``tritonclient`` is imported lazily, inside :class:`Client`; this module must never be imported by
:mod:`.serve` or :mod:`.runtime` (MLServer and ``tritonclient.grpc`` register the same protobuf symbols,
so they cannot share a process).
"""

from __future__ import annotations

import contextlib
import importlib
import threading
import time
from typing import Any

import numpy as np

from isplit_export.errors import BadInputError, IsplitError, first_line
from isplit_export.options_serving import MAX_BACKOFF_MS, RunOptions, parse_address
from isplit_export.serving.records import ERROR_CHARS, Request
from isplit_export.version import __version__

EXIT_UNREACHABLE = 5
"""No server answered at ``--url`` within ``--wait`` seconds (or the model is not loaded there)."""
DATATYPES = {"float32": "FP32", "float16": "FP16", "uint8": "UINT8", "int8": "INT8"}
GRPC_PREFIX_BYTES = 5
"""gRPC length-prefixed message: 1 flag byte + 4 length bytes before each protobuf message."""
_MAX_MESSAGE = 2**31 - 1
RESPONSE_OVERHEAD_BYTES = 64 << 10
"""Room for everything in a response besides the logits: names, shape, parameters, framing; and for the
control answers (readiness, metadata, statistics), which are a few hundred bytes."""
BYTES_PER_LOGIT = {"grpc": 4, "http": 32}
"""A float32 logit in the response: 4 bytes raw (gRPC), at most 32 characters as JSON text (HTTP)."""


def response_limit(protocol: str, classes: int, batch: int = 1) -> int:
    """The most bytes a response may have: ``batch`` x ``classes`` logits plus the overhead. A server
    that sends more is refused before the client holds it (a hostile server cannot fill its memory)."""
    return RESPONSE_OVERHEAD_BYTES + BYTES_PER_LOGIT[protocol] * max(classes, 0) * max(batch, 1)


class _BoundedResponse:
    """An HTTP response read at most ``limit`` bytes far: a larger ``Content-Length`` is refused before the
    body is read, a chunked body is read in blocks and refused past the limit, a compressed body (never
    asked for: it could expand without bound) is refused. The connection is then dropped, not reused."""

    def __init__(self, response: Any, limit: int) -> None:
        self._r, self._limit = response, limit
        if response.get("Content-Encoding") not in (None, "identity"):
            self._refuse(
                f"the server sent a {response.get('Content-Encoding')}-compressed response, never asked for"
            )
        length = response.get("Content-Length")
        if length is not None and (not str(length).isdigit() or int(length) > limit):
            self._refuse(
                f"the server's response declares {length} bytes, over the {limit}-byte limit for the logits"
            )

    def _refuse(self, why: str) -> None:
        pool, sock = getattr(self._r, "_pool", None), getattr(self._r, "_sock", None)
        with contextlib.suppress(Exception):  # drop the connection: its unread body must not be reused
            if pool is not None and sock is not None:
                pool.release_socket(sock)
            elif sock is not None:
                sock.close()
            self._r._sock = self._r._pool = None
        raise ResponseTooLargeError(f"{why}: refused")

    def get(self, key: str, default: Any = None) -> Any:
        return self._r.get(key, default)

    @property
    def status_code(self) -> int:
        return int(self._r.status_code)

    def read(self, length: int | None = None) -> bytes:
        if length is not None and length >= 0:
            return bytes(self._r.read(min(length, self._limit + 1)))
        parts: list[bytes] = []
        total = 0
        while chunk := self._r.read(64 << 10):
            total += len(chunk)
            if total > self._limit:
                self._refuse(f"the server's response exceeds the {self._limit}-byte limit for the logits")
            parts.append(chunk)
        return b"".join(parts)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._r, name)


class ResponseTooLargeError(ValueError):
    """A response over :func:`response_limit` (or compressed): refused, the request fails (and is retried)."""


def require_packages(options: RunOptions) -> None:
    """Fail before any work, in one line naming the install, when ``run`` lacks a package beyond the core:
    the client (``tritonclient``; the ``device`` extra has its gRPC half) or, for ``--data``, pillow. A device
    installed with only the core would otherwise stop at the first request with an internal failure."""
    needed = ["tritonclient.grpc" if options.protocol == "grpc" else "tritonclient.http"]
    if options.data is not None:
        needed.append("PIL.Image")
    for module in needed:
        try:
            importlib.import_module(module)
        except ImportError as e:
            if module == "tritonclient.http":
                fix = "pip install 'tritonclient[http]' (the device extra has gRPC only), or --protocol grpc"
            else:
                fix = (
                    "pip install 'isplit-export[device]', or with the wheel published next to the bundle: "
                    f"pip install 'isplit_export-{__version__}-py3-none-any.whl[device]'"
                )
            raise BadInputError(
                f"run needs {module}, which does not import here ({first_line(e, ERROR_CHARS)}): {fix}"
            ) from e


class ServerUnreachableError(IsplitError):
    """No inference server (or not the model) at the address: exit :data:`EXIT_UNREACHABLE`."""

    exit_code = EXIT_UNREACHABLE


class Client:
    """One tritonclient connection (gRPC or HTTP JSON) to one model; one per worker thread.

    Responses are bounded by :func:`response_limit` for ``classes`` logits (gRPC's receive limit; the HTTP
    body read through :class:`_BoundedResponse`); ``classes`` 0 allows the control answers only.
    """

    def __init__(self, options: RunOptions, model: str, classes: int = 0) -> None:
        self.protocol = options.protocol
        self.model = model
        self.limit = response_limit(options.protocol, classes)
        self.timeout_s = options.timeout_ms / 1000.0
        # control calls (ready, metadata, statistics) are bounded too: a hung server cannot stall the run
        self._ctl: dict[str, float] = (
            {"client_timeout": max(self.timeout_s, 1.0)} if self.protocol == "grpc" else {}
        )
        if self.protocol == "grpc":
            import tritonclient.grpc as grpcclient

            self._mod: Any = grpcclient
            self._client: Any = grpcclient.InferenceServerClient(
                options.server,
                channel_args=[
                    ("grpc.max_send_message_length", _MAX_MESSAGE),
                    ("grpc.max_receive_message_length", self.limit),
                    # reconnect quickly after a server restart (gRPC's default backoff grows to 120 s)
                    ("grpc.initial_reconnect_backoff_ms", 100),
                    ("grpc.min_reconnect_backoff_ms", 100),
                    ("grpc.max_reconnect_backoff_ms", 1000),
                ],
            )
        else:
            import tritonclient.http as httpclient

            self._mod = httpclient
            self._client = httpclient.InferenceServerClient(
                options.server, connection_timeout=max(self.timeout_s, 1.0), network_timeout=self.timeout_s
            )
            # tritonclient reads a whole body into memory: every response goes through the bounded reader
            # (its connection object is private API, pinned by the tests of a server sending 300 MB)
            stub = self._client._client_stub
            post, get = stub.post, stub.get
            stub.post = lambda *a, **kw: _BoundedResponse(post(*a, **kw), self.limit)
            stub.get = lambda *a, **kw: _BoundedResponse(get(*a, **kw), self.limit)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a broken connection must not hide the run's result
            self._client.close()

    def ready(self) -> tuple[bool, str]:
        """(server and model ready, why not)."""
        try:
            if not self._client.is_server_ready(**self._ctl):
                return False, "the server is not ready"
            if not self._client.is_model_ready(self.model, **self._ctl):
                return False, f"model {self.model} is not loaded there"
            return True, ""
        except Exception as e:
            return False, first_line(e, ERROR_CHARS)

    def metadata(self) -> tuple[str, list[int]]:
        """(datatype, shape) of the model's first input, as the server declares it."""
        meta = self._client.get_model_metadata(self.model, **self._ctl)
        if self.protocol == "grpc":
            inp = meta.inputs[0]
            return str(inp.datatype), [int(d) for d in inp.shape]
        inp = meta["inputs"][0]
        return str(inp["datatype"]), [int(d) for d in inp["shape"]]

    def encode(self, boundary: np.ndarray) -> Any:
        """The protocol's input tensor holding the boundary's bytes as they are (no conversion)."""
        dtype = DATATYPES[boundary.dtype.name]
        inp = self._mod.InferInput("boundary", list(boundary.shape), dtype)
        if self.protocol == "grpc":
            inp.set_data_from_numpy(boundary)
        else:  # MLServer's REST endpoint takes JSON, not tritonclient's binary-data extension
            inp.set_data_from_numpy(boundary, binary_data=False)
        return inp

    def wire_bytes(self, inp: Any) -> int:
        """Bytes of one request on the wire above TCP: the gRPC message plus its 5-byte prefix
        (HTTP/2 frame and header bytes not included), or the HTTP body (JSON)."""
        if self.protocol == "grpc":
            from tritonclient.grpc._utils import _get_inference_request as grpc_request

            msg = grpc_request(self.model, [inp], "", "", None, 0, False, False, 0, None, None)
            return int(msg.ByteSize()) + GRPC_PREFIX_BYTES
        from tritonclient.http._utils import _get_inference_request as http_request

        body, _ = http_request([inp], "", self._outputs(), 0, False, False, 0, None, None)
        return len(body)

    def _outputs(self) -> Any:
        if self.protocol == "grpc":
            return None
        return [self._mod.InferRequestedOutput("logits", binary_data=False)]

    def infer(self, inp: Any) -> tuple[np.ndarray, float | None]:
        """(logits, server compute ms from the response, if it carries it)."""
        if self.protocol == "grpc":
            result = self._client.infer(self.model, [inp], client_timeout=self.timeout_s)
            params = result.get_response().parameters
            us = params["compute_us"].int64_param if "compute_us" in params else None
        else:
            result = self._client.infer(self.model, [inp], outputs=self._outputs())
            us = (result.get_response().get("parameters") or {}).get("compute_us")
        logits = result.as_numpy("logits")
        if logits is None:
            raise ValueError("the response has no output 'logits'")
        return np.asarray(logits), (float(us) / 1000.0 if us is not None else None)

    def compute_statistics(self) -> tuple[int, int] | None:
        """(count, compute ns) of the model from the statistics extension (Triton), None if unsupported."""
        try:
            stats = self._client.get_inference_statistics(self.model, **self._ctl)
        except Exception:
            return None
        try:
            if self.protocol == "grpc":
                c = stats.model_stats[0].inference_stats.compute_infer
                return int(c.count), int(c.ns)
            c = stats["model_stats"][0]["inference_stats"]["compute_infer"]
            return int(c["count"]), int(c["ns"])
        except (IndexError, KeyError, AttributeError):
            return None


def wait_ready(options: RunOptions, model: str) -> None:
    """Poll the server until it and the model are ready, at most ``wait_s``; else one line (exit 5)."""
    deadline = time.monotonic() + options.wait_s
    delay = 0.05
    client = Client(options, model)
    try:
        while True:
            ok, why = client.ready()
            if ok:
                return
            if time.monotonic() + delay > deadline:
                break
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
    finally:
        client.close()
    _, port = parse_address(options.server)
    raise ServerUnreachableError(
        f"no inference server ready with model {model} at {options.server} ({options.protocol}) within "
        f"{options.wait_s:g} s ({why}): start one with `isplit-export serve {options.bundle} --port {port}` "
        f"(or tritonserver --model-repository {options.bundle}/triton), or pass the right --url HOST:PORT"
    )


def _valid_logits(logits: np.ndarray, classes: int) -> str | None:
    """Why the response's logits are not what the tail returns (name checked by the client), or None."""
    if logits.dtype != np.float32:
        return f"the server answered logits of dtype {logits.dtype}, expected float32"
    if logits.shape != (1, classes):
        return f"the server answered logits of shape {list(logits.shape)}, expected [1, {classes}]"
    if not np.all(np.isfinite(logits)):
        return "the server answered non-finite logits"
    return None


def send(
    client: Client,
    options: RunOptions,
    boundary: np.ndarray,
    classes: int,
    req: Request,
    stop: threading.Event,
) -> tuple[Any, np.ndarray | None]:
    """Encode and send one boundary with retries; fills ``req``; returns (the encoded input, logits or None)."""
    t = time.perf_counter()
    inp = client.encode(boundary)
    req.encode_ms = (time.perf_counter() - t) * 1e3
    for attempt in range(options.retries + 1):
        req.attempts = attempt + 1
        t = time.perf_counter()
        try:
            logits, server_ms = client.infer(inp)
            rtt = (time.perf_counter() - t) * 1e3
            problem = _valid_logits(logits, classes)
            if problem is None:
                req.round_trip_ms, req.server_ms, req.status, req.error = rtt, server_ms, "ok", None
                return inp, logits
            req.error = problem
        except Exception as e:  # timeouts, refused connections, server errors: all retried, all bounded
            req.error = first_line(e, ERROR_CHARS)
        if attempt < options.retries and not stop.is_set():
            stop.wait(min(options.backoff_ms * 2**attempt, MAX_BACKOFF_MS) / 1e3)
        if stop.is_set():
            break
    req.status = "failed"
    return inp, None


__all__ = [
    "DATATYPES",
    "EXIT_UNREACHABLE",
    "GRPC_PREFIX_BYTES",
    "Client",
    "ResponseTooLargeError",
    "ServerUnreachableError",
    "require_packages",
    "response_limit",
    "send",
    "wait_ready",
]
