"""Local maxima, ranks and the ranking.json schema."""

from __future__ import annotations

import math

import numpy as np

from isplit_export.ranking.candidates import SCHEMA, Ranking, local_maxima
from isplit_export.ranking.graph import Cut


def test_local_maxima_hand_cases() -> None:
    assert local_maxima([1, 3, 2, 5, 4]) == [False, True, False, True, False]
    assert local_maxima([5, 1, 2]) == [True, False, True]  # end points compare with one neighbour
    assert local_maxima([1, 2, 2, 1]) == [False, True, False, False]  # a plateau counts once
    assert local_maxima([math.nan, 1, 0]) == [False, True, False]


def _ranking(cui: list[float], top: int | None = None) -> Ranking:
    cuts = [Cut(i, f"n{i}", f"m{i}", (4, 2, 2), 64, (i + 1) / len(cui)) for i in range(len(cui))]
    return Ranking("toy", "none", 10, None, "top", cuts, np.array(cui), 48, top=top)


def test_ranks_order_local_maxima_by_cui() -> None:
    r = _ranking([0.1, 0.3, 0.2, 0.5, 0.4, 0.0])
    assert r.ranks == [None, 2, None, 1, None, None]
    assert [c.node for c in r.ranked()] == ["n3", "n1"]
    assert [c.node for c in r.ranked(1)] == ["n3"]
    assert r.log10_cui[5] is None  # CUI 0 has no logarithm; never a candidate


def test_ranking_json_schema() -> None:
    data = _ranking([0.1, 0.3, 0.2], top=1).to_json()
    assert data["schema"] == SCHEMA
    for key in ("model", "weights", "images", "classes", "score", "candidates"):
        assert key in data
    row = data["candidates"][1]
    assert set(row) >= {
        "index",
        "node",
        "module",
        "shape",
        "boundary_bytes",
        "head_flops_share",
        "cui",
        "log10_cui",
        "local_max",
        "rank",
    }
    assert row["rank"] == 1 and row["local_max"] is True and row["log10_cui"] == round(math.log10(0.3), 6)
    assert [c["index"] for c in data["candidates"]] == [0, 1, 2]


def test_table_lists_ranked_candidates() -> None:
    table = _ranking([0.1, 0.3, 0.2, 0.5]).table()
    lines = table.splitlines()
    assert lines[0].split()[0] == "rank" and len(lines) == 3
    assert lines[1].split()[:3] == ["1", "3", "n3"]
