"""The study's figure (``study.png``): the CUI curve and the measured values on one x axis, and CUI
against the measured value."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def study_figure(data: dict[str, Any]) -> Figure:
    """CUI curve and measured value on one x axis (network order), and CUI against the measured value."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12.0, 9.0), dpi=100, facecolor="white", layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, height_ratios=(3, 2))
    curve = data["curve"]
    log_cui = [math.log10(v) if v and v > 0 else math.nan for v in curve["cui"]]
    top.plot(
        curve["index"], log_cui, color="#1f4e9c", marker="o", markersize=3, linewidth=1.2, label="log10 CUI"
    )
    top.set_xlabel("cut index (network order)")
    top.set_ylabel("log10 CUI", color="#1f4e9c")
    top.grid(True, color="#dddddd", linewidth=0.6)
    cuts = data["cuts"]
    metric = data["summary"].get("metric") or "measured"
    right = top.twinx()
    if cuts:
        xs = [c["index"] for c in cuts]
        ys = [c["measured"]["value"] for c in cuts]
        lo = [c["measured"]["value"] - c["measured"]["ci95"][0] for c in cuts]
        hi = [c["measured"]["ci95"][1] - c["measured"]["value"] for c in cuts]
        right.errorbar(
            xs,
            ys,
            yerr=[lo, hi],
            color="#d1495b",
            marker="s",
            markersize=5,
            linestyle="-",
            linewidth=1.0,
            capsize=3,
            label=f"trained: held-out {metric}, mean over repeats (95 % CI)",
        )
        right.axhline(
            data["full_model"]["value"], color="#6c757d", linestyle="--", linewidth=0.8, label="full model"
        )
        probed = [(c["index"], c["probe"]) for c in cuts if isinstance(c.get("probe"), dict)]
        if probed:
            right.plot(
                [i for i, _ in probed],
                [p["value"] for _, p in probed],
                color="#2a9d8f",
                marker="^",
                markersize=5,
                linestyle="--",
                linewidth=1.0,
                label=f"probe (untrained linear code), {metric}",
            )
    right.set_ylabel(f"held-out {metric}", color="#d1495b")
    spec = data["options"].get("bottleneck", {}).get("size", "?")
    top.set_title(f"{data['model'].get('name', '?')}: CUI and measured {metric} with a {spec} bottleneck")
    handles = top.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    top.legend(handles=handles, loc="lower left", fontsize=8)
    if cuts:
        xs_s = [math.log10(c["cui"]) if c["cui"] and c["cui"] > 0 else math.nan for c in cuts]
        ys_s = [c["measured"]["value"] for c in cuts]
        bottom.scatter(xs_s, ys_s, color="#d1495b", zorder=3)
        for c, xv, yv in zip(cuts, xs_s, ys_s, strict=True):
            bottom.annotate(str(c["index"]), (xv, yv), textcoords="offset points", xytext=(4, 4), fontsize=8)
    rho = data["summary"]["predictors"]["cui"]["spearman"]
    bottom.set_title(f"CUI against held-out {metric} (Spearman {'n/a' if rho is None else f'{rho:.3f}'})")
    bottom.set_xlabel("log10 CUI")
    bottom.set_ylabel(f"held-out {metric}")
    bottom.grid(True, color="#dddddd", linewidth=0.6)
    return fig


def plot_study(data: dict[str, Any], path: Path) -> None:
    """Write ``study.png`` (byte-deterministic)."""
    from isplit_export.plots import save_png

    save_png(study_figure(data), path)
