"""JSON Schema of the typed bundle model, generated from the dataclasses (published in docs/bundle.md).

Each typed value (:class:`Split`, :class:`Boundary`, :class:`Verification`, :class:`Check`,
:class:`Task`, :class:`FileEntry`, :class:`CuiOrder`, :class:`EnginePart`; ``ranking.json``'s
:class:`RankingFile`, :class:`Candidate`, :class:`Bootstrap`, :class:`CutCost`, :class:`CostBlock`, :class:`LinkFigures`,
:class:`ComputeFigures`; ``engine_plan.json``'s :class:`EngineRecipe`, :class:`RecipeEngine`,
:class:`DlaCheck`, :class:`DlaFallback`; the manifest's :class:`RecordedOptions`, :class:`ModelInfo`,
:class:`Provenance`, :class:`TargetInfo`, :class:`InputInfo`, :class:`RankingInfo`, :class:`WeightsInfo`,
:class:`Latency`, the chosen (cut, budget)'s :class:`GridExport` and :class:`PairFigures`; ``verify.json``'s
:class:`VerifyLatency`; ``run.json``'s
:class:`ServedCheck`) becomes one ``$defs`` entry:
its fields, their JSON types (``X | None`` is ``[X, "null"]``) and where each one lives in the JSON
(a field's ``metadata["json"]``, a dotted path, when the key differs from the field name). The fields
named ``raw`` (the block as written, carried for :meth:`to_json`) and the ones marked
``metadata["json"] = None`` (not read from JSON) are left out. ``tests`` compare the published text with
:func:`schema_markdown`, so a field added to a dataclass and not to the docs fails there.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from isplit_export.contract.engine_plan import DlaCheck, DlaFallback, EnginePart, EngineRecipe, RecipeEngine
from isplit_export.contract.grid_export import GridExport, PairFigures
from isplit_export.contract.manifest import CuiOrder, FileEntry
from isplit_export.contract.provenance import (
    InputInfo,
    Latency,
    ModelInfo,
    Provenance,
    RankingInfo,
    RecordedOptions,
    TargetInfo,
    VerifyLatency,
    WeightsInfo,
)
from isplit_export.contract.ranking import (
    Bootstrap,
    Candidate,
    ComputeFigures,
    CostBlock,
    CutCost,
    LinkFigures,
    RankingFile,
)
from isplit_export.contract.results import ServedCheck
from isplit_export.contract.splits import Boundary, Check, Split, Task, Verification

MODEL: tuple[type, ...] = (
    Split,
    Boundary,
    Verification,
    Check,
    Task,
    FileEntry,
    CuiOrder,
    EnginePart,
    RankingFile,
    Candidate,
    Bootstrap,
    CutCost,
    CostBlock,
    LinkFigures,
    ComputeFigures,
    EngineRecipe,
    RecipeEngine,
    DlaCheck,
    DlaFallback,
    RecordedOptions,
    ModelInfo,
    Provenance,
    TargetInfo,
    InputInfo,
    RankingInfo,
    WeightsInfo,
    Latency,
    VerifyLatency,
    ServedCheck,
    GridExport,
    PairFigures,
)
"""The typed bundle model, in the order docs/bundle.md lists it."""
_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean", Path: "string"}
_MODEL_NAMES = {cls.__name__ for cls in MODEL}


def _json_type(t: Any) -> dict[str, Any]:
    """The JSON Schema of one annotation (the subset the model uses)."""
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin in (types.UnionType, typing.Union):
        parts = [_json_type(a) for a in args if a is not type(None)]
        if type(None) in args:
            parts.append({"type": "null"})
        if all(set(p) == {"type"} and isinstance(p["type"], str) for p in parts):
            return {"type": [p["type"] for p in parts]}
        return {"anyOf": parts}
    if t in _SCALARS:
        return {"type": _SCALARS[t]}
    if isinstance(t, type) and t.__name__ in _MODEL_NAMES:
        return {"$ref": f"#/$defs/{t.__name__}"}
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": _json_type(args[0])}
        return {"type": "array", "prefixItems": [_json_type(a) for a in args]}
    if origin in (list, typing.Sequence):
        return {"type": "array", "items": _json_type(args[0])}
    if origin in (dict, Mapping):
        if args[1] is Any:
            return {"type": "object"}
        return {"type": "object", "additionalProperties": _json_type(args[1])}
    if t is Any:
        return {}
    raise TypeError(f"no JSON type for {t!r}")


def _nest(props: dict[str, Any], path: str, schema: dict[str, Any]) -> None:
    head, _, rest = path.partition(".")
    if not rest:
        props[head] = schema
        return
    inner = props.setdefault(head, {"type": "object", "properties": {}})
    _nest(inner["properties"], rest, schema)


def model_schema(cls: type) -> dict[str, Any]:
    """The JSON Schema of one dataclass of the model."""
    hints = typing.get_type_hints(cls)
    props: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        path = f.metadata.get("json", f.name)
        if f.name == "raw" or path is None:
            continue
        _nest(props, path, _json_type(hints[f.name]))
    doc = (cls.__doc__ or "").strip().splitlines()[0]
    return {"description": doc, "type": "object", "properties": props}


def bundle_schema() -> dict[str, Any]:
    """The ``$defs`` of every class of :data:`MODEL`."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$defs": {cls.__name__: model_schema(cls) for cls in MODEL},
    }


def schema_markdown() -> str:
    """The fenced JSON block docs/bundle.md publishes (one line per field)."""
    lines = ["```json", "{", f'  "$schema": {json.dumps(bundle_schema()["$schema"])},', '  "$defs": {']
    defs = bundle_schema()["$defs"]
    for i, (name, d) in enumerate(defs.items()):
        lines.append(
            f'    "{name}": {{"description": {json.dumps(d["description"])}, "type": "object", "properties": {{'
        )
        props = list(d["properties"].items())
        for j, (key, p) in enumerate(props):
            lines.append(f"      {json.dumps(key)}: {json.dumps(p)}{',' if j < len(props) - 1 else ''}")
        lines.append(f"    }}}}{',' if i < len(defs) - 1 else ''}")
    lines += ["  }", "}", "```"]
    return "\n".join(lines) + "\n"
