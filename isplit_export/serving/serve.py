"""``isplit-export serve BUNDLE``: the bundle's tails over the Open Inference Protocol, with MLServer.

    isplit-export serve bundle --port 8001            # gRPC on 127.0.0.1:8001, HTTP on :8002
    isplit-export run bundle --url 127.0.0.1:8001     # the head, on the device

The bundle is pinned (``--expect-sha256``) and re-hashed first (every file of the manifest): a
modified or unlisted file, or another manifest than the pinned one, is refused, named, and nothing is
served (exit 1). Only the selected tails and the weight files they read are served, from hash-checked
copies in a private folder (:mod:`isplit_export.serving.model_store`); MLServer's repository API is off
and every request is bounded (:mod:`isplit_export.serving.server`). A port already bound (another
server) is refused before anything is printed (exit 2). Each selected split's tail becomes one model,
named like its Triton model (``01-features.3``), served by
:class:`isplit_export.serving.tail_runtime.OnnxTailRuntime` in this process (MLServer's
``parallel_workers: 0``: its worker pool does not start on every Python). One
log line per model loaded; SIGINT and SIGTERM stop the servers cleanly (MLServer's own handlers) and
the command returns 0. MLServer's metrics server is off (one port fewer to collide). In production
the same tails are served by Triton from ``BUNDLE/triton`` (``docs/serving.md``).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import signal
import socket
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from isplit_export import contract
from isplit_export.errors import BadInputError, NotRunError
from isplit_export.options_serving import ServeOptions
from isplit_export.serving.bundle_access import BundleAccess, open_bundle
from isplit_export.serving.model_store import ModelStore, stage

if TYPE_CHECKING:
    from isplit_export.serving.server import Limits

log = logging.getLogger("isplit_export.serve")


@dataclass
class ServeResult:
    """What was served, and for how long the servers ran."""

    models: list[str]
    grpc: str
    http: str


def _require_mlserver() -> None:
    try:
        import mlserver  # noqa: F401
    except ImportError as e:
        raise NotRunError(f"serve needs MLServer ({e}): pip install 'isplit-export[serve]'") from e


JSON_CHARS_PER_VALUE = {"uint8": 5, "int8": 6, "float16": 26, "float32": 26}
"""Longest JSON text of one boundary value with its separator (``255, ``; ``-1.2345678901234567e-05, ``)."""
BODY_HEADROOM = 64 << 10
"""Bytes of a request body besides the values: names, datatype, shape, parameters."""


def limits(bundle: BundleAccess) -> Limits:
    """The request bounds: a batch of :data:`~isplit_export.contract.MAX_BATCH_SIZE` boundaries of the
    largest served split, written as JSON (the longer encoding; gRPC's raw bytes are smaller), plus headroom."""
    from isplit_export.serving.server import Limits

    values = max(math.prod(s.shape) * JSON_CHARS_PER_VALUE.get(s.dtype.name, 26) for s in bundle.splits)
    return Limits(
        body_bytes=values * contract.MAX_BATCH_SIZE + BODY_HEADROOM, max_batch=contract.MAX_BATCH_SIZE
    )


def check_ports_free(host: str, ports: list[int]) -> None:
    """Refuse (exit 2, one line) when ``host:port`` cannot be bound: another server, or anything else, holds it.

    A plain bind with ``SO_REUSEADDR`` (as uvicorn and gRPC bind: a port in TIME_WAIT after a stopped
    server is free) and without ``SO_REUSEPORT`` (so a listening socket of anyone makes it fail).
    """
    for port in ports:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except OSError as e:
            raise BadInputError(
                f"--host {host!r} cannot be resolved ({e.strerror or e}): pass an address of this machine"
            ) from None
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(address)
            except OSError as e:
                why = (
                    "in use (another server is listening there)"
                    if e.errno == errno.EADDRINUSE
                    else e.strerror
                )
                raise BadInputError(
                    f"{host}:{port} is {why}: stop that server or pass other --port/--http-port"
                ) from None


def model_settings(bundle: BundleAccess, threads: int, store: ModelStore | None = None) -> list[Any]:
    """One MLServer ``ModelSettings`` per selected split, with the tail's hash and metadata; with ``store``
    each model reads its tail's checked copy there (``serve`` always passes it)."""
    from mlserver.settings import ModelParameters, ModelSettings
    from mlserver.types import MetadataTensor

    from isplit_export.serving.tail_runtime import DATATYPES, OnnxTailRuntime

    out = []
    for s in bundle.splits:
        rel = s.tail.relative_to(bundle.root.resolve()).as_posix()  # contract paths are resolved
        classes = bundle.manifest.num_classes or -1
        out.append(
            ModelSettings(
                name=s.model,
                implementation=OnnxTailRuntime,
                parallel_workers=0,
                inputs=[
                    MetadataTensor(
                        name="boundary", datatype=DATATYPES[s.encoding.dtype], shape=[-1, *s.shape]
                    )
                ],
                outputs=[MetadataTensor(name="logits", datatype="FP32", shape=[-1, classes])],
                parameters=ModelParameters(
                    uri=str(store.tails[s.model] if store is not None else s.tail.resolve()),
                    version="1",
                    extra={
                        "threads": threads,
                        "sha256": bundle.manifest.files[rel].sha256,
                        "split": s.dir,
                        "file": rel,
                        "max_batch": contract.MAX_BATCH_SIZE,
                    },
                ),
            )
        )
    return out


QUIET_LOGS: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "loggers": {
        name: {"level": "WARNING"} for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "mlserver")
    },
}
"""MLServer's and uvicorn's per-request and start-up INFO lines off (warnings and errors stay)."""


