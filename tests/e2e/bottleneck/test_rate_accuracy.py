"""``isplit-export rank --budgets``: the probe's rate-accuracy grid printed, written into ranking.json and drawn
(rate_accuracy.png), on the committed digits CNN and 200 digits it never saw; without ``--budgets`` the
ranking is what it was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.helpers import DIGITS, run_cli


def test_rank_with_budgets_prints_writes_and_draws_the_grid(
    capsys: pytest.CaptureFixture[str], digits_weights: Path, digits_dir: Path, tmp_path: Path
) -> None:
    common = ["rank", DIGITS, "--weights", digits_weights, "--data", digits_dir, "--probe-cuts", "all"]
    common += ["--bootstrap", "0"]
    code, out, err = run_cli(capsys, *common, "--budgets", "16B..1KiB", "--out", tmp_path / "grid")
    assert code == 0, err
    grid_at = out.index("per code budget (16B..1KiB, int8)")
    header = out[grid_at:].splitlines()[1].split()
    assert header[-7:] == ["16B", "32B", "64B", "128B", "256B", "512B", "1KiB"]
    png = tmp_path / "grid" / "rate_accuracy.png"
    assert png.read_bytes().startswith(b"\x89PNG") and str(png) in out
    data = json.loads((tmp_path / "grid" / "ranking.json").read_text())
    block = data["rate_accuracy"]
    assert block["budgets"] == [16, 32, 64, 128, 256, 512, 1024] and block["metric"] == "accuracy"
    assert [c["index"] for c in block["cuts"]] == [c["index"] for c in data["candidates"]]
    for c in block["cuts"]:
        assert sorted([p["budget"] for p in c["points"]] + c["unreachable"]) == block["budgets"]
        for p in c["points"]:
            lo, hi = p["ci95"]
            assert lo <= p["value"] <= hi and p["images"] == block["held_out_images"]
    ranked = {c["index"]: c["rank"] for c in data["candidates"]}
    assert all(c["cui_rank"] == ranked[c["index"]] for c in block["cuts"])
    # more bytes, better code: at every cut the largest budget scores at least the smallest one
    assert all(c["points"][-1]["value"] >= c["points"][0]["value"] for c in block["cuts"])

    code, out, err = run_cli(capsys, *common, "--out", tmp_path / "plain")
    assert code == 0, err
    plain = json.loads((tmp_path / "plain" / "ranking.json").read_text())
    assert "rate_accuracy" not in plain and "per code budget" not in out
    assert not (tmp_path / "plain" / "rate_accuracy.png").exists()
    assert {k: v for k, v in data.items() if k != "rate_accuracy"} == plain


def test_rank_chooses_a_pair_on_the_grid_or_names_the_fastest(
    capsys: pytest.CaptureFixture[str], digits_weights: Path, digits_dir: Path, tmp_path: Path
) -> None:
    common = ["rank", DIGITS, "--weights", digits_weights, "--data", digits_dir, "--probe-cuts", "all"]
    common += ["--bootstrap", "0", "--budgets", "16B..256B*4", "--link", "lte", "--target", "jetson"]
    code, out, err = run_cli(capsys, *common, "--min-accuracy", "0.5", "--out", tmp_path / "r")
    assert code == 0, err
    chosen = [line for line in out.splitlines() if line.startswith("chosen for --min-accuracy 0.5")]
    assert len(chosen) == 1 and "link lte" in chosen[0] and " ms (device " in chosen[0], out
    assert (tmp_path / "r" / "pareto.png").read_bytes().startswith(b"\x89PNG")
    code, out, err = run_cli(capsys, *common, "--max-latency-ms", "1")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "--max-latency-ms 1: no (cut, budget)" in lines[0], err
    assert "the fastest is 55.2" in lines[0]  # lte's 55.25 ms RTT plus 16 B at 6.3 Mbit/s
