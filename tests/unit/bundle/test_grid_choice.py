"""The (cut, budget) choice on the probe's grid (:mod:`isplit_export.bundle.grid_choice`): pricing, the Pareto
front, the most accurate pair within a latency (ties inside the CI go to the smaller code), the fastest pair
reaching an accuracy (absolute or a share of the full model's), and targets no pair meets."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from isplit_export.bundle.grid_choice import (
    choose_pair,
    fastest_reaching,
    most_accurate_within,
    pareto_front,
    price_grid,
)
from isplit_export.contract.rate_accuracy import GridCut, GridPoint, RateAccuracyGrid
from isplit_export.errors import BadInputError
from isplit_export.links import Link
from isplit_export.options_grid import PairChoice, parse_accuracy_floor
from isplit_export.plots_rate import plot_pareto
from isplit_export.targets.cost import Compute
from tests.support.helpers import DIGITS, run_cli

TOTAL = 1_000_000_000
DEVICE = Compute("dev", "gpu", "fp16", 1000.0, 10.0)  # 1 GFLOP -> 1 ms
SERVER = Compute("srv", "gpu", "fp16", 10000.0, None)  # 1 GFLOP -> 0.1 ms
LINK = Link("test", 8.0, 10.0, "test")  # 1000 bytes -> 1 ms, plus 10 ms


def _grid(
    points: dict[int, list[tuple[int, float, tuple[float, float]]]], full: float = 0.96
) -> RateAccuracyGrid:
    """A grid of cuts (index -> head share index/10) with (bytes, value, ci) points."""
    cuts = []
    for i, pts in points.items():
        head = TOTAL * i // 10
        gp = tuple(GridPoint(i, f"n{i}", None, head, b, b, v, ci) for b, v, ci in pts)
        cuts.append(GridCut(i, f"n{i}", None, head, None, gp, ()))
    budgets = tuple(sorted({p.budget for c in cuts for p in c.points}))
    return RateAccuracyGrid("test", budgets, "int8", "accuracy", full, TOTAL, tuple(cuts))


GRID = _grid(
    {
        1: [(1000, 0.70, (0.60, 0.78)), (4000, 0.90, (0.84, 0.94)), (16000, 0.95, (0.90, 0.98))],
        5: [(1000, 0.80, (0.72, 0.86)), (4000, 0.93, (0.88, 0.96)), (16000, 0.94, (0.89, 0.97))],
    }
)


def _ms(cut: int, nbytes: int) -> float:
    """Hand-computed: head on the device, the code over the link, the tail on the server."""
    return cut / 10 * 1000 / 1000 + nbytes / 1000 + 10.0 + (10 - cut) / 10 * 0.1


def test_every_point_is_priced_by_the_cost_model() -> None:
    priced = price_grid(GRID, DEVICE, SERVER, LINK)
    assert len(priced) == 6
    for q in priced:
        assert q.total_ms == pytest.approx(_ms(q.point.cut, q.point.code_bytes), abs=1e-5)
        assert q.cost["bytes"] == q.point.code_bytes
        assert q.cost["device_energy_mj"] == pytest.approx(10.0 * q.point.cut / 10, abs=1e-5)


def test_the_pareto_front_keeps_only_undominated_points_fastest_first() -> None:
    front = pareto_front(price_grid(GRID, DEVICE, SERVER, LINK))
    got = [(q.point.cut, q.point.code_bytes) for q in front]
    # (1, 1000) 11.19 ms 0.70; (5, 1000) 11.55 ms 0.80; (1, 4000) 14.19 ms 0.90; (5, 4000) 14.55 ms 0.93;
    # (1, 16000) 26.19 ms 0.95; (5, 16000) 26.55 ms 0.94 is dominated by (1, 16000)
    assert got == [(1, 1000), (5, 1000), (1, 4000), (5, 4000), (1, 16000)]
    assert all(
        a.total_ms < b.total_ms and a.point.value < b.point.value for a, b in itertools.pairwise(front)
    )


def test_within_a_latency_the_most_accurate_and_ties_inside_its_ci_go_to_the_smaller_code() -> None:
    priced = price_grid(GRID, DEVICE, SERVER, LINK)
    # within 30 ms: (1, 16000) at 0.95 is best; 0.93 and 0.94 lie inside its CI [0.90, 0.98], 0.90 on its
    # edge: the smallest code among them is 4000 B, where (5, 4000) scores higher than (1, 4000)
    pick = most_accurate_within(priced, 30.0, "test")
    assert (pick.point.cut, pick.point.code_bytes) == (5, 4000)
    # within 14.3 ms: (1, 4000) 0.90 [0.84, 0.94] is the best; (5, 1000) at 0.80, smaller, is outside its CI
    pick = most_accurate_within(priced, 14.3, "test")
    assert (pick.point.cut, pick.point.code_bytes) == (1, 4000)
    with pytest.raises(BadInputError) as err:
        most_accurate_within(priced, 5.0, "test")
    msg = str(err.value)
    assert "\n" not in msg and "the fastest is 11.190 ms (cut 1 @ 1000B)" in msg, msg


def test_the_fastest_pair_reaching_an_accuracy_absolute_or_relative() -> None:
    priced = price_grid(GRID, DEVICE, SERVER, LINK)
    pick = fastest_reaching(priced, 0.92, "0.92", "accuracy")
    assert (pick.point.cut, pick.point.code_bytes) == (5, 4000)
    floor = parse_accuracy_floor("99%")
    assert floor.relative and floor.of(0.955) == pytest.approx(0.94545)
    pick = fastest_reaching(priced, floor.of(0.955), "99%", "accuracy")  # 0.94 at (5, 16000) is below
    assert (pick.point.cut, pick.point.code_bytes) == (1, 16000)
    with pytest.raises(BadInputError, match=r"the best is 95.0% \(cut 1 @ 16000B\)"):
        fastest_reaching(priced, 0.97, "0.97", "accuracy")


@pytest.mark.parametrize("text", ["0", "1.5", "101%", "x", "-3%", "nan"])
def test_a_bad_accuracy_floor_is_one_line(text: str) -> None:
    with pytest.raises(BadInputError, match="--min-accuracy"):
        parse_accuracy_floor(text)


def test_pair_choice_refuses_both_targets_and_bad_links() -> None:
    with pytest.raises(BadInputError, match="pass one of them"):
        PairChoice(link="lte", max_latency_ms=50.0, min_accuracy="0.9")
    with pytest.raises(BadInputError, match="--link"):
        PairChoice(link="carrier-pigeon")
    with pytest.raises(BadInputError, match="--max-latency-ms"):
        PairChoice(link="lte", max_latency_ms=-1.0)


def test_choose_pair_on_real_profiles_and_the_front_plot(tmp_path: Path) -> None:
    front = choose_pair(GRID, PairChoice(link="lte", target="jetson"))
    assert front.chosen is None and front.mode == "pareto" and front.front
    lines = front.lines()
    assert lines[0].startswith("the Pareto front") and len(lines) == 2 + len(front.front)
    slowest = max(q.total_ms for q in front.points)
    chosen = choose_pair(GRID, PairChoice(link="lte", target="jetson", max_latency_ms=slowest))
    assert chosen.chosen is not None and chosen.lines()[0].startswith("chosen for --max-latency-ms")
    plot_pareto(chosen.to_json(), tmp_path / "a.png", "m")
    plot_pareto(chosen.to_json(), tmp_path / "b.png", "m")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_cli_refuses_grid_choices_without_their_flags_before_any_model_work(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for args, needle in (
        (["--link", "lte"], "add --budgets"),
        (["--budgets", "16B..1KiB", "--max-latency-ms", "50"], "add --link"),
        (["--budgets", "16B..1KiB", "--link", "lte", "--min-accuracy", "2"], "--min-accuracy"),
    ):
        code, out, err = run_cli(capsys, "rank", DIGITS, "--weights", "nosuch.pt", *args)
        lines = err.strip().splitlines()
        assert code == 2 and out == "" and len(lines) == 1 and needle in lines[0], (args, err)
