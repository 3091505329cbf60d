"""The ranking's two plots: the I-Split CUI curve (``cui.png``) and the layer-size baseline (``cde.png``).

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
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

FIGSIZE: tuple[float, float] = (12.0, 6.0)
"""Figure size in inches; with :data:`DPI` the PNGs are 1200 x 600 pixels."""
DPI = 100
MAX_TICKS = 40
"""At most this many x tick labels; more cut points are thinned (local maxima are kept first)."""
MAX_LABEL = 28
"""Tick labels longer than this are shortened in the middle."""
STAR_GID = "local-maxima"
"""``gid`` of the Line2D holding the star markers (one star per local maximum)."""
CI_GID = "cui-ci"
"""``gid`` of the error bars of the ranked curve's bootstrap CI (``candidates[i]["cui_ci"]``)."""

_COLORS = ("#1f4e9c", "#2a9d8f", "#8a5a9e", "#6c757d", "#d1495b", "#3d405b")
_STAR = "#ffbf00"
_TOP = "#c0392b"
_PNG_METADATA: dict[str, str | None] = {"Software": None}


def _label(text: str) -> str:
    """``text`` shortened to :data:`MAX_LABEL` characters with an ellipsis in the middle."""
    if len(text) <= MAX_LABEL:
        return text
    keep = MAX_LABEL - 1
    return text[: keep // 2] + "…" + text[len(text) - (keep - keep // 2) :]


def _log10(values: Sequence[Any]) -> list[float]:
    """log10 of each value; zero, negative, missing or non-finite values become NaN (a gap in the line)."""
    out = []
    for v in values:
        f = float(v) if isinstance(v, (int, float)) else math.nan
        out.append(math.log10(f) if math.isfinite(f) and f > 0 else math.nan)
    return out


def _candidate_log10(cand: Mapping[str, Any]) -> float:
    v = cand.get("log10_cui")
    if isinstance(v, (int, float)) and math.isfinite(v):
        return float(v)
    return _log10([cand.get("cui")])[0]


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


def _set_cut_ticks(ax: Axes, candidates: Sequence[Mapping[str, Any]], priority: Sequence[int]) -> None:
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


def _new_figure() -> tuple[Figure, Axes]:
    fig = Figure(figsize=FIGSIZE, dpi=DPI, facecolor="white", layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_facecolor("white")
    ax.grid(True, which="major", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    return fig, ax


def _empty(ax: Axes, what: str) -> None:
    ax.text(0.5, 0.5, what, ha="center", va="center", transform=ax.transAxes, fontsize=12, color="#555555")
    ax.set_xticks([])
    ax.set_yticks([])


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
    fig, ax = _new_figure()
    ax.set_title(title if title is not None else _default_title(ranking), fontsize=11)
    if not candidates:
        _empty(ax, "no cut points")
        return fig

    n = len(candidates)
    xs = list(range(n))
    ranked_y = [_candidate_log10(c) for c in candidates]
    curves_raw = ranking.get("curves")
    curves: list[tuple[str, list[float]]] = []
    if isinstance(curves_raw, Mapping):
        for name, values in curves_raw.items():
            if isinstance(values, Sequence) and len(values) == n:
                curves.append((str(name), _log10(values)))

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
            color=_COLORS[k % len(_COLORS)],
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
            color=_COLORS[0],
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
        markerfacecolor=_STAR,
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
            color=_TOP if best else "#333333",
            zorder=6,
        )

    def rank_key(i: int) -> tuple[int, int]:
        r = candidates[i].get("rank")
        return (int(r) if isinstance(r, int) else n + 1, i)

    _set_cut_ticks(ax, candidates, sorted(maxima, key=rank_key))
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
            lo, hi = _log10(list(pair))
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
    fig, ax = _new_figure()
    ax.set_title(
        f"CDE baseline: boundary size per cut, {ranking.get('model', '?')} (fp32, batch 1)", fontsize=11
    )
    sizes = [float(c.get("boundary_bytes") or 0) for c in candidates]
    if not candidates or not any(s > 0 for s in sizes):
        _empty(ax, "no cut points")
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
        ax.axhline(input_bytes, color=_TOP, linestyle="--", linewidth=1.2, zorder=3)
        n_small = sum(smaller)
        handles = [
            Line2D([], [], color=_TOP, linestyle="--", label=f"input: {_human_bytes(input_bytes)}"),
            Line2D([], [], color="#2a9d8f", linewidth=8, label=f"smaller than the input ({n_small} cuts)"),
            Line2D([], [], color="#8d99ae", linewidth=8, label=f"not smaller ({len(sizes) - n_small} cuts)"),
        ]
    ranked = [i for i, c in enumerate(candidates) if isinstance(c.get("rank"), int)]
    ranked.sort(key=lambda i: (int(candidates[i]["rank"]), i))
    _set_cut_ticks(ax, candidates, ranked)
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


def save_png(fig: Figure, path: Path) -> None:
    """Write ``fig`` as a byte-deterministic PNG (fixed dpi, no Software/date metadata)."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.print_png(str(path), metadata=_PNG_METADATA)


def plot_cui(ranking: Mapping[str, Any], path: Path, *, title: str | None = None) -> None:
    """Write the CUI plot of ``ranking`` (an ``isplit.ranking/1`` dict) to ``path`` as PNG."""
    save_png(cui_figure(ranking, title=title), Path(path))


def plot_cde(ranking: Mapping[str, Any], path: Path) -> None:
    """Write the CDE (boundary size) plot of ``ranking`` to ``path`` as PNG."""
    save_png(cde_figure(ranking), Path(path))


def tradeoff_figure(ranking: Mapping[str, Any]) -> Figure:
    """Predicted accuracy (log10 CUI) against estimated end-to-end latency, from ``ranking["cost"]``.

    Every cut is a grey dot, the candidates (local maxima) amber stars, the Pareto front among them a
    line, the selected cuts are numbered in red, and the two Neurosurgeon baselines (all on the device,
    all on the server) are vertical dashed lines: they keep the full model's accuracy, so they have no CUI.
    """
    cost = _as_mapping(ranking.get("cost"))
    candidates: list[Mapping[str, Any]] = list(ranking.get("candidates") or [])
    fig, ax = _new_figure()
    link = _as_mapping(cost.get("link"))
    device = _as_mapping(cost.get("device"))
    ax.set_title(
        f"CUI vs end-to-end latency, {ranking.get('model', '?')}: {device.get('target', '?')} "
        f"{device.get('precision', '')}, link {link.get('name', '?')}, objective {cost.get('objective', '?')}",
        fontsize=11,
    )
    points = []
    for c in candidates:
        pc = _as_mapping(c.get("cost"))
        ms, y = pc.get("total_ms"), _candidate_log10(c)
        if isinstance(ms, (int, float)) and ms > 0 and not math.isnan(y):
            points.append((int(c["index"]), float(ms), y, c.get("rank") is not None))
    if not points:
        _empty(ax, "no cost data")
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
        markerfacecolor=_STAR,
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
            color=_COLORS[0],
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
                color=_TOP,
                zorder=6,
            )
    baselines = _as_mapping(cost.get("baselines"))
    for name, label, color in (
        ("device_only", "all on device", "#2a9d8f"),
        ("server_only", "all on server", "#8a5a9e"),
    ):
        ms = _as_mapping(baselines.get(name)).get("total_ms")
        if isinstance(ms, (int, float)) and ms > 0:
            ax.axvline(
                float(ms), color=color, linestyle="--", linewidth=1.2, label=f"{label}: {float(ms):.2f} ms"
            )
    ax.set_xlabel("end-to-end latency per image (ms, log scale): device + link + server")
    ax.set_ylabel("log10 CUI (predicted accuracy)")
    ax.legend(loc="best", fontsize=8, frameon=True, facecolor="white", edgecolor="#cccccc")
    return fig


def _as_mapping(v: Any) -> Mapping[str, Any]:
    return v if isinstance(v, Mapping) else {}


def plot_tradeoff(ranking: Mapping[str, Any], path: Path) -> None:
    """Write the CUI / latency trade-off plot of a ranking with a ``cost`` block to ``path`` as PNG."""
    save_png(tradeoff_figure(ranking), Path(path))


def probe_figure(ranking: Mapping[str, Any]) -> Figure:
    """The probe next to the CUI: log10 CUI per cut (left axis) and the probe's held-out score with its
    95 % CI at each probed cut (right axis), in network order."""
    candidates: list[Mapping[str, Any]] = list(ranking.get("candidates") or [])
    fig, ax = _new_figure()
    block = _as_mapping(ranking.get("probe"))
    budget = _as_mapping(block.get("budget")).get("spec", "?")
    metric = block.get("metric") or "score"
    ax.set_title(
        f"{ranking.get('model', '?')}: CUI and the probe at {budget} (held-out {metric})", fontsize=11
    )
    if not candidates:
        _empty(ax, "no cut points")
        return fig
    xs = list(range(len(candidates)))
    ax.plot(
        xs,
        [_candidate_log10(c) for c in candidates],
        marker="o",
        markersize=3.5,
        linewidth=1.4,
        color=_COLORS[0],
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
