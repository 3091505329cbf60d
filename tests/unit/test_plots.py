"""The CUI and CDE plots: valid PNGs of a fixed size, one star per local maximum (byte determinism: tests/e2e)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.lines import Line2D
from matplotlib.text import Annotation
from PIL import Image

from isplit_export.plots import DPI, FIGSIZE, MAX_TICKS
from isplit_export.plots_cde import cde_figure, plot_cde
from isplit_export.plots_cui import STAR_GID, cui_figure, plot_cui
from isplit_export.ranking.candidates import local_maxima

SIZE = (round(FIGSIZE[0] * DPI), round(FIGSIZE[1] * DPI))
INPUT_BYTES = 4 * 3 * 32 * 32


def make_ranking(cui: list[float], *, top: int | None = 2, curves: bool = False) -> dict[str, Any]:
    """An ``isplit.ranking/1`` dict built the way ranking.py builds it, from per-cut CUI values."""
    log10 = [math.log10(c) if c > 0 else None for c in cui]
    flags = local_maxima([x if x is not None else math.nan for x in log10])
    order = sorted((i for i, f in enumerate(flags) if f), key=lambda i: (-cui[i], i))
    ranks = {i: r for r, i in enumerate(order, start=1)}
    candidates = []
    for i, c in enumerate(cui):
        side = max(2, 32 >> (i // 2))
        shape = [8 * (1 + i // 2), side, side]
        candidates.append(
            {
                "index": i,
                "node": f"features_{i}",
                "module": f"features.{i}",
                "shape": shape,
                "boundary_bytes": 4 * shape[0] * shape[1] * shape[2],
                "head_flops_share": round((i + 1) / len(cui), 6),
                "cui": c,
                "log10_cui": None if log10[i] is None else round(log10[i] or 0.0, 6),
                "local_max": flags[i],
                "rank": ranks.get(i),
            }
        )
    out: dict[str, Any] = {
        "schema": "isplit.ranking/1",
        "model": "tiny",
        "weights": "none",
        "images": 19,
        "classes": None,
        "score": "top",
        "top": top,
        "input_bytes": INPUT_BYTES,
        "candidates": candidates,
    }
    if curves:
        out["classes"] = ["dog"]
        out["curves"] = {"all images": [c * 0.5 + 1e-4 for c in cui], "selected classes": list(cui)}
    return out


# local maxima at cuts 2, 5, 8 and 11 (an end point vs its one neighbour); cut 6 has CUI 0 (log10 None)
CUI = [1e-4, 5e-4, 2e-3, 8e-4, 1e-3, 3e-3, 0.0, 2e-4, 4e-3, 1e-3, 5e-4, 6e-4]


@pytest.fixture
def ranking() -> dict[str, Any]:
    return make_ranking(CUI)


def _xs(line: Line2D) -> list[float]:
    return [float(v) for v in np.asarray(line.get_xdata(), dtype=float)]


def _ys(line: Line2D) -> list[float]:
    return [float(v) for v in np.asarray(line.get_ydata(), dtype=float)]


def _stars(fig: Any) -> list[Line2D]:
    return [ln for ax in fig.axes for ln in ax.get_lines() if ln.get_gid() == STAR_GID]


def test_pngs_are_valid_and_sized(tmp_path: Path, ranking: dict[str, Any]) -> None:
    plot_cui(ranking, tmp_path / "cui.png")
    plot_cde(ranking, tmp_path / "cde.png")
    for name in ("cui.png", "cde.png"):
        with Image.open(tmp_path / name) as im:
            im.verify()
        with Image.open(tmp_path / name) as im:
            assert im.format == "PNG" and im.size == SIZE
            darkest = min(im.convert("L").getdata())
            assert darkest < 100  # something dark was drawn on the white canvas


def test_different_data_gives_different_png(tmp_path: Path, ranking: dict[str, Any]) -> None:
    plot_cui(ranking, tmp_path / "a.png")
    plot_cui(make_ranking([c * 2 for c in CUI]), tmp_path / "b.png")
    assert (tmp_path / "a.png").read_bytes() != (tmp_path / "b.png").read_bytes()


def test_one_star_per_local_maximum_with_rank_annotations(ranking: dict[str, Any]) -> None:
    fig = cui_figure(ranking)
    maxima = [c for c in ranking["candidates"] if c["local_max"]]
    assert len(maxima) == 4
    (stars,) = _stars(fig)
    assert stars.get_marker() == "*" and stars.get_linestyle() == "None"
    assert _xs(stars) == [c["index"] for c in maxima]
    assert _ys(stars) == pytest.approx([c["log10_cui"] for c in maxima])
    ax = fig.axes[0]
    labels = sorted(t.get_text() for t in ax.texts if isinstance(t, Annotation))
    assert labels == ["1", "2", "3", "4"]
    assert ax.get_ylabel() == "log10 CUI"
    # the CUI line has a gap (NaN) at the cut whose CUI is 0
    (line,) = [ln for ln in ax.get_lines() if ln.get_gid() != STAR_GID]
    assert math.isnan(_ys(line)[6])
    tick_text = [t.get_text() for t in ax.get_xticklabels()]
    assert tick_text[0] == "0 features.0" and len(tick_text) == len(CUI)


def test_curves_get_one_line_each_and_a_legend() -> None:
    r = make_ranking(CUI, curves=True)
    fig = cui_figure(r)
    ax = fig.axes[0]
    lines = [ln for ln in ax.get_lines() if ln.get_gid() != STAR_GID]
    assert len(lines) == 2  # the ranked curve is one of the curves, not drawn twice
    legend = ax.get_legend()
    assert legend is not None
    texts = [t.get_text() for t in legend.get_texts()]
    assert texts[:2] == ["all images", "selected classes (ranked)"]
    assert len(_xs(_stars(fig)[0])) == sum(c["local_max"] for c in r["candidates"])


def test_many_cuts_thin_the_ticks_and_keep_the_best_ones() -> None:
    cui = [10 ** (-3 + math.sin(i / 2.0)) for i in range(150)]
    r = make_ranking(cui, top=3)
    fig = cui_figure(r)
    ax = fig.axes[0]
    ticks = [int(t) for t in ax.get_xticks()]
    assert len(ticks) <= MAX_TICKS
    best = [c["index"] for c in r["candidates"] if c["rank"] in (1, 2, 3)]
    assert set(best) <= set(ticks)
    assert len(_xs(_stars(fig)[0])) == sum(c["local_max"] for c in r["candidates"])


def test_custom_title_and_empty_ranking(tmp_path: Path) -> None:
    fig = cui_figure(make_ranking(CUI), title="my title")
    assert fig.axes[0].get_title() == "my title"
    empty = {"schema": "isplit.ranking/1", "model": "m", "candidates": []}
    plot_cui(empty, tmp_path / "cui.png")
    plot_cde(empty, tmp_path / "cde.png")
    for name in ("cui.png", "cde.png"):
        with Image.open(tmp_path / name) as im:
            assert im.size == SIZE


def test_cde_marks_cuts_smaller_than_the_input(ranking: dict[str, Any]) -> None:
    fig = cde_figure(ranking)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    bars = ax.patches
    assert len(bars) == len(CUI)
    sizes = [c["boundary_bytes"] for c in ranking["candidates"]]
    small = [s < INPUT_BYTES for s in sizes]
    assert 0 < sum(small) < len(sizes)
    colors = [bar.get_facecolor() for bar in bars]
    assert {colors[i] for i, s in enumerate(small) if s}.isdisjoint(
        {colors[i] for i, s in enumerate(small) if not s}
    )
    ref = [ln for ln in ax.get_lines() if _ys(ln) == [INPUT_BYTES, INPUT_BYTES]]
    assert len(ref) == 1
    legend = ax.get_legend()
    assert legend is not None
    assert f"smaller than the input ({sum(small)} cuts)" in [t.get_text() for t in legend.get_texts()]


def test_cde_without_input_bytes_has_no_reference_line(ranking: dict[str, Any]) -> None:
    del ranking["input_bytes"]
    ax = cde_figure(ranking).axes[0]
    assert ax.get_lines() == [] and ax.get_legend() is None
    assert len({bar.get_facecolor() for bar in ax.patches}) == 1
