"""The serve job (``isplit-export serve BUNDLE``): the bundle's tails over the Open Inference Protocol,
with MLServer.

    isplit-export serve bundle --port 8001            # gRPC on 127.0.0.1:8001, HTTP on :8002
    isplit-export run bundle --url 127.0.0.1:8001     # the head, on the device

The bundle is pinned (``--expect-sha256``) and re-hashed first (every file of the manifest): a
modified or unlisted file, or another manifest than the pinned one, is refused, named, and nothing is
served (exit 1). Only the selected tails and the weight files they read are served, from hash-checked
copies in a private folder (:mod:`isplit_export.serving.model_store`); MLServer's repository API is off
and every request is bounded (:mod:`isplit_export.serving.server`; the settings:
:mod:`isplit_export.serving.settings`). A port already bound (another
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
import logging
import signal
import sys
from dataclasses import dataclass

from isplit_export.errors import BadInputError, NotRunError
from isplit_export.options_serving import ServeOptions
from isplit_export.serving.bundle_access import BundleAccess, open_bundle
from isplit_export.serving.model_store import ModelStore, stage
from isplit_export.serving.settings import check_ports_free, limits, model_settings, server_settings

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
