"""The export of a (cut, budget) chosen on the probe's grid, on the committed digits CNN and 200 digits it never
saw: ``isplit-export MODEL --budgets 16B..1KiB --link lte --max-latency-ms T`` ships the chosen pair (one split, a
bottleneck at the chosen budget) with predicted and measured figures side by side; an unreachable T is one line,
exit 2, nothing written; ``plan`` re-runs the choice without torch. Training kept tiny (8 steps)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from isplit_export import contract
from isplit_export.cli import main
from isplit_export.contract.rate_accuracy import grid_of
from isplit_export.jobs.verify import verify_bundle
from tests.support.helpers import DIGITS, run_cli, run_cli_without_torch

pytestmark = pytest.mark.e2e  # whole exports and the CLI

T = 55.3
"""Reachable on lte: its RTT is 55.25 ms and the smallest codes (16 B, 32 B) add 0.02-0.04 ms (rank --budgets
16B..1KiB --link lte on these digits prints the front from 55.272 ms)."""
FAST = ["--bootstrap", "0", "--train-steps", "8", "--latency-runs", "2"]


def _export(weights: Path, data: Path) -> list[str]:
    """The export's model, data and grid flags (the target and --out follow)."""
    return [DIGITS, "--weights", str(weights), "--data", str(data), "--budgets", "16B..1KiB", "--link", "lte"]


