"""The grid study's statistics on hand-made measured outcomes: separated pairs, how predictors order them (ties
at one cut not counted right), the chosen point's regret and its CI; the point selection; the grid flags."""

from __future__ import annotations

import numpy as np
import pytest

from isplit_export.bottleneck.study_grid import select_points
from isplit_export.bottleneck.study_grid_summary import format_grid_study, ordering, summarize_grid
from isplit_export.contract.rate_accuracy import GridPoint
from isplit_export.errors import BadInputError
from isplit_export.options import StudyOptions

IMAGES = 200


def _right(start: int, stop: int, repeats: int = 2) -> np.ndarray:
    """``[repeats, IMAGES]`` outcomes: right on images ``start..stop-1`` in every repeat."""
    row = np.zeros(IMAGES)
    row[start:stop] = 1.0
    return np.tile(row, (repeats, 1))


def outcomes() -> np.ndarray:
    """Four points: cut A at a small and a large code (60 %, 95 %), cut B at the same (62 %, 90 %). Points 0 and
    2 are right on different images (their difference is noise); the others are nested and far apart."""
    return np.stack([_right(0, 120), _right(0, 190), _right(76, 200), _right(0, 180)])


PREDICTORS = {
    "probe": [0.5, 0.8, 0.55, 0.85],  # orders (1, 3) wrong, the rest right
    "cui": [2.0, 2.0, 1.0, 1.0],  # one value per cut: ties within a cut
}


def test_separated_pairs_and_ordering_with_ties_at_one_cut() -> None:
    s = summarize_grid(outcomes(), PREDICTORS, chosen=None, feasible=[0, 1, 2, 3], seed=0, reps=400)
    assert s["separated_pairs"]["pairs"] == [[0, 1], [0, 3], [1, 2], [1, 3], [2, 3]]
    assert s["separated_pairs"]["of"] == 6 and s["points"] == 4 and s["repeats"] == 2
    assert s["ordering"]["probe"] == {"right": 4, "wrong": 1, "tied": 0, "share_right": 0.8}
    # CUI ties (0, 1) and (2, 3) (same cut), orders (0, 3) wrong (cut A's CUI is higher, its small code worse)
    assert s["ordering"]["cui"] == {"right": 2, "wrong": 1, "tied": 2, "share_right": 0.4}
    assert s["regret"] is None and "5 of 6 point pairs" in s["note"]


def test_ordering_without_separated_pairs_has_no_share() -> None:
    assert ordering({"probe": [1.0, 2.0]}, [0.5, 0.6], []) == {
        "probe": {"right": 0, "wrong": 0, "tied": 0, "share_right": None}
    }


def test_regret_zero_when_the_chosen_point_is_the_best_feasible() -> None:
    r = summarize_grid(outcomes(), PREDICTORS, chosen=3, feasible=[0, 2, 3], reps=200)["regret"]
    assert r["best"] == 3 and r["value"] == 0.0 and r["ci95"] == [0.0, 0.0]
    assert r["ci_includes_zero"] and not r["conclusive"] and r["feasible"] == 3


def test_regret_outside_the_noise_is_conclusive() -> None:
    r = summarize_grid(outcomes(), PREDICTORS, chosen=3, feasible=[0, 1, 2, 3], reps=400)["regret"]
    assert r["best"] == 1 and r["value"] == pytest.approx(0.05)
    assert 0.0 < r["ci95"][0] <= 0.05 <= r["ci95"][1]  # nested outcomes: the difference is never negative
    assert r["conclusive"] and not r["ci_includes_zero"]


def test_regret_inside_the_noise_includes_zero() -> None:
    s = summarize_grid(outcomes(), PREDICTORS, chosen=0, feasible=[0, 2], reps=400)
    r = s["regret"]
    assert r["best"] == 2 and r["value"] == pytest.approx(0.02)
    assert r["ci95"][0] < 0.0 < r["ci95"][1] and r["ci_includes_zero"] and not r["conclusive"]
    assert "its CI includes 0" in s["note"]


