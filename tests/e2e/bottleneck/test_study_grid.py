"""``isplit-export study --budgets``: a tiny grid study (two budgets, the two candidate cuts, one repeat) on the
committed digits CNN and 200 digits it never saw: study.json's blocks, the terminal table, study_rate.png; an
unreachable latency target is refused in one line before any training."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from isplit_export.bottleneck.study_grid import SCHEMA
from tests.support.helpers import DIGITS, run_cli

pytestmark = pytest.mark.e2e
LIMIT_MS = 55.35
"""On lte (55.25 ms round trip, 6.3 Mbit/s) a 32 B code arrives within this, a 128 B one does not."""


def _study(
    capsys: pytest.CaptureFixture[str], weights: Path, data: Path, out: Path, limit: float, *extra: str
) -> tuple[int, str, str]:
    return run_cli(
        capsys,
        "study",
        DIGITS,
        "--weights",
        weights,
        "--data",
        data,
        "--budgets",
        "32B,128B",
        "--link",
        "lte",
        "--max-latency-ms",
        limit,
        "--repeats",
        "1",
        "--train-steps",
        "10",
        "--out",
        out,
        *extra,
    )


def test_grid_study_writes_its_blocks_and_the_figure(
    capsys: pytest.CaptureFixture[str], digits_weights: Path, digits_dir: Path, tmp_path: Path
) -> None:
    code, out, err = _study(capsys, digits_weights, digits_dir, tmp_path / "s", LIMIT_MS)
    assert code == 0, err
    data = json.loads((tmp_path / "s" / "study.json").read_text())
    assert data["schema"] == SCHEMA and data["options"]["budgets"] == "32B,128B"
    assert {"grid", "choice", "selection", "points", "summary", "run"} <= set(data)
    candidates = [c["index"] for c in data["grid"]["cuts"] if c["cui_rank"] is not None]
    assert len(candidates) == 2 and data["grid"]["budgets"] == [32, 128]
    points = data["points"]
    assert [(p["cut"], p["budget"]) for p in points] == [(c, b) for c in candidates for b in (32, 128)]
    assert data["selection"] == {"mode": "all", "points": 4, "of": 4}
    for p in points:
        assert p["code_bytes"] <= p["budget"] and p["measured"]["repeats"] == 1 and len(p["training"]) == 1
        assert p["measured"]["ci95"][0] <= p["measured"]["value"] <= p["measured"]["ci95"][1]
        assert p["feasible"] == (p["total_ms"] <= LIMIT_MS) and p["feasible"] == (p["budget"] == 32)
    s = data["summary"]
    assert s["points"] == 4 and s["separated_pairs"]["of"] == 6
    for q in s["ordering"].values():
        assert q["right"] + q["wrong"] + q["tied"] == len(s["separated_pairs"]["pairs"])
    same_cut = [(i, j) for i, j in s["separated_pairs"]["pairs"] if points[i]["cut"] == points[j]["cut"]]
    assert s["ordering"]["cui"]["tied"] >= len(same_cut)  # one CUI per cut: its budgets tie
    r = s["regret"]
    chosen, best = points[r["chosen"]], points[r["best"]]
    assert chosen["feasible"] and best["feasible"] and r["feasible"] == 2
    assert (chosen["cut"], chosen["budget"]) == (
        data["choice"]["chosen"]["cut"],
        data["choice"]["chosen"]["budget"],
    )
    assert r["value"] == pytest.approx(best["measured"]["value"] - chosen["measured"]["value"], abs=1e-6)
    assert r["value"] >= 0 and r["ci95"][0] <= r["value"] <= r["ci95"][1]
    assert r["conclusive"] == (r["ci95"][0] > 0)
    assert set(data["run"]["train_seconds"]) == {f"cut {p['cut']} @ {p['code_bytes']}B" for p in points}
    png = tmp_path / "s" / "study_rate.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and str(png) in out
    assert "chosen" in out and "probe      separated pairs" in out and s["note"] in out


def test_unreachable_latency_target_is_refused_before_training(
    capsys: pytest.CaptureFixture[str], digits_weights: Path, digits_dir: Path, tmp_path: Path
) -> None:
    code, _out, err = _study(capsys, digits_weights, digits_dir, tmp_path / "s", 1.0)
    assert code == 2 and not (tmp_path / "s").exists()
    line = err.strip().splitlines()[-1]
    assert "--max-latency-ms 1: no (cut, budget) of the grid is that fast on link lte" in line


def test_the_grid_is_priced_on_the_given_device_and_server(
    capsys: pytest.CaptureFixture[str], digits_weights: Path, digits_dir: Path, tmp_path: Path
) -> None:
    fastest = {}
    for profiles in ((), ("--target", "jetson"), ("--target", "jetson", "--server", "cpu")):
        code, _out, err = _study(capsys, digits_weights, digits_dir, tmp_path / "s", 1.0, *profiles)
        assert code == 2, err
        found = re.search(r"the fastest is ([\d.]+) ms \(cut (\d+) @ 32B\)", err.strip().splitlines()[-1])
        assert found, err
        fastest[profiles] = (float(found.group(1)), int(found.group(2)))
    assert len(set(fastest.values())) == 3, fastest  # each device and server prices the grid its own way
