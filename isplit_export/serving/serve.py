"""``isplit-export serve BUNDLE``: the bundle's tails over the Open Inference Protocol, with MLServer.

    isplit-export serve bundle --port 8001            # gRPC on 127.0.0.1:8001, HTTP on :8002
    isplit-export run bundle --server 127.0.0.1:8001  # the head, on the device

The bundle is re-hashed first (every file of the manifest): a modified file is refused, named, and
nothing is served (exit 1). Each selected split's tail becomes one model, named like its Triton
model (``01-features.3``), served by :class:`isplit_export.serving.runtime.OnnxTailRuntime` in this
process (MLServer's ``parallel_workers: 0``: its worker pool does not start on every Python). One
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
from typing import Any

from isplit_export.errors import NotRunError
from isplit_export.options import ServeOptions
from isplit_export.serving.bundle_access import BundleAccess, open_bundle

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


def model_settings(bundle: BundleAccess, threads: int) -> list[Any]:
    """One MLServer ``ModelSettings`` per selected split, with the tail's hash and metadata."""
    from mlserver.settings import ModelParameters, ModelSettings
    from mlserver.types import MetadataTensor

    from isplit_export.serving.runtime import DATATYPES, OnnxTailRuntime

    files = bundle.manifest["files"]
    out = []
    for s in bundle.splits:
        rel = s.tail.relative_to(bundle.root.resolve()).as_posix()  # contract paths are resolved
        classes = int((bundle.manifest.get("model") or {}).get("num_classes") or -1)
        out.append(
            ModelSettings(
                name=s.model,
                implementation=OnnxTailRuntime,
                parallel_workers=0,
                inputs=[MetadataTensor(name="boundary", datatype=DATATYPES[s.encoding.dtype], shape=[-1, *s.shape])],
                outputs=[MetadataTensor(name="logits", datatype="FP32", shape=[-1, classes])],
                parameters=ModelParameters(
                    uri=str(s.tail.resolve()), version="1",
                    extra={"threads": threads, "sha256": files[rel]["sha256"], "split": s.dir, "file": rel},
                ),
            )
        )
    return out


QUIET_LOGS: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "loggers": {name: {"level": "WARNING"} for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "mlserver")},
}
"""MLServer's and uvicorn's per-request and start-up INFO lines off (warnings and errors stay)."""


def server_settings(options: ServeOptions, root: str) -> Any:
    """MLServer ``Settings``: our host and ports, no worker pool, no metrics server, quiet."""
    from mlserver.settings import Settings

    return Settings(
        host=options.host, grpc_port=options.port, http_port=options.http_port, parallel_workers=0,
        metrics_endpoint=None, debug=False, load_models_at_startup=False, model_repository_root=root,
        server_name="isplit-export-mlserver", logging_settings=QUIET_LOGS,
    )  # fmt: skip


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


async def _serve(options: ServeOptions, bundle: BundleAccess) -> None:
    from mlserver import MLServer

    settings = server_settings(options, str(bundle.root.resolve()))
    models = model_settings(bundle, options.threads)
    server = MLServer(settings)  # installs its SIGINT / SIGTERM / SIGQUIT handlers on this loop
    # SIGINT stops like SIGTERM (uvicorn treats a SIGINT as "force exit" and skips its lifespan shutdown)
    asyncio.get_running_loop().add_signal_handler(
        signal.SIGINT, lambda: asyncio.ensure_future(server.stop(sig=signal.SIGTERM))
    )
    _quiet_logs()
    log.info(
        "serving %d model(s) of %s over gRPC %s:%d and HTTP %s:%d (Ctrl-C or SIGTERM stops)",
        len(models), bundle.root, options.host, options.port, options.host, options.http_port,
    )  # fmt: skip
    await server.start(models)


def serve(options: ServeOptions) -> ServeResult:
    """Verify the bundle, then serve its tails until SIGINT/SIGTERM; see the module docstring."""
    bundle = open_bundle(options.bundle, options.split, verify=True)  # refuse a modified bundle first
    _require_mlserver()
    _quiet_logs()
    # A plain loop, not asyncio.run: its own SIGINT handler would cancel the servers mid-shutdown;
    # MLServer's SIGINT / SIGTERM handlers stop them cleanly instead.
    loop = asyncio.new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(_serve(options, bundle))
    finally:
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        asyncio.set_event_loop(None)
        loop.close()
    log.info("stopped")
    return ServeResult(
        models=[s.model for s in bundle.splits],
        grpc=f"{options.host}:{options.port}",
        http=f"{options.host}:{options.http_port}",
    )
