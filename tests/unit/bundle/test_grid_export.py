"""The export of a grid choice (:mod:`isplit_export.bundle.grid_export`, :func:`isplit_export.options_grid.export_pair`):
which flag combinations choose a pair and which are refused (one line, before any work), the options that export
the chosen pair, report.md's section and ``plan``'s lines. Fast: hand-made grids, no model."""

from __future__ import annotations

from typing import Any

import pytest

from isplit_export.bundle.grid_choice import choose_pair
from isplit_export.bundle.grid_export import choose_export, replan_lines, report_section, verdict_line
from isplit_export.contract import GridExport
from isplit_export.contract.grid_export import grid_export_of
from isplit_export.contract.rate_accuracy import GridCut, GridPoint, RateAccuracyGrid
from isplit_export.errors import BadInputError
from isplit_export.options import Constraints, ExportOptions
from isplit_export.options_bottleneck import BottleneckOptions
from isplit_export.options_grid import PairChoice, export_pair
from tests.unit.contract.test_grid_export import block

GRID_JSON: dict[str, Any] = {
    "rate_accuracy": {
        "ladder": {"spec": "16B..64B"},
        "budgets": [16, 32, 64],
        "encoding": "int8",
        "metric": "accuracy",
        "full_model": 0.9,
        "total_flops": 1_000_000,
        "cuts": [
            {
                "index": 0,
                "node": "a",
                "cui_rank": 2,
                "head_flops": 10_000,
                "log10_cui": -3.0,
                "points": [
                    {"budget": 16, "code_bytes": 16, "value": 0.5, "ci95": [0.4, 0.6]},
                    {"budget": 64, "code_bytes": 64, "value": 0.85, "ci95": [0.8, 0.9]},
                ],
                "unreachable": [32],
            },
            {
                "index": 3,
                "node": "b",
                "cui_rank": 1,
                "head_flops": 400_000,
                "log10_cui": -2.0,
                "points": [{"budget": 32, "code_bytes": 32, "value": 0.88, "ci95": [0.84, 0.92]}],
                "unreachable": [16, 64],
            },
        ],
    }
}


def _opts(**kw: Any) -> ExportOptions:
    base: dict[str, Any] = {"model": "m", "budgets": "16B..64B", "link": "lte"}
    return ExportOptions(**(base | kw))


def test_export_pair_needs_budgets_a_link_and_exactly_one_target() -> None:
    assert export_pair(ExportOptions(model="m")) is None
    pair = export_pair(_opts(constraints=Constraints(max_latency_ms=60.0)))
    assert pair == PairChoice(link="lte", max_latency_ms=60.0)
    assert export_pair(_opts(min_accuracy="99%")) == PairChoice(link="lte", min_accuracy="99%")
    refusals = [
        (ExportOptions(model="m", min_accuracy="0.9"), "add --budgets"),
        (_opts(), "pass --link L and one of --max-latency-ms T or --min-accuracy A"),
        (_opts(link=None, min_accuracy="0.9"), "pass --link L"),
        (_opts(min_accuracy="0.9", constraints=Constraints(max_latency_ms=60.0)), "one of --max-latency-ms"),
        (_opts(min_accuracy="0.9", objective="latency"), "drop --objective"),
        (_opts(min_accuracy="0.9", constraints=Constraints(max_head_flops=0.5)), "drop --max-head-flops"),
        (_opts(min_accuracy="120%"), "--min-accuracy '120%'"),
    ]
    for opts, text in refusals:
        with pytest.raises(BadInputError) as err:
            export_pair(opts)
        assert text in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_choose_export_sizes_the_bottleneck_at_the_chosen_budget_and_exports_one_split() -> None:
    trained = BottleneckOptions(train_steps=8, finetune="tail")
    opts = _opts(min_accuracy="0.86", bottleneck=trained, top=3)
    pair = export_pair(opts)
    assert pair is not None
    pick = choose_export(GRID_JSON, opts, pair)
    assert (pick.cut, pick.chosen.point.budget) == (3, 32)  # the only point reaching 0.86
    assert pick.options.top == 1 and pick.options.bottleneck is not None
    assert pick.options.bottleneck.size == "32B" and pick.options.bottleneck.train_steps == 8
    assert pick.options.bottleneck.finetune == "tail" and pick.limit == 0.86
    share = choose_export(GRID_JSON, _opts(min_accuracy="90%"), PairChoice(link="lte", min_accuracy="90%"))
    assert share.limit == pytest.approx(0.81)  # 90 % of the full model's 0.9
    with pytest.raises(BadInputError, match="the fastest is"):
        choose_export(GRID_JSON, opts, PairChoice(link="lte", max_latency_ms=1.0))
    with pytest.raises(BadInputError, match="no rate-accuracy grid"):
        choose_export({}, opts, pair)


def test_report_section_and_verdict_say_which_figure_decided() -> None:
    assert report_section(None) == []
    g = GridExport.from_json(block())
    text = "\n".join(report_section(grid_export_of({"grid_choice": block()})))
    assert "## The chosen (cut, budget)" in text and "`splits/01-features_4`" in text
    assert "| predicted (probe, untrained code) | 16 B | 68.0% [54.2%, 79.2%] |" in text
    assert "| measured (trained pair, held-out) | 16 B | 70.0% [56.0%, 81.0%] on 50 images |" in text
    assert verdict_line(g).startswith("--max-latency-ms 55.3 on link lte: met as measured: the cost model")
    assert "an estimate, not a timing" in verdict_line(g)
    low = GridExport.from_json(block("min_accuracy", 0.75, met=False))
    assert "NOT met as measured: the trained pair's held-out accuracy is 70.0% (< 75.0%)" in verdict_line(low)


def test_replan_lines_say_whether_the_pair_is_the_exported_one() -> None:
    from isplit_export.contract.rate_accuracy import grid_of

    grid = grid_of(GRID_JSON)
    assert grid is not None
    exported = GridExport.from_json(block() | {"cut": 3, "node": "b", "budget": 32})
    same = replan_lines(choose_pair(grid, PairChoice(link="lte", min_accuracy="0.86")), exported)
    assert same[-1].startswith("this is the exported pair (cut 3 (b) at 32B")
    other = replan_lines(choose_pair(grid, PairChoice(link="lte", min_accuracy="0.4")), exported)
    assert other[0].startswith("chosen for --min-accuracy 0.4") and "cut 0 (a) at 16B" in other[0]
    assert other[-1].startswith("this differs from the exported pair (cut 3 (b) at 32B")
    front = choose_pair(grid, PairChoice(link="lte"))
    assert replan_lines(front, exported) == front.lines()  # no target: the front, nothing to compare
    assert (
        "not exported from a grid choice"
        in replan_lines(choose_pair(grid, PairChoice(link="lte", min_accuracy="0.4")), None)[-1]
    )


def test_hand_made_grid_is_what_the_contract_reads() -> None:
    grid = RateAccuracyGrid.from_json(GRID_JSON["rate_accuracy"])
    assert [c.index for c in grid.cuts] == [0, 3] and isinstance(grid.cuts[1], GridCut)
    assert isinstance(grid.points[0], GridPoint) and grid.points[2].budget == 32
