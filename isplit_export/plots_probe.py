"""The probe plot (``probe.png``): the probe's held-out score next to the CUI curve."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from isplit_export.plots import COLORS, as_mapping, candidate_log10, draw_empty, new_figure, save_png


def probe_figure(ranking: Mapping[str, Any]) -> Figure:
    """The probe next to the CUI: log10 CUI per cut (left axis) and the probe's held-out score with its
    95 % CI at each probed cut (right axis), in network order."""
    candidates: list[Mapping[str, Any]] = list(ranking.get("candidates") or [])
    fig, ax = new_figure()
    block = as_mapping(ranking.get("probe"))
    budget = as_mapping(block.get("budget")).get("spec", "?")
    metric = block.get("metric") or "score"
    ax.set_title(
        f"{ranking.get('model', '?')}: CUI and the probe at {budget} (held-out {metric})", fontsize=11
    )
    if not candidates:
        draw_empty(ax, "no cut points")
        return fig
    xs = list(range(len(candidates)))
    ax.plot(
        xs,
        [candidate_log10(c) for c in candidates],
        marker="o",
        markersize=3.5,
        linewidth=1.4,
        color=COLORS[0],
        label="log10 CUI",
    )
    ax.set_xlabel("cut index (network order)")
    ax.set_ylabel("log10 CUI")
    right = ax.twinx()
    probed = [(i, c["probe"]) for i, c in enumerate(candidates) if isinstance(c.get("probe"), Mapping)]
    if probed:
        ys = [float(p["value"]) for _, p in probed]
        lo = [y - float(p["ci95"][0]) for y, (_, p) in zip(ys, probed, strict=True)]
        hi = [float(p["ci95"][1]) - y for y, (_, p) in zip(ys, probed, strict=True)]
        right.errorbar(
            [i for i, _ in probed],
            ys,
            yerr=[lo, hi],
            color="#d1495b",
            marker="s",
            markersize=5,
            linestyle="-",
            linewidth=1.0,
            capsize=3,
            label=f"probe: held-out {metric} (95 % CI)",
        )
    right.set_ylabel(f"probe: held-out {metric}", color="#d1495b")
    handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="lower left", fontsize=8)
    return fig


def plot_probe(ranking: Mapping[str, Any], path: Path) -> None:
    """Write ``probe.png`` (byte-deterministic)."""
    save_png(probe_figure(ranking), Path(path))
