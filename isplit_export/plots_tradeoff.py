"""The cost plot (``tradeoff.png``): predicted accuracy (log10 CUI) against end-to-end latency."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from isplit_export.plots import (
    COLORS,
    STAR_COLOR,
    TOP_COLOR,
    as_mapping,
    candidate_log10,
    draw_empty,
    new_figure,
    save_png,
)


def tradeoff_figure(ranking: Mapping[str, Any]) -> Figure:
    """Predicted accuracy (log10 CUI) against estimated end-to-end latency, from the ranking's ``cost`` block.

    Every cut is a grey dot, the candidates (local maxima) amber stars, the Pareto front among them a
    line, the selected cuts are numbered in red, and the two Neurosurgeon baselines (all on the device,
    all on the server) are vertical dashed lines: they keep the full model's accuracy, so they have no CUI.
    """
    cost = as_mapping(ranking.get("cost"))
    candidates: list[Mapping[str, Any]] = list(ranking.get("candidates") or [])
    fig, ax = new_figure()
    link = as_mapping(cost.get("link"))
    device = as_mapping(cost.get("device"))
    ax.set_title(
        f"CUI vs end-to-end latency, {ranking.get('model', '?')}: {device.get('target', '?')} "
        f"{device.get('precision', '')}, link {link.get('name', '?')}, objective {cost.get('objective', '?')}",
        fontsize=11,
    )
    points = []
    for c in candidates:
        pc = as_mapping(c.get("cost"))
        ms, y = pc.get("total_ms"), candidate_log10(c)
        if isinstance(ms, (int, float)) and ms > 0 and not math.isnan(y):
            points.append((int(c["index"]), float(ms), y, c.get("rank") is not None))
    if not points:
        draw_empty(ax, "no cost data")
        return fig
    ax.set_xscale("log")
    ax.plot(
        [p[1] for p in points if not p[3]],
        [p[2] for p in points if not p[3]],
        linestyle="none",
        marker="o",
        markersize=4,
        color="#8d99ae",
        label="cut (not a local maximum)",
        zorder=2,
    )
    ax.plot(
        [p[1] for p in points if p[3]],
        [p[2] for p in points if p[3]],
        linestyle="none",
        marker="*",
        markersize=15,
        markerfacecolor=STAR_COLOR,
        markeredgecolor="#333333",
        markeredgewidth=0.8,
        label="candidate (local maximum)",
        zorder=4,
    )
    by_index = {p[0]: p for p in points}
    front = sorted((by_index[i] for i in cost.get("pareto") or [] if i in by_index), key=lambda p: p[1])
    if front:
        ax.plot(
            [p[1] for p in front],
            [p[2] for p in front],
            color=COLORS[0],
            linewidth=1.4,
            label=f"Pareto front ({len(front)})",
            zorder=3,
        )
    for k, i in enumerate(cost.get("selected") or [], start=1):
        if i in by_index:
            _, ms, y, _ = by_index[i]
            ax.annotate(
                f"#{k} cut {i}",
                (ms, y),
                xytext=(0, 10),
                textcoords="offset points",
                ha="center",
                fontsize=9,
                fontweight="bold",
                color=TOP_COLOR,
                zorder=6,
            )
    baselines = as_mapping(cost.get("baselines"))
    for name, label, color in (
        ("device_only", "all on device", "#2a9d8f"),
        ("server_only", "all on server", "#8a5a9e"),
    ):
        ms = as_mapping(baselines.get(name)).get("total_ms")
        if isinstance(ms, (int, float)) and ms > 0:
            ax.axvline(
                float(ms), color=color, linestyle="--", linewidth=1.2, label=f"{label}: {float(ms):.2f} ms"
            )
    ax.set_xlabel("end-to-end latency per image (ms, log scale): device + link + server")
    ax.set_ylabel("log10 CUI (predicted accuracy)")
    ax.legend(loc="best", fontsize=8, frameon=True, facecolor="white", edgecolor="#cccccc")
    return fig


def plot_tradeoff(ranking: Mapping[str, Any], path: Path) -> None:
    """Write the CUI / latency trade-off plot of a ranking with a ``cost`` block to ``path`` as PNG."""
    save_png(tradeoff_figure(ranking), Path(path))
