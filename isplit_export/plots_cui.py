"""The ranking's CUI plot (``cui.png``): log10 CUI per cut in network order, stars on the local maxima,
the bootstrap CI as error bars."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from isplit_export.plots import (
    COLORS,
    STAR_COLOR,
    TOP_COLOR,
    candidate_log10,
    draw_empty,
    log10_values,
    new_figure,
    save_png,
    set_cut_ticks,
)

STAR_GID = "local-maxima"
"""``gid`` of the Line2D holding the star markers (one star per local maximum)."""
CI_GID = "cui-ci"
"""``gid`` of the error bars of the ranked curve's bootstrap CI (``candidates[i]["cui_ci"]``)."""


def _default_title(ranking: Mapping[str, Any]) -> str:
    classes = ranking.get("classes")
    subset = "classes: " + ", ".join(map(str, classes)) if classes else "all classes"
    weights = str(ranking.get("weights", "?"))
    weights = weights.replace("\\", "/").rsplit("/", 1)[-1]  # a state-dict path: its file name
    return (
        f"I-Split CUI: {ranking.get('model', '?')} (weights {weights}), "
        f"{ranking.get('images', '?')} images, score={ranking.get('score', '?')}, {subset}"
    )


def _same_curve(a: Sequence[float], b: Sequence[float]) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if math.isnan(x) and math.isnan(y):
            continue
        if math.isnan(x) or math.isnan(y) or abs(x - y) > 1e-6 * max(1.0, abs(x)):
            return False
    return True


def cui_figure(ranking: Mapping[str, Any], *, title: str | None = None) -> Figure:
    """The CUI plot as a :class:`Figure`: log10 CUI per cut in network order, stars on the local maxima.

    The ranked curve is the candidates' CUI; an optional ``ranking["curves"]`` (name -> CUI per cut,
    e.g. all images vs the selected classes) adds one line per subset with a legend. The stars (one
    marker per local maximum, a single Line2D with ``gid`` :data:`STAR_GID`) carry their rank; the
    top ``ranking["top"]`` ranks are annotated in bold red. Cuts with a bootstrap ``cui_ci`` get error
    bars (log10 of the interval; a lower bound of 0 reaches down to the axis).
    """
    candidates: list[Mapping[str, Any]] = list(ranking.get("candidates") or [])
    fig, ax = new_figure()
    ax.set_title(title if title is not None else _default_title(ranking), fontsize=11)
    if not candidates:
        draw_empty(ax, "no cut points")
        return fig

    n = len(candidates)
    xs = list(range(n))
    ranked_y = [candidate_log10(c) for c in candidates]
    curves_raw = ranking.get("curves")
    curves: list[tuple[str, list[float]]] = []
    if isinstance(curves_raw, Mapping):
        for name, values in curves_raw.items():
            if isinstance(values, Sequence) and len(values) == n:
                curves.append((str(name), log10_values(values)))

    ranked_drawn = False
    for k, (name, ys) in enumerate(curves):
        is_ranked = not ranked_drawn and _same_curve(ys, ranked_y)
        ranked_drawn = ranked_drawn or is_ranked
        ax.plot(
            xs,
            ys,
            marker="o",
            markersize=3.5,
            linewidth=1.6 if is_ranked else 1.1,
            color=COLORS[k % len(COLORS)],
            label=f"{name} (ranked)" if is_ranked else name,
            zorder=3 if is_ranked else 2,
            alpha=1.0 if is_ranked else 0.8,
        )
    if not ranked_drawn:
        ax.plot(
            xs,
            ranked_y,
            marker="o",
            markersize=3.5,
            linewidth=1.6,
            color=COLORS[0],
            label="CUI (ranked)" if curves else "CUI",
            zorder=3,
        )

    ci = _ci_log10(candidates)
    maxima = [i for i, c in enumerate(candidates) if c.get("local_max") and not math.isnan(ranked_y[i])]
    top = ranking.get("top")
    ax.plot(
        [xs[i] for i in maxima],
        [ranked_y[i] for i in maxima],
        linestyle="none",
        marker="*",
        markersize=18,
        markerfacecolor=STAR_COLOR,
        markeredgecolor="#333333",
        markeredgewidth=0.8,
        zorder=5,
        gid=STAR_GID,
        label=f"local maxima ({len(maxima)})",
    )
    for i in maxima:
        r = candidates[i].get("rank")
        if r is None:
            continue
        best = isinstance(top, int) and top > 0 and int(r) <= top
        ax.annotate(
            str(r),
            (xs[i], _label_y(ranked_y[i], ci[i])),
            xytext=(0, 11),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=9 if best else 8,
            fontweight="bold" if best else "normal",
            color=TOP_COLOR if best else "#333333",
            zorder=6,
        )

    def rank_key(i: int) -> tuple[int, int]:
        r = candidates[i].get("rank")
        return (int(r) if isinstance(r, int) else n + 1, i)

    set_cut_ticks(ax, candidates, sorted(maxima, key=rank_key))
    finite = [y for y in ranked_y if not math.isnan(y)]
    finite += [y for _, ys in curves for y in ys if not math.isnan(y)]
    finite += [y for pair in ci if pair is not None for y in pair if not math.isnan(y)]
    if finite:
        lo, hi = min(finite), max(finite)
        pad = max(0.08 * (hi - lo), 0.05)
        ax.set_ylim(lo - pad, hi + 2.5 * pad)  # headroom for the stars' rank labels
        if any(pair is not None for pair in ci):
            _draw_ci(ax, xs, ranked_y, ci, bottom=lo - pad, label=_ci_label(ranking))
    ax.set_xlabel("cut point (network order: index and module)")
    ax.set_ylabel("log10 CUI")
    ax.legend(loc="best", fontsize=8, frameon=True, facecolor="white", edgecolor="#cccccc")
    return fig


