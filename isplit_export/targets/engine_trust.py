"""Which TensorRT engines this machine may deserialise: the ones ``build-engines`` built here.

Deserialising an engine runs native code chosen by whoever wrote the file (NVIDIA's TensorRT security
guidance), and a bundle is untrusted input: an ``engines/*.engine`` file with a self-consistent
``engines/build.json`` proves nothing. So ``build-engines`` records every engine it builds in a file
kept outside any bundle, in this user's state directory (:func:`state_file`:
``$XDG_STATE_HOME/isplit-export/engines.json``, else ``~/.local/state/isplit-export/engines.json``;
folder 0700, file 0600), keyed by the engine's sha256, with the TensorRT version and the GPU it was
built with. ``verify --backend tensorrt`` and ``run`` (the head) deserialise an engine only when its
bytes are recorded there for this TensorRT release and this GPU; anything else is refused in one line
naming ``build-engines``. ``--trust-engines`` is the explicit opt-in for engines shipped on purpose.

Torch-free and TensorRT-free: the TensorRT version comes from the importable ``tensorrt`` module (the
callers have checked that it imports), the GPU name from :func:`~isplit_export.targets.cuda_runtime.current_gpu_name`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from isplit_export import contract
from isplit_export.errors import BadInputError, IsplitError
from isplit_export.targets.cuda_runtime import current_gpu_name

TRUST_SCHEMA = "isplit.engine-trust/1"
TRUST_FILE = "engines.json"
STATE_DIR_NAME = "isplit-export"
MAX_RECORDS = 4096
"""Engines remembered at most (the oldest are forgotten first): the state file stays small."""


def state_file() -> Path:
    """This user's record of the engines built here (outside every bundle)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / STATE_DIR_NAME / TRUST_FILE


def _here() -> tuple[str, str]:
    """(TensorRT version, GPU name) of this machine."""
    import tensorrt as trt

    return str(trt.__version__), current_gpu_name()


def _release(version: str) -> list[str]:
    """major.minor.patch: "10.3.0.30" and "10.3.0" are one release."""
    return version.split(".")[:3]


def _load(path: Path) -> dict[str, Any]:
    """The records by sha256; an absent or unreadable file holds none (then nothing is trusted)."""
    if not path.is_file():
        return {}
    try:
        doc = contract.read_json(path, str(path))
    except IsplitError:
        return {}
    engines = doc.get("engines") if doc.get("schema") == TRUST_SCHEMA else None
    return {str(k): v for k, v in engines.items() if isinstance(v, dict)} if isinstance(engines, dict) else {}


def record_engine(engine: Path, *, bundle: str = "") -> str:
    """Remember ``engine`` (just built here) as trusted for this TensorRT and GPU; returns its sha256."""
    digest = hashlib.sha256(engine.read_bytes()).hexdigest()
    version, gpu = _here()
    path = state_file()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    records = _load(path)
    records[digest] = {
        "tensorrt_version": version,
        "gpu": gpu,
        "file": engine.name,
        "bundle": bundle,
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if len(records) > MAX_RECORDS:
        records = dict(sorted(records.items(), key=lambda kv: str(kv[1].get("built")))[-MAX_RECORDS:])
    text = json.dumps({"schema": TRUST_SCHEMA, "engines": records}, indent=1, sort_keys=True) + "\n"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return digest


def trusted(data: bytes) -> bool:
    """Whether these engine bytes were built here by ``build-engines`` for this TensorRT release and GPU."""
    info = _load(state_file()).get(hashlib.sha256(data).hexdigest())
    if info is None:
        return False
    version, gpu = _here()
    return _release(str(info.get("tensorrt_version"))) == _release(version) and str(info.get("gpu")) == gpu


def require_trusted(engine: Path, data: bytes, *, trust: bool) -> None:
    """Refuse to deserialise ``data`` (the bytes of ``engine``) unless built here, or ``trust`` opts in."""
    if trust or trusted(data):
        return
    raise BadInputError(
        f"{engine} was not built on this machine by `isplit-export build-engines` (no record in {state_file()}); "
        "deserialising an engine runs its code: build the engines here with `isplit-export build-engines BUNDLE`, "
        "or pass --trust-engines if you ship engines on purpose"
    )


def require_trusted_file(engine: Path, *, trust: bool) -> None:
    """:func:`require_trusted` on a file (checked up front, before any engine runs)."""
    if not trust:
        require_trusted(engine, engine.read_bytes(), trust=False)


__all__ = [
    "TRUST_FILE",
    "TRUST_SCHEMA",
    "record_engine",
    "require_trusted",
    "require_trusted_file",
    "state_file",
    "trusted",
]
