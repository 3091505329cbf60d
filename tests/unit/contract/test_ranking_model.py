"""The typed ``ranking.json`` (``contract.RankingFile`` and its cuts, cost rows and cost block), and the
typed golden (``contract.Golden``): round trip, one line naming a hostile field.

Fast: no export, no training; the ranking is the shape ``ranking/candidates.py`` and the cost block
write (docs/bundle.md, "ranking.json").
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from isplit_export.contract import CostBlock, CutCost, Golden, RankingFile, load_golden
from isplit_export.errors import BadInputError


def _cost_row(head: int, nbytes: int, total: float) -> dict[str, Any]:
    return {
        "head_flops": head,
        "bytes": nbytes,
        "device_ms": 0.35,
        "transfer_ms": 39.8,
        "link_ms": 95.07,
        "server_ms": 0.05,
        "total_ms": total,
        "device_energy_mj": 7.03,
        "measured": {},
    }


RANKING: dict[str, Any] = {
    "schema": "isplit.ranking/2",
    "model": "digits",
    "top": 2,
    "input_bytes": 1024,
    "total_flops": 1000,
    "candidates": [
        {
            "index": 0,
            "node": "conv1",
            "module": "conv1",
            "shape": [8, 16, 16],
            "cui": 0.5,
            "log10_cui": -0.301,
            "local_max": True,
            "rank": 2,
            "head_flops_share": 0.2,
            "head_flops": 200,
            "probe": {"value": 0.8, "ci95": [0.7, 0.9]},
            "cost": _cost_row(200, 8192, 96.0),
        },
        {
            "index": 1,
            "node": "conv2",
            "module": "conv2",
            "shape": [4, 8, 8],
            "cui": 0.9,
            "log10_cui": -0.046,
            "local_max": True,
            "rank": 1,
            "head_flops_share": 0.7,
            "head_flops": 700,
            "cost": _cost_row(700, 1024, 95.5),
        },
    ],
    "cost": {
        "link": {"name": "lte", "mbit_s": 6.3, "rtt_ms": 55.25, "source": "a survey"},
        "device": {"target": "onnx", "unit": "cpu", "precision": "fp32", "gflops": 10.0, "power_w": None},
        "server": {
            "target": "x86-tensorrt",
            "unit": "gpu",
            "precision": "fp16",
            "gflops": 9750.0,
            "power_w": 70.0,
        },
        "encoding": "fp32",
        "total_flops": 1000,
        "constraints": {"max_head_flops": None, "max_boundary_kib": None, "max_latency_ms": None},
        "top": 2,
        "objective": "balanced",
        "selected": [1, 0],
        "pareto": [1],
        "excluded": {},
        "note": None,
        "baselines": {"device_only": _cost_row(1000, 0, 100.0), "server_only": _cost_row(0, 1024, 60.0)},
        "assumptions": ["batch 1"],
    },
}


def test_a_ranking_round_trips_byte_for_byte_and_is_typed() -> None:
    r = RankingFile.from_json(copy.deepcopy(RANKING))
    assert json.dumps(r.to_json()) == json.dumps(RANKING)  # same keys, same order: the file's bytes
    first, second = r.candidates
    assert (first.index, first.rank, first.head_flops, first.shape, first.probe_value) == (
        0,
        2,
        200,
        (8, 16, 16),
        0.8,
    )
    assert second.probe_value is None and second.cost is not None and second.cost.bytes == 1024
    assert isinstance(r.cost, CostBlock) and r.cost.selected == (1, 0) and r.cost.link.rtt_ms == 55.25
    assert r.cost.baselines["server_only"].total_ms == 60.0 and r.require_flops() == (1000, 1024)
    assert second.plan_row() == {
        "index": 1,
        "node": "conv2",
        "module": "conv2",
        "cui": 0.9,
        "rank": 1,
        "head_flops_share": 0.7,
        "cost": RANKING["candidates"][1]["cost"],
    }


def test_with_cost_replaces_every_row_and_the_block() -> None:
    bare = {**copy.deepcopy(RANKING), "cost": None}
    for c in bare["candidates"]:
        del c["cost"]
    r = RankingFile.from_json({k: v for k, v in bare.items() if k != "cost"})
    assert r.cost is None and all(c.cost is None for c in r.candidates)
    rows = [c["cost"] for c in RANKING["candidates"]]
    planned = r.with_cost(rows, {**RANKING["cost"], "exported": [1]})
    assert [c.cost.to_json() if c.cost else None for c in planned.candidates] == rows
    assert planned.cost is not None and planned.cost.exported == (1,)
    with pytest.raises(ValueError):  # one row per candidate, no fewer
        r.with_cost(rows[:1], RANKING["cost"])


def _mutated(path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(RANKING)
    *parents, last = path.split(".")
    block: Any = data
    for key in parents:
        block = block[int(key)] if isinstance(block, list) else block[key]
    block[last] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("schema", "isplit.bundle/1", "schema"),
        ("total_flops", 0, "total_flops"),
        ("candidates", [], "candidates"),
        ("candidates.0.index", "0", "candidates[0].index"),
        ("candidates.1.index", 0, "candidates[1].index"),  # a repeated cut
        ("candidates.0.shape", [1] * 9, "candidates[0].shape"),
        ("candidates.0.head_flops_share", 1.5, "candidates[0].head_flops_share"),
        ("candidates.0.head_flops", 5000, "candidates[0].head_flops"),  # above total_flops
        ("candidates.0.probe", {"value": float("inf")}, "candidates[0].probe.value"),
        ("candidates.0.cost.total_ms", -1.0, "candidates[0].cost.total_ms"),
        ("candidates.0.cost.measured", {"gpu": "run.json"}, "candidates[0].cost.measured"),
        ("cost.link.mbit_s", 0, "cost.link.mbit_s"),
        ("cost.selected", [True], "cost.selected[0]"),
        ("cost.baselines", {"device_only": _cost_row(0, 0, 1.0)}, "cost.baselines.server_only"),
        ("cost.note", "x" * 5000, "cost.note"),
    ],
)
def test_hostile_ranking_fields_are_one_line_naming_the_field(path: str, value: Any, field: str) -> None:
    with pytest.raises(BadInputError, match=re.escape(f"'{field}'")):
        RankingFile.from_json(_mutated(path, value))


def test_a_cost_row_refuses_a_hostile_figure() -> None:
    with pytest.raises(BadInputError, match=re.escape("'row.bytes'")):
        CutCost.from_json({**_cost_row(1, 2, 3.0), "bytes": -1}, "ranking.json", "row")


def _write_golden(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def test_a_golden_is_typed_and_labels_default_to_unknown(tmp_path: Path) -> None:
    x = np.zeros((3, 1, 4, 4), np.float32)
    path = _write_golden(
        tmp_path / "golden.npz",
        input=x,
        boundary=np.ones((3, 2), np.uint8),
        logits=np.ones((3, 10), np.float32),
    )
    g = load_golden(path, "golden.npz")
    assert isinstance(g, Golden) and g.images == 3 and g.logits_int8 is None
    assert g.labels.tolist() == [-1, -1, -1] and g.boundary.dtype == np.uint8


def test_a_golden_without_logits_is_one_line(tmp_path: Path) -> None:
    path = _write_golden(
        tmp_path / "golden.npz", input=np.zeros((1, 1), np.float32), boundary=np.zeros((1, 1))
    )
    with pytest.raises(BadInputError, match=r"golden\.npz lacks logits: rebuild the bundle"):
        load_golden(path, "golden.npz")
