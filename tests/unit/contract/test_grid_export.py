"""The manifest's ``grid_choice`` block (:mod:`isplit_export.contract.grid_export`): a round trip, hostile values
refused in one line naming the field, and a whole manifest refused by ``validate_manifest`` when the block is bad.
Fast: hand-written blocks in the shape ``bundle/grid_export.py`` writes."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest

from isplit_export.contract import GridExport, PairFigures
from isplit_export.contract.grid_export import grid_export_of
from isplit_export.contract.manifest import validate_manifest
from isplit_export.contract.schema import SCHEMA
from isplit_export.errors import BadInputError


def _figures(
    code: int, acc: float, ci: tuple[float, float], ms: tuple[float, float, float], images: int | None
) -> dict[str, Any]:
    return {
        "code_bytes": code,
        "accuracy": acc,
        "ci95": list(ci),
        "images": images,
        "device_ms": ms[0],
        "link_ms": ms[1],
        "server_ms": ms[2],
        "total_ms": round(sum(ms), 6),
    }


def block(mode: str = "max_latency_ms", limit: float = 55.3, met: bool = True) -> dict[str, Any]:
    return {
        "mode": mode,
        "target": "--max-latency-ms 55.3" if mode == "max_latency_ms" else "--min-accuracy 0.6",
        "limit": limit,
        "link": "lte",
        "metric": "accuracy",
        "split": "splits/01-features_4",
        "cut": 2,
        "node": "features_4",
        "budget": 16,
        "predicted": _figures(16, 0.68, (0.542, 0.792), (0.015, 55.27, 0.0), None),
        "measured": _figures(16, 0.7, (0.56, 0.81), (0.015, 55.27, 0.0), 50),
        "met": met,
    }


def test_the_block_round_trips_through_its_typed_value() -> None:
    for b in (block(), block("min_accuracy", 0.6)):
        g = GridExport.from_json(b)
        assert g.to_json() == b and GridExport.from_json(g.to_json()) == g
        assert isinstance(g.measured, PairFigures) and g.measured.ci95 == (0.56, 0.81)
    assert grid_export_of({}) is None
    assert grid_export_of({"grid_choice": block()}) == GridExport.from_json(block())


def test_met_follows_the_measured_figures_in_both_modes() -> None:
    assert GridExport.from_json(block(limit=55.285)).met  # 55.285 <= 55.285
    with pytest.raises(BadInputError, match=r"'grid_choice.met' must be false"):
        GridExport.from_json(block(limit=55.2))  # measured 55.285 ms > 55.2 but written as met
    assert not GridExport.from_json(block("min_accuracy", 0.75, met=False)).met
    with pytest.raises(BadInputError, match=r"'grid_choice.met' must be true"):
        GridExport.from_json(block("min_accuracy", 0.6, met=False))


_DELETE = object()


def _set(b: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(b)
    *parents, last = path.split(".")
    node = out
    for p in parents:
        node = node[p]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return out


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        ("mode", "fastest", "grid_choice.mode"),
        ("mode", None, "grid_choice.mode"),
        ("limit", -1.0, "grid_choice.limit"),
        ("limit", math.nan, "grid_choice.limit"),
        ("limit", "55", "grid_choice.limit"),
        ("met", "yes", "grid_choice.met"),
        ("cut", True, "grid_choice.cut"),
        ("cut", 2.0, "grid_choice.cut"),
        ("budget", 0, "grid_choice.budget"),
        ("split", "", "grid_choice.split"),
        ("link", _DELETE, "grid_choice.link"),
        ("predicted", _DELETE, "grid_choice.predicted"),
        ("measured", [], "grid_choice.measured"),
        ("predicted.accuracy", 1.5, "grid_choice.predicted.accuracy"),
        ("predicted.accuracy", math.inf, "grid_choice.predicted.accuracy"),
        ("predicted.ci95", [0.9, 0.95], "grid_choice.predicted.ci95"),  # not around 0.68
        ("predicted.ci95", [0.5], "grid_choice.predicted.ci95"),
        ("predicted.ci95", [0.5, math.nan], "grid_choice.predicted.ci95"),
        ("measured.ci95", [False, 0.9], "grid_choice.measured.ci95"),
        ("measured.code_bytes", -16, "grid_choice.measured.code_bytes"),
        ("measured.images", 0, "grid_choice.measured.images"),
        ("measured.link_ms", -0.5, "grid_choice.measured.link_ms"),
        ("measured.total_ms", 1.0, "grid_choice.measured.total_ms"),  # not the sum of its parts
        ("predicted.device_ms", 1e12, "grid_choice.predicted.device_ms"),
    ],
)
def test_hostile_values_are_one_line_naming_the_field(path: str, value: Any, named: str) -> None:
    with pytest.raises(BadInputError) as err:
        GridExport.from_json(_set(block(), path, value))
    text = str(err.value)
    assert named in text and "\n" not in text, text


def test_a_manifest_with_a_bad_block_is_refused_by_the_contract() -> None:
    manifest: dict[str, Any] = {"schema": SCHEMA, "files": {}, "splits": [], "grid_choice": "cut 2"}
    with pytest.raises(BadInputError, match="field 'grid_choice' must be an object"):
        validate_manifest(manifest)
    manifest["grid_choice"] = block()
    assert validate_manifest(manifest) is manifest