def test_regret_refuses_a_chosen_point_outside_the_feasible_set() -> None:
    with pytest.raises(ValueError, match="must be one of the feasible points"):
        summarize_grid(outcomes(), PREDICTORS, chosen=1, feasible=[0, 2], reps=50)


def test_summary_is_seeded() -> None:
    a = summarize_grid(outcomes(), PREDICTORS, chosen=0, feasible=[0, 2], seed=3, reps=100)
    b = summarize_grid(outcomes(), PREDICTORS, chosen=0, feasible=[0, 2], seed=3, reps=100)
    assert a == b


def _point(cut: int, budget: int) -> GridPoint:
    return GridPoint(cut, f"n{cut}", None, 0, budget, budget, 0.5, (0.4, 0.6))


def test_select_points_all_or_front_plus_a_seeded_sample() -> None:
    grid = [_point(c, b) for c in range(3) for b in (16, 32, 64, 128)]
    every, sel = select_points(grid, [], None, 0)
    assert every == grid and sel == {"mode": "all", "points": 12, "of": 12}
    front = [grid[0], grid[5]]
    some, sel = select_points(grid, [*front, grid[5]], 3, seed=7)  # the chosen point on the front: once
    assert len(some) == 5 and set(front) <= set(some) and some == [p for p in grid if p in some]
    assert sel["mode"] == "front+sample" and sel["kept"] == ["cut 0 @ 16B", "cut 1 @ 32B"]
    assert select_points(grid, front, 3, seed=7)[0] == some  # seeded
    assert len(select_points(grid, front, 50, seed=7)[0]) == 12  # a sample larger than the rest: all


def test_format_grid_study_marks_the_chosen_and_best_points() -> None:
    s = summarize_grid(outcomes(), PREDICTORS, chosen=0, feasible=[0, 2], reps=100)
    points = [
        {
            "cut": i // 2,
            "node": f"n{i // 2}",
            "code_bytes": 16 if i % 2 == 0 else 64,
            "total_ms": None,
            "feasible": i in (0, 2),
            "predicted": {"value": 0.5, "ci95": [0.4, 0.6]},
            "measured": {"value": 0.6, "ci95": [0.5, 0.7]},
        }
        for i in range(4)
    ]
    text = format_grid_study({"summary": s, "full_model": {"metric": "accuracy"}, "points": points})
    rows = text.splitlines()
    assert rows[1].endswith("chosen") and rows[3].endswith("best") and rows[2].endswith("over target")
    assert "probe      separated pairs: right" in text and rows[-1] == s["note"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"link": "lte"}, "--link needs the grid study: add --budgets"),
        ({"link": "lte", "target": "jetson"}, "--link, --target need the grid study: add --budgets"),
        ({"budgets": "16B,64B", "target": "jetson"}, "--target prices the grid: add --link"),
        ({"budgets": "16B,64B", "target": "jetson", "server": "cpu"}, "--target, --server price the grid"),
        ({"budgets": "16B,64B", "link": "lte", "server": "nosuch"}, "unknown target 'nosuch'"),
        ({"budgets": "16B,64B", "max_latency_ms": 50.0}, "--max-latency-ms prices the grid: add --link"),
        ({"budgets": "16B,64B", "grid_sample": 2}, "--sample prices the grid: add --link"),
        (
            {"budgets": "16B,64B", "link": "lte", "max_latency_ms": -1.0},
            "--max-latency-ms -1.0: pass a positive",
        ),
        ({"budgets": "16B,64B", "classes": ("0",)}, "--classes is not measured by the grid study"),
        ({"budgets": "16B,64B", "link": "nosuch"}, "nosuch"),
    ],
)
def test_grid_flags_are_refused_in_one_line(fields: dict[str, object], message: str) -> None:
    with pytest.raises(BadInputError, match=message.replace("(", r"\(")) as err:
        StudyOptions(**fields)  # type: ignore[arg-type]
    assert "\n" not in str(err.value)