def _ci_log10(candidates: Sequence[Mapping[str, Any]]) -> list[tuple[float, float] | None]:
    """Each cut's ``cui_ci`` as ``(log10 lo, log10 hi)``; a bound of 0 is NaN (drawn to the axis bottom)."""
    out: list[tuple[float, float] | None] = []
    for c in candidates:
        pair = c.get("cui_ci")
        if isinstance(pair, Sequence) and len(pair) == 2 and all(isinstance(v, (int, float)) for v in pair):
            lo, hi = log10_values(list(pair))
            out.append(None if math.isnan(hi) else (lo, hi))
        else:
            out.append(None)
    return out


def _label_y(y: float, pair: tuple[float, float] | None) -> float:
    """Where a star's rank label goes: above the star, and above its error bar when there is one."""
    return max(y, pair[1]) if pair is not None and not math.isnan(pair[1]) else y


def _ci_label(ranking: Mapping[str, Any]) -> str:
    boot = ranking.get("bootstrap")
    reps = boot.get("replicates") if isinstance(boot, Mapping) else None
    return f"95 % bootstrap CI ({reps} replicates)" if reps else "95 % bootstrap CI"


def _draw_ci(
    ax: Axes,
    xs: Sequence[int],
    ys: Sequence[float],
    ci: Sequence[tuple[float, float] | None],
    *,
    bottom: float,
    label: str,
) -> None:
    """Error bars from log10 CI low to high around the ranked curve (one ``errorbar``; its parts carry gid
    :data:`CI_GID`)."""
    px, py, down, up = [], [], [], []
    for x, y, pair in zip(xs, ys, ci, strict=True):
        if pair is None or math.isnan(y):
            continue
        lo = pair[0] if not math.isnan(pair[0]) else bottom
        px.append(x)
        py.append(y)
        down.append(max(y - lo, 0.0))
        up.append(max(pair[1] - y, 0.0))
    if px:
        bars = ax.errorbar(
            px,
            py,
            yerr=[down, up],
            fmt="none",
            ecolor="#555555",
            elinewidth=1.0,
            capsize=3,
            zorder=4,
            label=label,
        )
        for artist in bars.get_children():  # the vertical bars (a LineCollection) and the caps
            artist.set_gid(CI_GID)


def plot_cui(ranking: Mapping[str, Any], path: Path, *, title: str | None = None) -> None:
    """Write the CUI plot of ``ranking`` (an ``isplit.ranking/1`` dict) to ``path`` as PNG."""
    save_png(cui_figure(ranking, title=title), Path(path))