@pytest.fixture(scope="module")
def grid_bundle(tmp_path_factory: pytest.TempPathFactory, digits_weights: Path, digits_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("grid") / "b"
    args = _export(digits_weights, digits_dir)
    assert main([*args, "--max-latency-ms", str(T), *FAST, "--out", str(out)]) == 0
    return out


def test_the_export_ships_the_chosen_pair_with_predicted_and_measured_figures(grid_bundle: Path) -> None:
    m = contract.read_manifest(grid_bundle)
    g = m.grid_choice
    assert g is not None and g.mode == "max_latency_ms" and g.limit == T and g.link == "lte"
    assert len(m.splits) == 1 and m.splits[0].dir == g.split and m.splits[0].index == g.cut
    split = m.splits[0]
    # the grid point, as ranking.json's grid holds it (the probe's score, untrained)
    grid = grid_of(contract.read_ranking(m).to_json())
    assert grid is not None
    point = next(p for p in grid.points if (p.cut, p.budget) == (g.cut, g.budget))
    assert (g.predicted.accuracy, g.predicted.ci95, g.predicted.code_bytes) == (
        point.value,
        point.ci95,
        point.code_bytes,
    )
    assert g.predicted.total_ms <= T
    # nothing within T predicts a score above the chosen point's CI (ties inside it went to the smaller code)
    within = [p for p in grid.points if p.code_bytes <= 16]  # 16 B costs at most 55.29 ms on lte, any cut
    assert within and all(p.value <= g.predicted.ci95[1] for p in within)
    # measured: the trained pair on the held-out images, at the exported code's size
    task = split.task("int8")
    assert (g.measured.accuracy, g.measured.images) == (task.value, task.images) and task.images
    assert g.measured.code_bytes == split.boundary.bytes_per_image and g.measured.code_bytes <= g.budget
    assert g.met == (g.measured.total_ms <= T)
    written = json.loads((grid_bundle / "manifest.json").read_text())
    assert (
        written["options"]["bottleneck"]["size"] == f"{g.budget}B"
    )  # the chosen budget sized the bottleneck
    assert written["options"]["bottleneck"]["train_steps"] == 8 and written["options"]["top"] == 1
    report = (grid_bundle / "report.md").read_text()
    assert "## The chosen (cut, budget)" in report
    assert f"**Target {'met' if g.met else 'NOT met'} as measured:" in report
    assert (
        "| predicted (probe, untrained code) |" in report
        and "| measured (trained pair, held-out) |" in report
    )
    assert verify_bundle(grid_bundle, write=False).passed


def test_an_unreachable_target_is_one_line_exit_2_before_any_training(
    capsys: pytest.CaptureFixture[str], digits_weights: Path, digits_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "never"
    args = _export(digits_weights, digits_dir)
    # 10^6 training steps would run for hours: the refusal must come before them
    code, _, err = run_cli(
        capsys, *args, "--max-latency-ms", "50", "--bootstrap", "0", "--train-steps", "1000000", "--out", out
    )
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert (
        "--max-latency-ms 50: no (cut, budget) of the grid is that fast on link lte: the fastest is 55.2"
        in lines[0]
    )
    assert not out.exists()
    code, _, err = run_cli(capsys, *args, "--min-accuracy", "0.999", "--bootstrap", "0", "--out", out)
    assert code == 2 and "reaches 99.9% held-out accuracy: the best is" in err and not out.exists(), err


def test_at_step_0_the_exported_pair_measures_what_the_probe_predicted(
    capsys: pytest.CaptureFixture[str], digits_weights: Path, digits_dir: Path, tmp_path: Path
) -> None:
    """The bottleneck starts from the probe's code: untrained, the exported pair is the grid point itself, on
    the same held-out images (--min-accuracy this time, over every cut)."""
    out = tmp_path / "b0"
    args = [*_export(digits_weights, digits_dir), "--probe-cuts", "all", "--min-accuracy", "0.85"]
    code, stdout, err = run_cli(capsys, *args, "--bootstrap", "0", "--train-steps", "0", "--out", out)
    assert code == 0, err
    g = contract.read_manifest(out).grid_choice
    assert g is not None and g.mode == "min_accuracy" and g.limit == 0.85
    assert (g.measured.accuracy, g.measured.ci95) == (g.predicted.accuracy, g.predicted.ci95)
    assert g.measured.images == g.predicted.images
    assert g.measured.code_bytes == g.predicted.code_bytes and g.measured.total_ms == g.predicted.total_ms
    assert g.met and g.predicted.accuracy >= 0.85
    assert (
        "--min-accuracy 0.85 on link lte: met as measured: the trained pair's held-out accuracy is" in stdout
    )


def test_plan_rechooses_on_the_bundle_grid_without_torch(grid_bundle: Path, tmp_path: Path) -> None:
    g = contract.read_manifest(grid_bundle).grid_choice
    assert g is not None
    proc = run_cli_without_torch("plan", grid_bundle, "--link", "lte", "--max-latency-ms", str(T))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1].startswith(
        f"this is the exported pair (cut {g.cut} ({g.node}) at {g.budget}B"
    )
    for flags in (["--link", "wifi", "--max-latency-ms", "1000"], ["--link", "5g", "--min-accuracy", "0.6"]):
        proc = run_cli_without_torch("plan", grid_bundle, *flags)
        assert proc.returncode == 0, proc.stderr
        chosen, verdict = proc.stdout.splitlines()[-2:]
        found = re.search(r": cut (\d+) \(\S+\) at (\d+)B: predicted", chosen)
        assert found is not None and f"link {flags[1]}" in chosen, chosen
        same = (int(found.group(1)), int(found.group(2))) == (g.cut, g.budget)
        assert verdict.startswith(
            "this is the exported pair" if same else "this differs from the exported pair"
        )
    proc = run_cli_without_torch("plan", grid_bundle, "--link", "lte", "--min-accuracy", "0.6", "--top", "2")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: --top: plan re-chooses this bundle's (cut, budget) on its grid and prints it only; drop them "
        "(or drop --max-latency-ms / --min-accuracy for the cost re-plan)"
    ], proc.stderr
    proc = run_cli_without_torch("plan", grid_bundle, "--link", "lte", "--max-latency-ms", "50")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "the fastest is 55.2" in proc.stderr
    # no target flag: the cost re-plan of the exported split, then the export's own target on this link
    proc = run_cli_without_torch("plan", grid_bundle, "--link", "wifi", "--out", tmp_path / "plan.json")
    assert proc.returncode == 0, proc.stderr
    assert f"chosen for --max-latency-ms {T:g} (link wifi" in proc.stdout and "end-to-end ms" in proc.stdout
    assert json.loads((tmp_path / "plan.json").read_text())["cost"]["constraints"]["max_latency_ms"] is None