def server_settings(options: ServeOptions, root: str, max_message: int | None = None) -> Any:
    """MLServer ``Settings``: our host and ports, no worker pool, no metrics server, quiet; ``root`` is the
    (empty, private) repository root, ``max_message`` the gRPC message bound."""
    from mlserver.settings import Settings

    return Settings(
        host=options.host,
        grpc_port=options.port,
        http_port=options.http_port,
        parallel_workers=0,
        metrics_endpoint=None,
        debug=False,
        load_models_at_startup=False,
        model_repository_root=root,
        server_name="isplit-export-mlserver",
        logging_settings=QUIET_LOGS,
        grpc_max_message_length=max_message,
    )


def _quiet_logs() -> None:
    """MLServer and uvicorn log every request at INFO; keep warnings, and our one line per model."""
    for name in ("mlserver", "uvicorn", "uvicorn.access", "uvicorn.error", "mlserver.rest", "mlserver.grpc"):
        logging.getLogger(name).setLevel(logging.WARNING)
    ours = logging.getLogger("isplit_export.serve")
    if not ours.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        ours.addHandler(handler)
    ours.setLevel(logging.INFO)
    ours.propagate = False


async def _serve(options: ServeOptions, bundle: BundleAccess, store: ModelStore) -> None:
    from isplit_export.serving.server import BoundedMLServer

    bounds = limits(bundle)
    settings = server_settings(options, str(store.repository), bounds.body_bytes)
    models = model_settings(bundle, options.threads, store)
    server = BoundedMLServer(
        settings, bounds
    )  # installs its SIGINT / SIGTERM / SIGQUIT handlers on this loop
    # SIGINT stops like SIGTERM (uvicorn treats a SIGINT as "force exit" and skips its lifespan shutdown)
    asyncio.get_running_loop().add_signal_handler(
        signal.SIGINT, lambda: asyncio.ensure_future(server.stop(sig=signal.SIGTERM))
    )
    _quiet_logs()
    log.info(
        "serving %d model(s) of %s over gRPC %s:%d and HTTP %s:%d (requests up to %d bytes, batch %d; "
        "Ctrl-C or SIGTERM stops)",
        len(models),
        bundle.root,
        options.host,
        options.port,
        options.host,
        options.http_port,
        bounds.body_bytes,
        bounds.max_batch,
    )
    try:
        await server.start(models)
    except RuntimeError as e:  # gRPC's own bind, if the port was taken after check_ports_free
        if "bind" not in str(e).lower():
            raise
        raise BadInputError(
            f"{options.host}:{options.port} is in use (another server took it): stop it or pass another --port"
        ) from None


def serve(options: ServeOptions) -> ServeResult:
    """Verify the bundle, then serve its tails until SIGINT/SIGTERM; see the module docstring."""
    # refuse another manifest than the pinned one, a modified file or an unlisted one, first
    bundle = open_bundle(options.bundle, options.split, verify=True, expect_sha256=options.expect_sha256)
    _require_mlserver()
    check_ports_free(options.host, [options.port, int(options.http_port or 0)])
    _quiet_logs()
    store = stage(bundle)
    # A plain loop, not asyncio.run: its own SIGINT handler would cancel the servers mid-shutdown;
    # MLServer's SIGINT / SIGTERM handlers stop them cleanly instead.
    loop = asyncio.new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(_serve(options, bundle, store))
    finally:
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        asyncio.set_event_loop(None)
        loop.close()
        store.remove()
    log.info("stopped")
    return ServeResult(
        models=[s.model for s in bundle.splits],
        grpc=f"{options.host}:{options.port}",
        http=f"{options.host}:{options.http_port}",
    )
