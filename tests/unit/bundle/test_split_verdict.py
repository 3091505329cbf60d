"""Whether to split (bundle/split_verdict): the one line under the cost table of the export and of plan."""

from __future__ import annotations

import dataclasses

import pytest

from isplit_export.bundle.cost_block import build_cost
from isplit_export.bundle.cost_table import format_cost_table
from isplit_export.bundle.split_verdict import SplitVerdict, split_verdict
from isplit_export.contract import RankingFile
from isplit_export.links import parse_link
from isplit_export.options import Constraints
from isplit_export.targets.cost import compute_for
from isplit_export.targets.profiles import load_target

VGG_FLOPS = 30_960_000_000  # vgg16 at 224 x 224: about 31 GFLOPs


def _ranking() -> dict[str, object]:
    """A VGG-sized ranking: an early cut with a small (bottleneck-sized) boundary and a late one; the input
    is 3 x 224 x 224."""
    cuts = [
        {"index": 0, "node": "features_4", "shape": [16, 28, 28], "head_flops_share": 0.06, "rank": 2},
        {"index": 1, "node": "features_30", "shape": [512, 7, 7], "head_flops_share": 0.99, "rank": 1},
    ]
    return {
        "total_flops": VGG_FLOPS,
        "input_bytes": 4 * 3 * 224 * 224,
        "candidates": [{**c, "cui": 1.0, "log10_cui": 0.0} for c in cuts],
    }


def _planned(device: str, link: str) -> RankingFile:
    ranking = RankingFile.from_json(_ranking())
    block, _ = build_cost(
        ranking,
        compute_for(load_target(device), head=True),
        compute_for(load_target("x86-tensorrt"), head=False),
        parse_link(link),
        "int8",
        objective="latency",
        constraints=Constraints(),
        top=2,
    )
    return ranking.with_cost(block["per_cut"], {k: v for k, v in block.items() if k != "per_cut"})


def test_a_fast_device_on_a_slow_link_says_splitting_does_not_pay() -> None:
    planned = _planned("jetson-orin-agx", "lte")
    assert planned.cost is not None
    verdict = split_verdict(planned.cost, planned.candidates)
    assert verdict is not None and not verdict.pays
    device_ms = planned.cost.baselines["device_only"].total_ms
    best = min(
        c.cost.total_ms for c in planned.candidates if c.cost is not None and c.cost.total_ms is not None
    )
    assert device_ms is not None
    assert verdict.device_only_ms == device_ms and verdict.best_ms == best
    assert verdict.margin_ms == pytest.approx(device_ms - best)
    line = verdict.line()
    assert line.startswith(
        f"splitting does not pay here: all on device {device_ms:.2f} ms beats the best split ("
    )
    assert line.endswith(f" over lte) by {best - device_ms:.2f} ms")
    assert line in format_cost_table(planned).splitlines()


def test_a_slow_device_on_a_fast_link_says_by_how_much_the_split_wins() -> None:
    planned = _planned("cpu", "20,5")  # 85.5 GFLOP/s device: vgg16 takes 362 ms there; the input 65 ms
    assert planned.cost is not None
    verdict = split_verdict(planned.cost, planned.candidates)
    assert verdict is not None and verdict.pays and verdict.best_node == "features_4"
    table = format_cost_table(planned)
    assert "does not pay" not in table
    name, ms = verdict.baseline
    assert (
        f"splitting pays here: the best split (features_4, {verdict.best_ms:.2f} ms over 20 Mbit/s" in table
    )
    assert f"beats {name} ({ms:.2f} ms) by {ms - verdict.best_ms:.2f} ms" in table
    assert verdict.to_json()["splitting_pays"] is True and verdict.to_json()["line"] in table


@pytest.mark.parametrize(
    ("device_ms", "server_ms", "best_ms", "pays", "start"),
    [
        (0.36, 60.0, 58.86, False, "splitting does not pay here: all on device 0.36 ms beats"),
        (400.0, 50.0, 58.86, False, "splitting does not pay here: all on server 50.00 ms beats"),
        (58.86, 70.0, 58.86, False, "splitting does not pay here: all on device 58.86 ms beats"),  # a tie
        (
            400.0,
            70.0,
            58.86,
            True,
            "splitting pays here: the best split (x, 58.86 ms over lte) beats all on server",
        ),
    ],
)
def test_the_line_names_the_faster_baseline(
    device_ms: float, server_ms: float, best_ms: float, pays: bool, start: str
) -> None:
    v = SplitVerdict("lte", 3, "x", best_ms, device_ms, server_ms)
    assert v.pays is pays and v.line().startswith(start)


def test_no_verdict_without_costed_cuts() -> None:
    planned = _planned("jetson-orin-agx", "lte")
    assert planned.cost is not None
    assert split_verdict(planned.cost, []) is None
    unranked = [dataclasses.replace(c, rank=None) for c in planned.candidates]
    assert split_verdict(dataclasses.replace(planned.cost, selected=()), unranked) is None


def test_the_reports_cost_section_carries_the_verdict() -> None:
    from isplit_export.bundle.report_ranking import cost_section

    planned = _planned("jetson-orin-agx", "lte")
    assert planned.cost is not None
    verdict = split_verdict(planned.cost, planned.candidates)
    assert verdict is not None and f"**{verdict.line()}**" in cost_section(planned)
