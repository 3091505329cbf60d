"""The grid study's figure (``study_rate.png``): per cut, the probe's predicted rate-accuracy curve (dashed, its
95 % CI as a band) next to the trained bottlenecks' measured one (solid, the two-level bootstrap CI as error
bars), bytes per image on a log axis; beside it, measured against predicted per point, the chosen point marked."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from isplit_export.plots import COLORS, save_png
from isplit_export.plots_rate import EXTRA_COLORS

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def study_rate_figure(data: Mapping[str, Any]) -> Figure:
    """Predicted and measured score against code bytes per cut, and measured against predicted per point."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(14.0, 6.5), dpi=100, facecolor="white", layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2, width_ratios=(3, 2))
    points = list(data["points"])
    metric = data["full_model"].get("metric") or "score"
    palette = COLORS + EXTRA_COLORS
    grid_cuts = {int(c["index"]): c for c in data["grid"]["cuts"]}
    for n, cut in enumerate(sorted({int(p["cut"]) for p in points})):
        color = palette[n % len(palette)]
        curve = sorted(grid_cuts[cut]["points"], key=lambda q: q["code_bytes"])
        xs = [q["code_bytes"] for q in curve]
        left.plot(xs, [q["value"] for q in curve], color=color, linestyle="--", linewidth=1.0)
        left.fill_between(
            xs, [q["ci95"][0] for q in curve], [q["ci95"][1] for q in curve], color=color, alpha=0.06
        )
        mine = sorted((p for p in points if p["cut"] == cut), key=lambda p: p["code_bytes"])
        ys = [p["measured"]["value"] for p in mine]
        left.errorbar(
            [p["code_bytes"] for p in mine],
            ys,
            yerr=[
                [y - p["measured"]["ci95"][0] for y, p in zip(ys, mine, strict=True)],
                [p["measured"]["ci95"][1] - y for y, p in zip(ys, mine, strict=True)],
            ],
            color=color,
            marker="o",
            markersize=4,
            linewidth=1.4,
            capsize=2,
            label=f"cut {cut} ({grid_cuts[cut]['node']})",
        )
    left.axhline(
        data["full_model"]["value"], color="#6c757d", linestyle=":", linewidth=0.8, label="full model"
    )
    left.set_xscale("log", base=2)
    ticks = sorted({int(p["code_bytes"]) for p in points})
    left.set_xticks(ticks, [f"{b}B" if b < 1024 else f"{b / 1024:g}KiB" for b in ticks])
    left.minorticks_off()
    left.set_xlabel("code bytes per image (log scale)")
    left.set_ylabel(f"held-out {metric}")
    left.set_title(
        f"{data['model'].get('name', '?')}: measured (solid, 95 % CI) and predicted (dashed, probe) {metric}",
        fontsize=10,
    )
    left.grid(True, color="#dddddd", linewidth=0.6)
    left.legend(loc="lower right", fontsize=8)
    summary = data["summary"]
    chosen = (summary.get("regret") or {}).get("chosen")
    best = (summary.get("regret") or {}).get("best")
    pred = [p["predicted"]["value"] for p in points]
    meas = [p["measured"]["value"] for p in points]
    right.scatter(pred, meas, color="#1f4e9c", s=18, zorder=3)
    for i, mark, label in ((chosen, "*", "chosen (probe)"), (best, "D", "best measured within the target")):
        if i is not None:
            right.scatter(
                [pred[i]], [meas[i]], marker=mark, s=160, facecolors="none", edgecolors="#d1495b", label=label
            )
    lo = min([*pred, *meas], default=0.0)
    right.plot([lo, 1.0], [lo, 1.0], color="#6c757d", linewidth=0.8, linestyle=":")
    right.set_xlabel(f"predicted (probe) {metric}")
    right.set_ylabel(f"measured (trained) {metric}")
    right.set_title(textwrap.fill(summary["note"], 75), fontsize=8)
    right.grid(True, color="#dddddd", linewidth=0.6)
    if chosen is not None:
        right.legend(loc="lower right", fontsize=8)
    return fig


def plot_study_rate(data: Mapping[str, Any], path: Path) -> None:
    """Write ``study_rate.png`` (byte-deterministic)."""
    save_png(study_rate_figure(data), path)
