"""What every plot shares: the figure (fixed size and dpi, Agg canvas), the cut-point x axis, log10 of CUI
values, the colours, and :func:`save_png`. One module per plot family builds on it: :mod:`isplit_export.plots_cui`
(``cui.png``), :mod:`isplit_export.plots_cde` (``cde.png``), :mod:`isplit_export.plots_tradeoff` (``tradeoff.png``)
and :mod:`isplit_export.plots_probe` (``probe.png``).

Figures are built with :class:`matplotlib.figure.Figure` and rendered by the Agg canvas directly, never
through ``pyplot``: no global backend switch, no figure registry, safe inside another program that
uses matplotlib. The PNGs are byte-deterministic: fixed size and dpi, explicit colours, and no
``Software`` / date metadata, so the same ranking always gives the same bytes (the bundle hashes them).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

FIGSIZE: tuple[float, float] = (12.0, 6.0)
"""Figure size in inches; with :data:`DPI` the PNGs are 1200 x 600 pixels."""
DPI = 100
MAX_TICKS = 40
"""At most this many x tick labels; more cut points are thinned (local maxima are kept first)."""
MAX_LABEL = 28
"""Tick labels longer than this are shortened in the middle."""

COLORS = ("#1f4e9c", "#2a9d8f", "#8a5a9e", "#6c757d", "#d1495b", "#3d405b")
STAR_COLOR = "#ffbf00"
TOP_COLOR = "#c0392b"
_PNG_METADATA: dict[str, str | None] = {"Software": None}


def _label(text: str) -> str:
    """``text`` shortened to :data:`MAX_LABEL` characters with an ellipsis in the middle."""
    if len(text) <= MAX_LABEL:
        return text
    keep = MAX_LABEL - 1
    return text[: keep // 2] + "…" + text[len(text) - (keep - keep // 2) :]


def log10_values(values: Sequence[Any]) -> list[float]:
    """log10 of each value; zero, negative, missing or non-finite values become NaN (a gap in the line)."""
    out = []
    for v in values:
        f = float(v) if isinstance(v, (int, float)) else math.nan
        out.append(math.log10(f) if math.isfinite(f) and f > 0 else math.nan)
    return out


def candidate_log10(cand: Mapping[str, Any]) -> float:
    v = cand.get("log10_cui")
    if isinstance(v, (int, float)) and math.isfinite(v):
        return float(v)
    return log10_values([cand.get("cui")])[0]


def _tick_positions(n: int, priority: Sequence[int], max_ticks: int = MAX_TICKS) -> list[int]:
    """Up to ``max_ticks`` tick positions out of ``range(n)``: all when they fit, else ``priority``
    (best first) plus an even grid, keeping labels at least half a grid step apart."""
    if n <= max_ticks:
        return list(range(n))
    step = math.ceil(n / max_ticks)
    chosen: list[int] = []
    for i in priority:
        if len(chosen) >= max_ticks // 2:
            break
        if 0 <= i < n and all(abs(i - j) >= step / 2 for j in chosen):
            chosen.append(i)
    for i in range(0, n, step):
        if len(chosen) >= max_ticks:
            break
        if all(abs(i - j) >= step / 2 for j in chosen):
            chosen.append(i)
    return sorted(chosen)


def set_cut_ticks(ax: Axes, candidates: Sequence[Mapping[str, Any]], priority: Sequence[int]) -> None:
    """X ticks at cut indices, labelled ``index module`` (or node), rotated."""
    pos = _tick_positions(len(candidates), priority)
    labels = []
    for i in pos:
        c = candidates[i]
        name = str(c.get("module") or c.get("node") or "")
        labels.append(_label(f"{c.get('index', i)} {name}".strip()))
    ax.set_xticks(pos)
    ax.set_xticklabels(labels, rotation=60, ha="right", rotation_mode="anchor", fontsize=7)
    ax.set_xlim(-0.5, max(len(candidates), 1) - 0.5)


def new_figure() -> tuple[Figure, Axes]:
    fig = Figure(figsize=FIGSIZE, dpi=DPI, facecolor="white", layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_facecolor("white")
    ax.grid(True, which="major", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    return fig, ax


def draw_empty(ax: Axes, what: str) -> None:
    ax.text(0.5, 0.5, what, ha="center", va="center", transform=ax.transAxes, fontsize=12, color="#555555")
    ax.set_xticks([])
    ax.set_yticks([])


def as_mapping(v: Any) -> Mapping[str, Any]:
    return v if isinstance(v, Mapping) else {}


def save_png(fig: Figure, path: Path) -> None:
    """Write ``fig`` as a byte-deterministic PNG (fixed dpi, no Software/date metadata)."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.print_png(str(path), metadata=_PNG_METADATA)
