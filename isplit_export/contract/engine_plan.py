"""A split's ``engine_plan.json`` (:func:`read_engine_plan`): inputs hashed, outputs only under ``engines/``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from isplit_export.contract.jsonio import _bad, read_json, req_dict, req_int, req_str
from isplit_export.contract.manifest import Manifest, check_listed
from isplit_export.contract.paths import bundle_path, join_rel
from isplit_export.contract.schema import _TENSOR_NAME, ENGINE_PLAN_FILE, ENGINE_PLAN_SCHEMA, ENGINES_DIR
from isplit_export.errors import BadInputError, GateFailedError


@dataclass(frozen=True)
class EnginePart:
    """One engine of a split's plan, with paths already checked: ``onnx`` hashed, ``engine`` inside ``engines/``."""

    onnx: Path
    engine: Path
    engine_rel: str
    dla_core: int | None
    input_name: str
    min_shape: list[int]
    opt_shape: list[int]
    max_shape: list[int]


@dataclass(frozen=True)
class EnginePlan:
    """A split's validated ``engine_plan.json``: where to read (hashed) and where to write (``engines/``)."""

    data: dict[str, Any]
    split_dir: Path
    precision: str
    workspace_mib: int
    timing_cache: Path
    record: Path
    parts: dict[str, EnginePart]


def engine_output(bundle: Path, split_rel: str, rel: Any, what: str) -> Path:
    """Where ``build-engines`` may write ``rel`` (relative to the split folder): inside the split's
    ``engines/`` folder, never through a symlink."""
    joined = join_rel(split_rel, rel, what)
    base = f"{split_rel}/{ENGINES_DIR}/"
    if not joined.startswith(base):
        raise GateFailedError(f"{what} names {rel!r}, outside {base}: build-engines writes only there; rebuild the bundle")
    return bundle_path(bundle, joined, what, must_exist=False)


def _shape(spec: Mapping[str, Any], key: str, src: str, field: str) -> list[int]:
    v = spec.get(key)
    if (not isinstance(v, list) or not v or len(v) > 8
            or any(isinstance(d, bool) or not isinstance(d, int) or not 0 < d <= 1 << 20 for d in v)):  # fmt: skip
        raise _bad(src, field, "a list of 1-8 positive dimensions", v)
    return list(v)


def read_engine_plan(manifest: Manifest, entry: Mapping[str, Any]) -> EnginePlan:
    """A split's ``engine_plan.json``: listed and hashed, every field typed, every input path hashed, every
    output path inside the split's ``engines/`` folder."""
    split_rel = str(entry["dir"])
    rel = f"{split_rel}/{ENGINE_PLAN_FILE}"
    if rel not in manifest.data["files"]:
        raise BadInputError(
            f"{rel} is not in the bundle: this split has no TensorRT plan (export with a Jetson or x86-tensorrt target)"
        )
    path = check_listed(manifest, rel, "engine plan")
    p = read_json(path, rel)
    if p.get("schema") != ENGINE_PLAN_SCHEMA:
        raise _bad(rel, "schema", repr(ENGINE_PLAN_SCHEMA), p.get("schema"))
    precision = req_str(p, "precision", rel)
    if precision not in ("fp32", "fp16", "int8"):
        raise _bad(rel, "precision", "fp32, fp16 or int8", precision)
    workspace = req_int(p, "workspace_mib", rel, lo=1, hi=1 << 20)
    req_str(p, "target", rel)
    timing = engine_output(manifest.bundle, split_rel, p.get("timing_cache"), f"{rel} timing_cache")
    record = engine_output(manifest.bundle, split_rel, p.get("record", f"{ENGINES_DIR}/build.json"),
                           f"{rel} record")  # fmt: skip
    engines = req_dict(p, "engines", rel)
    parts: dict[str, EnginePart] = {}
    for part in ("head", "tail"):
        spec = req_dict(engines, part, rel, f"engines.{part}")
        onnx_rel = join_rel(split_rel, spec.get("onnx"), f"{rel} engines.{part}.onnx")
        onnx = check_listed(manifest, onnx_rel, f"{rel} engines.{part}.onnx")
        engine_rel = req_str(spec, "engine", rel, f"engines.{part}.engine") or ""
        engine = engine_output(manifest.bundle, split_rel, engine_rel, f"{rel} engines.{part}.engine")
        dla = req_int(spec, "dla_core", rel, f"engines.{part}.dla_core", hi=7, optional=True)
        shapes = req_dict(spec, "input", rel, f"engines.{part}.input")
        name = req_str(shapes, "name", rel, f"engines.{part}.input.name") or ""
        if not _TENSOR_NAME.match(name):
            raise _bad(rel, f"engines.{part}.input.name", "a tensor name", name)
        parts[part] = EnginePart(
            onnx, engine, engine_rel, dla, name,
            *(_shape(shapes, k, rel, f"engines.{part}.input.{k}") for k in ("min", "opt", "max")),
        )  # fmt: skip
    return EnginePlan(p, bundle_path(manifest.bundle, split_rel), str(precision), int(workspace or 1), timing, record, parts)


def write_output(path: Path, data: bytes) -> None:
    """Write ``data`` to a checked output path through a temporary file + rename (never through a symlink)."""
    from isplit_export.files import write_bytes_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, data)
