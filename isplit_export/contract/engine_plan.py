"""A split's ``engine_plan.json`` (:func:`read_engine_plan`): inputs hashed, outputs only under ``engines/``."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from isplit_export.contract.bundle_files import check_listed
from isplit_export.contract.jsonio import _bad, opt_dict, read_json, req_dict, req_int, req_str
from isplit_export.contract.manifest import Manifest
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


MAX_ARGS = 64
"""Most arguments of one trtexec call in a recipe."""
MAX_FALLBACK = 4096
"""Most head nodes a DLA check lists as falling back to the GPU."""


def _text(d: Mapping[str, Any], key: str, src: str, f: str) -> str:
    return str(req_str(d, key, src, f) or "")


@dataclass(frozen=True)
class DlaFallback:
    """One head node the DLA check expects TensorRT to leave on the GPU, and why."""

    node: str
    op: str | None
    reason: str | None


@dataclass(frozen=True)
class DlaCheck:
    """The head's DLA check in a recipe (``dla``): how many layers can run there and the decision taken."""

    on_dla: int | None
    layers: int | None
    decision: str | None
    fallback: tuple[DlaFallback, ...]

    @classmethod
    def from_json(cls, d: Mapping[str, Any], src: str, f: str = "dla") -> DlaCheck:
        """Validate a ``dla`` block: counts bounded, at most :data:`MAX_FALLBACK` fallback nodes."""
        fallback = d.get("fallback", [])
        if not isinstance(fallback, list) or len(fallback) > MAX_FALLBACK:
            raise _bad(src, f"{f}.fallback", f"a list of at most {MAX_FALLBACK} nodes", fallback)
        nodes = []
        for i, n in enumerate(fallback):
            if not isinstance(n, Mapping):
                raise _bad(src, f"{f}.fallback[{i}]", "an object", n)
            for k in ("node", "op", "reason"):  # ONNX node names may be empty: any bounded string
                if not isinstance(n.get(k, ""), str) or len(n.get(k, "")) > 4096:
                    raise _bad(src, f"{f}.fallback[{i}].{k}", "a string of at most 4096 characters", n.get(k))
            nodes.append(DlaFallback(node=n.get("node", ""), op=n.get("op"), reason=n.get("reason")))
        return cls(
            on_dla=req_int(d, "on_dla", src, f"{f}.on_dla", hi=1 << 20, optional=True),
            layers=req_int(d, "layers", src, f"{f}.layers", hi=1 << 20, optional=True),
            decision=req_str(d, "decision", src, f"{f}.decision", optional=True),
            fallback=tuple(nodes),
        )


@dataclass(frozen=True)
class RecipeEngine:
    """One engine of a recipe as written (``engines.head``, ``engines.tail``): paths relative to the split."""

    onnx: str
    engine: str
    dla_core: int | None
    trtexec: tuple[str, ...]
    """The trtexec command line (``trtexec`` first), what ``build_engines.sh`` runs."""


@dataclass(frozen=True)
class EngineRecipe:
    """A split's ``engine_plan.json`` as written (``isplit.engine_plan/1``): the two trtexec builds and
    what they were written for. :class:`EnginePlan` is the same file with its paths checked."""

    target: str
    precision: str
    tensorrt_version: str | None
    typing: str | None
    dla: DlaCheck | None
    head: RecipeEngine = field(metadata={"json": "engines.head"})
    tail: RecipeEngine = field(metadata={"json": "engines.tail"})
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, p: Mapping[str, Any], src: str) -> EngineRecipe:
        """Validate a recipe's fields (types, bounded argument lists); paths are checked by :func:`load_engine_plan`."""
        engines = req_dict(p, "engines", src)
        parts = []
        for part in ("head", "tail"):
            spec = req_dict(engines, part, src, f"engines.{part}")
            argv = spec.get("trtexec", [])
            if (
                not isinstance(argv, list)
                or len(argv) > MAX_ARGS
                or any(not isinstance(a, str) or len(a) > 4096 for a in argv)
            ):
                raise _bad(src, f"engines.{part}.trtexec", f"a list of at most {MAX_ARGS} arguments", argv)
            parts.append(
                RecipeEngine(
                    onnx=_text(spec, "onnx", src, f"engines.{part}.onnx"),
                    engine=_text(spec, "engine", src, f"engines.{part}.engine"),
                    dla_core=req_int(spec, "dla_core", src, f"engines.{part}.dla_core", hi=7, optional=True),
                    trtexec=tuple(argv),
                )
            )
        dla = opt_dict(p, "dla", src)
        return cls(
            target=_text(p, "target", src, "target"),
            precision=_text(p, "precision", src, "precision"),
            tensorrt_version=req_str(p, "tensorrt_version", src, optional=True),
            typing=req_str(p, "typing", src, optional=True),
            dla=DlaCheck.from_json(dla, src) if dla else None,
            head=parts[0],
            tail=parts[1],
            raw=MappingProxyType(dict(p)),
        )

    def to_json(self) -> dict[str, Any]:
        """The recipe as written (nested blocks copied: the result may be edited)."""
        return copy.deepcopy(dict(self.raw))

    def with_models(self, moves: Mapping[str, str]) -> EngineRecipe:
        """This recipe with its ONNX models moved (``moves``: old path -> new, relative to the split), in
        ``onnx`` and in the trtexec ``--onnx=`` argument."""
        data = self.to_json()
        for spec in data["engines"].values():
            new = moves.get(str(spec["onnx"]))
            if new is not None:
                spec["trtexec"] = [
                    f"--onnx={new}" if a == f"--onnx={spec['onnx']}" else a for a in spec["trtexec"]
                ]
                spec["onnx"] = new
        return EngineRecipe.from_json(data, "engine plan")


def read_engine_recipe(path: Path, what: str | None = None) -> EngineRecipe:
    """A split's ``engine_plan.json`` as written (:func:`engine_plan_json`, then typed)."""
    return EngineRecipe.from_json(engine_plan_json(path, what), what or str(path))


@dataclass(frozen=True)
class EnginePlan:
    """A split's validated ``engine_plan.json``: where to read (hashed) and where to write (``engines/``)."""

    recipe: EngineRecipe
    split_dir: Path
    precision: str
    workspace_mib: int
    timing_cache: Path
    record: Path
    parts: dict[str, EnginePart]
    target: str
    tensorrt_version: str | None
    typing: str | None
    dla: DlaCheck | None
    """The DLA check of the head (``on_dla``, ``layers``, ``decision``, ``fallback``); None without DLA."""

    @property
    def head(self) -> EnginePart:
        """The head's engine."""
        return self.parts["head"]

    @property
    def tail(self) -> EnginePart:
        """The tail's engine."""
        return self.parts["tail"]

    @property
    def dla_fallback(self) -> list[str]:
        """The head nodes the DLA check expects TensorRT to leave on the GPU (``dla.fallback[].node``)."""
        return [] if self.dla is None else [f.node for f in self.dla.fallback]


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
    recipe = EngineRecipe.from_json(p, rel)
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
        recipe=recipe,
        split_dir=bundle_path(bundle, split_rel),
        precision=str(precision),
        workspace_mib=int(workspace or 1),
        timing_cache=timing,
        record=record,
        parts=parts,
        target=target,
        tensorrt_version=req_str(p, "tensorrt_version", rel, optional=True),
        typing=req_str(p, "typing", rel, optional=True),
        dla=recipe.dla,
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
