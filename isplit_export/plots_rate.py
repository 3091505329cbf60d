"""The rate-accuracy plots: ``rate_accuracy.png`` (the probe's held-out score against the code's bytes per image,
one curve per probed cut, with the CUI's order in the legend) and ``pareto.png`` (every (cut, code size) of the
grid against its estimated latency, the Pareto front labelled)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from isplit_export.plots import COLORS, as_mapping, draw_empty, new_figure, save_png

EXTRA_COLORS = ("#e76f51", "#264653", "#f4a261", "#9c6644", "#588157", "#b5179e")
"""Colours after :data:`isplit_export.plots.COLORS` (cycled beyond both)."""


LOG_SPAN = 10.0
"""``pareto.png`` draws latency on a log axis when the slowest point is at least this many times the fastest."""


def _bytes_label(nbytes: int) -> str:
    """``64B``, ``1KiB``, ``1.5KiB``: a tick of the bytes axis."""
    if nbytes >= 1024:
        return f"{nbytes / 1024:g}KiB"
    return f"{nbytes}B"


def cui_order(cuts: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The grid's cut rows in the CUI's order: ranked candidates by rank, then the others by log10 CUI."""

    def key(c: Mapping[str, Any]) -> tuple[int, float, int]:
        rank, log10 = c.get("cui_rank"), c.get("log10_cui")
        cui = float(log10) if isinstance(log10, (int, float)) else -math.inf
        return (0, float(rank), 0) if isinstance(rank, int) else (1, -cui, int(c.get("index", 0)))

    return sorted(cuts, key=key)


def rate_accuracy_figure(ranking: Mapping[str, Any]) -> Figure:
    """Held-out score (with its 95 % CI as a band) against code bytes per image on a log axis, one curve per
    cut of ``ranking["rate_accuracy"]``; the legend lists the cuts in the CUI's order; the full model's
    score is a dashed line."""
    block = as_mapping(ranking.get("rate_accuracy"))
    cuts = [as_mapping(c) for c in block.get("cuts") or []]
    metric = block.get("metric") or "score"
    fig, ax = new_figure()
    ladder = as_mapping(block.get("ladder")).get("spec", "?")
    ax.set_title(
        f"{ranking.get('model', '?')}: the probe's held-out {metric} per code size ({ladder}, "
        f"{block.get('encoding', '?')}); legend in CUI order",
        fontsize=11,
    )
    drawn = [
        (c, [as_mapping(p) for p in c.get("points") or [] if as_mapping(p).get("value") is not None])
        for c in cuts
    ]
    drawn = [(c, pts) for c, pts in drawn if pts]
    if not drawn:
        draw_empty(ax, "no reachable budget")
        return fig
    ax.set_xscale("log", base=2)
    palette = COLORS + EXTRA_COLORS
    color = {int(c.get("index", 0)): palette[n % len(palette)] for n, (c, _) in enumerate(drawn)}
    for c, pts in drawn:
        xs = [float(p["code_bytes"]) for p in pts]
        ys = [float(p["value"]) for p in pts]
        lo = [float(p["ci95"][0]) for p in pts]
        hi = [float(p["ci95"][1]) for p in pts]
        i = int(c.get("index", 0))
        ax.fill_between(xs, lo, hi, color=color[i], alpha=0.15, linewidth=0)
        rank = c.get("cui_rank")
        ax.plot(
            xs,
            ys,
            marker="o",
            markersize=3.5,
            linewidth=1.4,
            color=color[i],
            label=f"cut {i} {c.get('node', '')}" + (f" (CUI #{rank})" if isinstance(rank, int) else ""),
        )
    full = block.get("full_model")
    if isinstance(full, (int, float)):
        ax.axhline(
            float(full),
            color="#555555",
            linestyle="--",
            linewidth=1.0,
            label=f"full model ({100 * full:.1f}%)",
        )
    ticks = sorted({float(p["code_bytes"]) for _, pts in drawn for p in pts})
    ax.set_xticks(ticks, [_bytes_label(int(t)) for t in ticks], fontsize=8)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("code bytes per image (log scale)")
    ax.set_ylabel(f"held-out {metric} (95 % CI band)")
    handles, labels = ax.get_legend_handles_labels()
    by_label = dict(zip(labels, handles, strict=True))
    ordered = [
        lab
        for c in cui_order([c for c, _ in drawn])
        for lab in by_label
        if lab.startswith(f"cut {int(c.get('index', 0))} ")
    ]
    ordered += [lab for lab in by_label if lab not in ordered]
    ax.legend([by_label[lab] for lab in ordered], ordered, loc="lower right", fontsize=8)
    return fig


def plot_rate_accuracy(ranking: Mapping[str, Any], path: Path) -> None:
    """Write ``rate_accuracy.png`` (byte-deterministic)."""
    save_png(rate_accuracy_figure(ranking), Path(path))


def pareto_figure(choice: Mapping[str, Any], model: str = "?") -> Figure:
    """Predicted held-out score against estimated end-to-end latency for every (cut, budget) of the grid (grey),
    the Pareto front as a labelled line (``cut @ bytes``), and the chosen pair in red when there is one."""
    points = [as_mapping(p) for p in choice.get("points") or []]
    front = [as_mapping(p) for p in choice.get("front") or []]
    metric = choice.get("metric") or "score"
    link = as_mapping(choice.get("link")).get("name", "?")
    device = as_mapping(choice.get("device")).get("target", "?")
    fig, ax = new_figure()
    ax.set_title(
        f"{model}: the probe's predicted {metric} against latency, every (cut, code size); link {link}, head on {device}",
        fontsize=11,
    )
    if not points:
        draw_empty(ax, "no reachable (cut, budget)")
        return fig
    ms = [float(p["total_ms"]) for p in points]
    log_x = min(ms) > 0 and max(ms) / min(ms) >= LOG_SPAN
    if log_x:
        ax.set_xscale("log")
    ax.plot(
        [float(p["total_ms"]) for p in points],
        [float(p["value"]) for p in points],
        linestyle="none",
        marker="o",
        markersize=4,
        color="#8d99ae",
        label="(cut, code size)",
    )
    ax.plot(
        [float(p["total_ms"]) for p in front],
        [float(p["value"]) for p in front],
        marker="o",
        markersize=5,
        linewidth=1.4,
        color=COLORS[0],
        label="Pareto front",
    )
    for p in front:
        ax.annotate(
            f"cut {p['cut']} @ {_bytes_label(int(p['code_bytes']))}",
            (float(p["total_ms"]), float(p["value"])),
            textcoords="offset points",
            xytext=(4, -10),
            fontsize=7,
        )
    chosen = as_mapping(choice.get("chosen"))
    if chosen:
        ax.plot(
            [float(chosen["total_ms"])],
            [float(chosen["value"])],
            linestyle="none",
            marker="*",
            markersize=14,
            color="#c0392b",
            label=f"chosen ({choice.get('mode')})",
        )
    ax.set_xlabel("estimated end-to-end ms per image" + (" (log scale)" if log_x else ""))
    ax.set_ylabel(f"predicted held-out {metric}")
    ax.legend(loc="lower right", fontsize=8)
    return fig


def plot_pareto(choice: Mapping[str, Any], path: Path, model: str = "?") -> None:
    """Write ``pareto.png`` (byte-deterministic)."""
    save_png(pareto_figure(choice, model), Path(path))
