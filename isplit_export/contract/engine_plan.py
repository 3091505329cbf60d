"""A split's ``engine_plan.json`` (:func:`read_engine_plan`): inputs hashed, outputs only under ``engines/``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from isplit_export.contract.jsonio import _bad, opt_dict, read_json, req_dict, req_int, req_str
from isplit_export.contract.manifest import Manifest, check_listed
from isplit_export.contract.paths import bundle_path, join_rel
from isplit_export.contract.schema import _TENSOR_NAME, ENGINE_PLAN_FILE, ENGINE_PLAN_SCHEMA, ENGINES_DIR
from isplit_export.contract.splits import Split
from isplit_export.errors import BadInputError, GateFailedError


@dataclass(frozen=True)
class EnginePart:
    """One engine of a split's plan, with paths already checked: ``onnx`` hashed, ``engine`` inside ``engines/``."""

    onnx: Path
    engine: Path
    engine_rel: str = field(metadata={"json": None})
    """``engine`` as written: relative to the split folder."""
    dla_core: int | None
    input_name: str = field(metadata={"json": "input.name"})
    min_shape: list[int] = field(metadata={"json": "input.min"})
    opt_shape: list[int] = field(metadata={"json": "input.opt"})
    max_shape: list[int] = field(metadata={"json": "input.max"})


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
    target: str
    tensorrt_version: str | None
    typing: str | None
    dla: Mapping[str, Any]
    """The DLA check of the head (``on_dla``, ``layers``, ``decision``, ``fallback``); {} without DLA."""

    @property
    def dla_fallback(self) -> list[str]:
        """The head nodes the DLA check expects TensorRT to leave on the GPU (``dla.fallback[].node``)."""
        fallback = self.dla.get("fallback")
        if not isinstance(fallback, list):
            return []
        return [str(f["node"]) for f in fallback if isinstance(f, Mapping) and isinstance(f.get("node"), str)]


def engine_output(bundle: Path, split_rel: str, rel: Any, what: str) -> Path:
    """Where ``build-engines`` may write ``rel`` (relative to the split folder): inside the split's
    ``engines/`` folder, never through a symlink."""
    joined = join_rel(split_rel, rel, what)
    base = f"{split_rel}/{ENGINES_DIR}/"
    if not joined.startswith(base):
        raise GateFailedError(
            f"{what} names {rel!r}, outside {base}: build-engines writes only there; rebuild the bundle"
        )
    return bundle_path(bundle, joined, what, must_exist=False)


def _shape(spec: Mapping[str, Any], key: str, src: str, field: str) -> list[int]:
    v = spec.get(key)
    if (
        not isinstance(v, list)
        or not v
        or len(v) > 8
        or any(isinstance(d, bool) or not isinstance(d, int) or not 0 < d <= 1 << 20 for d in v)
    ):
        raise _bad(src, field, "a list of 1-8 positive dimensions", v)
    return list(v)


def read_engine_plan(manifest: Manifest, entry: Split) -> EnginePlan:
    """A split's ``engine_plan.json``: listed and hashed, every field typed, every input path hashed, every
    output path inside the split's ``engines/`` folder."""
    rel = f"{entry.dir}/{ENGINE_PLAN_FILE}"
    if rel not in manifest.files:
        raise BadInputError(
            f"{rel} is not in the bundle: this split has no TensorRT plan (export with a Jetson or x86-tensorrt target)"
        )
    return load_engine_plan(manifest.bundle, entry.dir, manifest)


def load_engine_plan(bundle: Path, split_rel: str, manifest: Manifest | None = None) -> EnginePlan:
    """The one reader of ``engine_plan.json``: the plan of the split folder ``split_rel`` of ``bundle``.

    With ``manifest`` (a bundle being read) the plan and its ONNX inputs must be listed and are
    re-hashed; without it (the writer re-reading the plan it wrote, before hashing) they are only
    contained in the bundle. Every field is typed and bounded either way.
    """
    rel = f"{split_rel}/{ENGINE_PLAN_FILE}"
    if manifest is not None:
        path = check_listed(manifest, rel, "engine plan")
    else:
        path = bundle_path(bundle, rel, "engine plan", must_exist=False)
    p = engine_plan_json(path, rel)
    precision = req_str(p, "precision", rel)
    if precision not in ("fp32", "fp16", "int8"):
        raise _bad(rel, "precision", "fp32, fp16 or int8", precision)
    workspace = req_int(p, "workspace_mib", rel, lo=1, hi=1 << 20)
    target = req_str(p, "target", rel) or ""
    timing = engine_output(bundle, split_rel, p.get("timing_cache"), f"{rel} timing_cache")
    record = engine_output(bundle, split_rel, p.get("record", f"{ENGINES_DIR}/build.json"), f"{rel} record")
    engines = req_dict(p, "engines", rel)
    parts: dict[str, EnginePart] = {}
    for part in ("head", "tail"):
        spec = req_dict(engines, part, rel, f"engines.{part}")
        onnx_rel = join_rel(split_rel, spec.get("onnx"), f"{rel} engines.{part}.onnx")
        if manifest is not None:
            onnx = check_listed(manifest, onnx_rel, f"{rel} engines.{part}.onnx")
        else:
            onnx = bundle_path(bundle, onnx_rel, f"{rel} engines.{part}.onnx", must_exist=False)
        engine_rel = req_str(spec, "engine", rel, f"engines.{part}.engine") or ""
        engine = engine_output(bundle, split_rel, engine_rel, f"{rel} engines.{part}.engine")
        dla = req_int(spec, "dla_core", rel, f"engines.{part}.dla_core", hi=7, optional=True)
        shapes = req_dict(spec, "input", rel, f"engines.{part}.input")
        name = req_str(shapes, "name", rel, f"engines.{part}.input.name") or ""
        if not _TENSOR_NAME.match(name):
            raise _bad(rel, f"engines.{part}.input.name", "a tensor name", name)
        dims = [_shape(shapes, k, rel, f"engines.{part}.input.{k}") for k in ("min", "opt", "max")]
        parts[part] = EnginePart(onnx, engine, engine_rel, dla, name, *dims)
    return EnginePlan(
        data=p,
        split_dir=bundle_path(bundle, split_rel),
        precision=str(precision),
        workspace_mib=int(workspace or 1),
        timing_cache=timing,
        record=record,
        parts=parts,
        target=target,
        tensorrt_version=req_str(p, "tensorrt_version", rel, optional=True),
        typing=req_str(p, "typing", rel, optional=True),
        dla=opt_dict(p, "dla", rel),
    )


def engine_plan_json(path: Path, what: str | None = None) -> dict[str, Any]:
    """The bytes of an ``engine_plan.json`` as JSON: strict and bounded (:func:`read_json`), schema
    :data:`ENGINE_PLAN_SCHEMA`. Every reader of the file goes through here (:func:`load_engine_plan`
    types it; the writer re-reads its own plan with it to relocate the models)."""
    what = what or str(path)
    if not path.is_file():
        raise BadInputError(
            f"{what} is missing: this split has no TensorRT plan (export with a Jetson or x86-tensorrt target)"
        )
    p = read_json(path, what)
    if p.get("schema") != ENGINE_PLAN_SCHEMA:
        raise BadInputError(f"{what} is not an {ENGINE_PLAN_SCHEMA} plan: re-export the bundle")
    return p


def write_output(path: Path, data: bytes) -> None:
    """Write ``data`` to a checked output path through a temporary file + rename (never through a symlink)."""
    from isplit_export.files import write_bytes_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, data)
