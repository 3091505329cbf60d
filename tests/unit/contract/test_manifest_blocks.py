"""Typed manifest blocks and the typed engine recipe: ``RecordedOptions``, ``ModelInfo``, ``WeightsInfo``,
``EngineRecipe`` (with its ``DlaCheck``) and the calibration set: round trip, one line naming a hostile field.

Fast: no export; the blocks are the shapes ``jobs/export_split.py`` and ``targets/engine_build.py`` write.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from isplit_export.contract import (
    EngineRecipe,
    ModelInfo,
    RecordedOptions,
    ServedCheck,
    WeightsInfo,
    load_calibration,
    read_engine_recipe,
)
from isplit_export.errors import BadInputError

OPTIONS: dict[str, Any] = {
    "model": "isplit_export.zoo:digits_cnn",
    "data": "digits",
    "weights": "tests/data/digits.pt",
    "seed": 0,
    "top": 2,
    "verify_images": 64,
    "link": "lte",
    "objective": "balanced",
    "constraints": {"max_head_flops": 0.5, "max_boundary_kib": None, "max_latency_ms": None},
    "server": "x86-tensorrt",
}

RECIPE: dict[str, Any] = {
    "schema": "isplit.engine_plan/1",
    "target": "jetson-orin-nx",
    "tensorrt_version": "10.3",
    "typing": "weak",
    "precision": "fp16",
    "workspace_mib": 2048,
    "dla": {
        "layers": 3,
        "on_dla": 2,
        "fallback": [{"node": "", "op": "HardSwish", "reason": "not a DLA layer"}],
        "decision": "DLA: 2/3 layers",
    },
    "engines": {
        "head": {
            "onnx": "head.onnx",
            "engine": "engines/head.fp16.engine",
            "dla_core": 0,
            "trtexec": ["trtexec", "--onnx=head.onnx", "--useDLACore=0"],
        },
        "tail": {
            "onnx": "tail.onnx",
            "engine": "engines/tail.fp16.engine",
            "dla_core": None,
            "trtexec": ["trtexec", "--onnx=tail.onnx"],
        },
    },
}


def test_the_options_round_trip_typed() -> None:
    o = RecordedOptions.from_json(copy.deepcopy(OPTIONS))
    assert (o.model, o.seed, o.top, o.link, o.server) == (OPTIONS["model"], 0, 2, "lte", "x86-tensorrt")
    assert dict(o.constraints) == OPTIONS["constraints"] and dict(o.raw) == OPTIONS
    assert RecordedOptions.from_json({}).objective is None  # a hand-made bundle records none
    assert ModelInfo.from_json({"name": "m", "weights": "w"}) == ModelInfo("m", "w")
    assert WeightsInfo.from_json({}) == WeightsInfo("inline", "weights")


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [
        ("seed", "0", "options.seed"),
        ("top", 0, "options.top"),
        ("link", ["lte"], "options.link"),
        ("constraints", {"max_gpu": 1.0}, "options.constraints"),
        ("constraints", {"max_head_flops": "half"}, "options.constraints.max_head_flops"),
    ],
)
def test_hostile_options_are_one_line_naming_the_field(key: str, value: Any, field: str) -> None:
    with pytest.raises(BadInputError, match=re.escape(f"'{field}'")):
        RecordedOptions.from_json({**OPTIONS, key: value})


def test_a_recipe_round_trips_and_moves_its_models() -> None:
    r = EngineRecipe.from_json(copy.deepcopy(RECIPE), "engine_plan.json")
    assert json.dumps(r.to_json()) == json.dumps(RECIPE)
    assert (r.head.dla_core, r.tail.engine, r.dla.on_dla if r.dla else None) == (
        0,
        "engines/tail.fp16.engine",
        2,
    )
    assert r.dla is not None and r.dla.fallback[0].node == "" and r.dla.fallback[0].op == "HardSwish"
    moved = r.with_models({"head.onnx": "../../01-x.head.onnx"})
    assert moved.head.onnx == "../../01-x.head.onnx" and "--onnx=../../01-x.head.onnx" in moved.head.trtexec
    assert moved.tail == r.tail and r.head.onnx == "head.onnx"  # the original is unchanged


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("engines", "head", "trtexec"), ["trtexec"] * 65, "engines.head.trtexec"),
        (("engines", "tail", "dla_core"), 9, "engines.tail.dla_core"),
        (("dla", "fallback"), [{"node": 1}], "dla.fallback[0].node"),
        (("precision",), "", "precision"),
    ],
)
def test_a_hostile_recipe_is_one_line_naming_the_field(path: tuple[str, ...], value: Any, field: str) -> None:
    data = copy.deepcopy(RECIPE)
    block = data
    for key in path[:-1]:
        block = block[key]
    block[path[-1]] = value
    with pytest.raises(BadInputError, match=re.escape(f"'{field}'")):
        EngineRecipe.from_json(data, "engine_plan.json")


def test_a_foreign_recipe_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "engine_plan.json").write_text(json.dumps({**RECIPE, "schema": "other/1"}))
    with pytest.raises(BadInputError, match=r"is not an isplit\.engine_plan/1 plan"):
        read_engine_recipe(tmp_path / "engine_plan.json")


def test_the_calibration_set_is_typed(tmp_path: Path) -> None:
    np.savez(tmp_path / "inputs.npz", input=np.zeros((2, 1, 4, 4), np.float32))
    c = load_calibration(tmp_path / "inputs.npz", "calibration/inputs.npz")
    assert c.input.shape == (2, 1, 4, 4) and c.labels.tolist() == [-1, -1]


SERVED: dict[str, Any] = {
    "gate": "fp32",
    "images": 12,
    "distinct_compared": 4,
    "metrics": {"max_abs": 1.5e-06, "cosine": 1.0, "top1_agreement": 1.0},
    "passed": True,
    "failures": [],
}


def test_a_served_check_round_trips_and_rounds_when_written() -> None:
    c = ServedCheck.from_json(copy.deepcopy(SERVED), "run.json", "runs.x.vs_local_pair")
    assert json.dumps(c.to_json()) == json.dumps(SERVED)
    assert (c.gate, c.passed, c.images, c.distinct_compared) == ("fp32", True, 12, 4)
    raw = ServedCheck("fp32", False, ("x",), {"max_abs": 1.23456789, "cosine": float("nan")}, 3)
    assert list(raw.to_json())[:2] == ["images", "gate"]  # the goldens' order (no distinct_compared)
    assert raw.to_json() == {
        "gate": "fp32",
        "images": 3,
        "metrics": {"max_abs": 1.23457, "cosine": None},  # run.json's six digits; strict JSON has no NaN
        "passed": False,
        "failures": ["x"],
    }


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [
        ("passed", "yes", "g.passed"),
        ("failures", ["x"] * 65, "g.failures"),
        ("metrics", {"cosine": "1"}, "g.metrics.cosine"),
        ("gate", "", "g.gate"),
    ],
)
def test_a_hostile_served_check_is_one_line_naming_the_field(key: str, value: Any, field: str) -> None:
    with pytest.raises(BadInputError, match=re.escape(f"'{field}'")):
        ServedCheck.from_json({**SERVED, key: value}, "run.json", "g")
