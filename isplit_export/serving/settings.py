"""How a bundle is served with MLServer: the request bounds (:func:`limits`), one ``ModelSettings`` per
tail (:func:`model_settings`), the server's ``Settings`` (:func:`server_settings`), and the check that
the ports are free (:func:`check_ports_free`). The serve job (:mod:`isplit_export.jobs.serve`) puts them
together; MLServer is imported inside the functions that need it (the ``serve`` extra).
"""

from __future__ import annotations

import errno
import math
import socket
from typing import TYPE_CHECKING, Any

from isplit_export import contract
from isplit_export.errors import BadInputError
from isplit_export.options_serving import ServeOptions
from isplit_export.serving.bundle_access import BundleAccess
from isplit_export.serving.model_store import ModelStore

if TYPE_CHECKING:
    from isplit_export.serving.server import Limits


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
