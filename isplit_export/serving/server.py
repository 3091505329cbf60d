"""MLServer as the trust boundary: no repository API, bounded requests, one line per refusal, one server per port.

:class:`BoundedMLServer` is MLServer 1.7.1 with four changes, all made where MLServer builds its servers
(the constructor arguments, not its request path):

- **No model repository API.** ``POST /v2/repository/index|models/*/load|unload`` (HTTP) and the
  ``Repository*`` RPCs (gRPC; MLServer's deprecated repository service is not registered) are refused
  (403 / ``PERMISSION_DENIED``): a client can
  neither load a model from disk nor take a served tail down. MLServer has no setting for this.
- **Bounded bodies.** An HTTP body over :attr:`Limits.body_bytes` is refused with 413 before it is
  read (``Content-Length``) or as soon as what was read passes it (chunked: read here, up to the limit); a compressed body
  (``Content-Encoding``, which MLServer would inflate without a bound) with 415. gRPC messages are
  capped at the same size (``grpc_max_message_length``).
- **400, never 500.** A body that does not parse or validate (FastAPI answers 422) and a gRPC message
  MLServer cannot convert (it answers ``INTERNAL``) become 400 / ``INVALID_ARGUMENT`` with one line;
  the runtime (:mod:`isplit_export.serving.tail_runtime`) refuses the rest of a malformed request the same way.
- **No ``SO_REUSEPORT``** on the gRPC port (``grpc.so_reuseport`` 0): a second server cannot share it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import grpc
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from mlserver import MLServer
from mlserver.errors import InferenceError, MLServerError
from mlserver.grpc import GRPCServer
from mlserver.grpc.dataplane_pb2_grpc import add_GRPCInferenceServiceServicer_to_server
from mlserver.grpc.servicers import InferenceServicer
from mlserver.handlers import ModelRepositoryHandlers
from mlserver.rest import RESTServer
from mlserver.rest.responses import Response
from mlserver.types import RepositoryIndexRequest, RepositoryIndexResponse

REPOSITORY_OFF = "the model repository API is off: isplit-export serve serves the bundle's listed tails only"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class Limits:
    """The request bounds of one server (see :func:`isplit_export.serving.settings.limits`)."""

    body_bytes: int
    """Largest HTTP body and gRPC message."""
    max_batch: int
    """Largest batch (first dimension) of a request."""


class _RepositoryOff(MLServerError):
    def __init__(self) -> None:
        super().__init__(REPOSITORY_OFF, status_code=403)


class ClosedRepositoryHandlers(ModelRepositoryHandlers):
    """The repository handlers of both protocols: index lists nothing, load and unload are refused."""

    async def index(self, payload: RepositoryIndexRequest) -> RepositoryIndexResponse:
        raise _RepositoryOff()

    async def load(self, name: str) -> bool:
        raise _RepositoryOff()

    async def unload(self, name: str) -> bool:
        raise _RepositoryOff()


class BodyLimit:
    """ASGI middleware: the repository paths, compressed bodies and bodies over ``limit`` bytes are refused."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if str(scope.get("path", "")).startswith("/v2/repository"):
            await _answer(send, 403, REPOSITORY_OFF)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            await _answer(
                send, 415, f"Content-Encoding {encoding[:20]!r} is not accepted: send the JSON uncompressed"
            )
            return
        length = headers.get("content-length")
        too_big = (
            f"request body over {self.limit} bytes (this server's limit: batch and boundary of its tails)"
        )
        if length is not None and (not length.strip().isdigit() or int(length) > self.limit):
            await _answer(send, 413, too_big)
            return
        if length is not None:  # the server reads no more than Content-Length: the check above bounds it
            await self.app(scope, receive, send)
            return
        body = await _read_bounded(receive, self.limit)  # chunked: read up to the limit, refuse past it
        if body is None:
            await _answer(send, 413, too_big)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _read_bounded(receive: Receive, limit: int) -> bytes | None:
    """A chunked body, read until its end; None as soon as it passes ``limit`` bytes (the rest is never read)."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message.get("type") != "http.request":
            return b"".join(parts)
        chunk = bytes(message.get("body", b""))
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


async def _answer(send: Send, status: int, error: str) -> None:
    body = json.dumps({"error": error}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _invalid_body(request: Any, exc: Exception) -> Response:
    """FastAPI's 422 for a body that does not parse or validate, as a 400 with one line."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    what = str(first.get("msg", exc))[:200]
    return Response(
        status_code=400, content={"error": f"malformed request: {what}{f' at {where}' if where else ''}"}
    )


class _BoundedServicer(InferenceServicer):
    """MLServer's servicer: a message it cannot convert is ``INVALID_ARGUMENT`` (not ``INTERNAL``), and the
    repository RPCs are ``PERMISSION_DENIED``."""

    async def RepositoryIndex(self, request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, REPOSITORY_OFF)

    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, REPOSITORY_OFF)

    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, REPOSITORY_OFF)

    def _InsertHeaders(self, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return super()._InsertHeaders(request, context)
        except MLServerError:
            raise
        except Exception as e:
            raise InferenceError(f"malformed request: {str(e)[:200]}") from None


class _BoundedGRPCServer(GRPCServer):
    """MLServer's gRPC server without ``SO_REUSEPORT``, with the bounded servicer only (the deprecated
    ``inference.model_repository`` service is not registered; no interceptors: debug, metrics and tracing
    are off in ``serve``)."""

    def _create_server(self) -> Any:
        from concurrent.futures import ThreadPoolExecutor

        from grpc import aio
        from mlserver.grpc.server import DefaultGrpcWorkers

        self._inference_servicer = _BoundedServicer(self._data_plane, self._model_repository_handlers)
        self._interceptors: list[Any] = []
        self._server = aio.server(
            ThreadPoolExecutor(max_workers=DefaultGrpcWorkers), options=self._get_options()
        )
        add_GRPCInferenceServiceServicer_to_server(self._inference_servicer, self._server)
        self._server.add_insecure_port(f"{self._settings.host}:{self._settings.grpc_port}")
        return self._server

    def _get_options(self) -> list[tuple[str, Any]]:
        return [*super()._get_options(), ("grpc.so_reuseport", 0)]


class BoundedMLServer(MLServer):
    """MLServer with the changes of the module docstring; ``limits`` bound every request."""

    def __init__(self, settings: Any, limits: Limits) -> None:
        self._limits = limits
        super().__init__(settings)

    def _create_servers(self) -> None:
        self._model_repository_handlers = ClosedRepositoryHandlers(
            repository=self._model_repository, model_registry=self._model_registry
        )
        self._rest_server = RESTServer(self._settings, self._data_plane, self._model_repository_handlers)
        app: FastAPI = self._rest_server._app
        app.add_exception_handler(RequestValidationError, _invalid_body)
        app.add_middleware(BodyLimit, limit=self._limits.body_bytes)
        self._grpc_server = _BoundedGRPCServer(
            self._settings, self._data_plane, self._model_repository_handlers
        )
        self._kafka_server = None
