"""The layer-size baseline plot (``cde.png``): boundary bytes per cut, log scale, against the input size."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from isplit_export.plots import TOP_COLOR, draw_empty, new_figure, save_png, set_cut_ticks


def _human_bytes(n: float) -> str:
    """``n`` bytes as B / KiB / MiB, three significant digits."""
    for unit, size in (("MiB", 1024.0**2), ("KiB", 1024.0)):
        if n >= size:
            return f"{n / size:.3g} {unit}" if n / size < 100 else f"{n / size:.0f} {unit}"
    return f"{n:.0f} B"


def cde_figure(ranking: Mapping[str, Any]) -> Figure:
    """The layer-size baseline as a :class:`Figure`: boundary bytes (fp32, batch 1) per cut, log scale.

    With ``ranking["input_bytes"]`` the input size is drawn as a horizontal reference line and the cuts
    whose boundary is smaller than the input are drawn in green (sending them beats sending the image).
    """
    candidates: list[Mapping[str, Any]] = list(ranking.get("candidates") or [])
    fig, ax = new_figure()
    ax.set_title(
        f"CDE baseline: boundary size per cut, {ranking.get('model', '?')} (fp32, batch 1)", fontsize=11
    )
    sizes = [float(c.get("boundary_bytes") or 0) for c in candidates]
    if not candidates or not any(s > 0 for s in sizes):
        draw_empty(ax, "no cut points")
        return fig

    xs = list(range(len(candidates)))
    raw_input = ranking.get("input_bytes")
    input_bytes = float(raw_input) if isinstance(raw_input, (int, float)) and raw_input > 0 else None
    smaller = [input_bytes is not None and 0 < s < input_bytes for s in sizes]
    colors = ["#2a9d8f" if sm else "#8d99ae" for sm in smaller]
    ax.set_yscale("log", base=2)  # powers of two read as round KiB / MiB
    ax.bar(xs, [s if s > 0 else math.nan for s in sizes], color=colors, width=0.8, zorder=2)
    handles: list[Any] = []
    if input_bytes is not None:
        ax.axhline(input_bytes, color=TOP_COLOR, linestyle="--", linewidth=1.2, zorder=3)
        n_small = sum(smaller)
        handles = [
            Line2D([], [], color=TOP_COLOR, linestyle="--", label=f"input: {_human_bytes(input_bytes)}"),
            Line2D([], [], color="#2a9d8f", linewidth=8, label=f"smaller than the input ({n_small} cuts)"),
            Line2D([], [], color="#8d99ae", linewidth=8, label=f"not smaller ({len(sizes) - n_small} cuts)"),
        ]
    ranked = [i for i, c in enumerate(candidates) if isinstance(c.get("rank"), int)]
    ranked.sort(key=lambda i: (int(candidates[i]["rank"]), i))
    set_cut_ticks(ax, candidates, ranked)
    positive = [s for s in sizes if s > 0] + ([input_bytes] if input_bytes else [])
    ax.set_ylim(min(positive) / 2.0, max(positive) * 2.0)
    ax.yaxis.set_major_locator(LogLocator(base=2.0))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: _human_bytes(v)))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("cut point (network order: index and module)")
    ax.set_ylabel("boundary bytes per image (fp32)")
    if handles:
        ax.legend(
            handles=handles, loc="best", fontsize=8, frameon=True, facecolor="white", edgecolor="#cccccc"
        )
    return fig


def plot_cde(ranking: Mapping[str, Any], path: Path) -> None:
    """Write the CDE (boundary size) plot of ``ranking`` to ``path`` as PNG."""
    save_png(cde_figure(ranking), Path(path))
