"""The grid study's statistics (``study --budgets``): which (cut, budget) points the measurements separate,
how each predictor orders them, and the regret of the probe's chosen point. numpy only (torch-free).

Inputs are the measured outcomes ``[points, repeats, images]`` (1 where a trained pair got a held-out image
right) and one predicted score per point and predictor. The two-level bootstrap of
:func:`isplit_export.stats.two_level_replicates` (images shared by the points, repeats drawn per point) gives
the replicates behind every interval here:

* *separated pairs*: the pairs of points whose paired difference has a 95 % CI that excludes 0
  (:func:`isplit_export.stats.separated_pairs`, one interval per pair, uncorrected);
* *ordering*: per predictor, how many of those pairs it orders right, wrong or tied
  (:func:`isplit_export.stats.pair_order`); a predictor that scores the two points of a pair equally (CUI and
  layer size at the same cut) ties, and a tie is not counted right. ``share_right`` is right over all pairs;
* *regret*: the best measured mean among the feasible points (those within the latency target) minus the
  chosen point's measured mean; its CI is the percentile CI of that same paired difference over the
  replicates (the best point fixed as measured). ``conclusive`` (the choice measurably lost) only where the
  CI excludes 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from isplit_export.stats import pair_order, percentile_ci, separated_pairs, two_level_replicates

PAIRS_METHOD = (
    "pairs of grid points whose paired two-level bootstrap difference has a 95 % CI excluding 0 (uncorrected); "
    "a predictor that scores both points equally (CUI and layer size at one cut) ties, not counted right"
)
REGRET_METHOD = (
    "best measured mean among the points within the latency target minus the chosen point's measured mean; "
    "95 % percentile CI of that paired difference over the two-level bootstrap replicates"
)


def _rounded(v: float | None) -> float | None:
    return None if v is None else round(float(v), 6)


def ordering(
    predictors: Mapping[str, Sequence[float]], values: Sequence[float], pairs: Sequence[tuple[int, int]]
) -> dict[str, dict[str, Any]]:
    """Per predictor: the separated ``pairs`` it orders right, wrong and tied, and the share right."""
    out: dict[str, dict[str, Any]] = {}
    for name, pred in predictors.items():
        counts = pair_order(pred, values, pairs)
        share = counts["right"] / len(pairs) if pairs else None
        out[name] = {**counts, "share_right": _rounded(share)}
    return out


def regret(
    values: Sequence[float], replicates: np.ndarray, chosen: int, feasible: Sequence[int]
) -> dict[str, Any]:
    """The chosen point's regret against the best measured feasible point, with its bootstrap CI."""
    if chosen not in feasible:
        raise ValueError(f"the chosen point {chosen} must be one of the feasible points {list(feasible)}")
    v = np.asarray(values, dtype=np.float64)
    best = max(feasible, key=lambda i: (v[i], i == chosen, -i))  # a tie with the chosen point: no regret
    r = np.asarray(replicates, dtype=np.float64)
    ci = (0.0, 0.0) if best == chosen else percentile_ci(r[:, best] - r[:, chosen])
    excludes = ci is not None and (ci[0] > 0.0 or ci[1] < 0.0)
    return {
        "method": REGRET_METHOD,
        "chosen": chosen,
        "best": best,
        "feasible": len(feasible),
        "value": _rounded(float(v[best] - v[chosen])),
        "ci95": None if ci is None else [_rounded(ci[0]), _rounded(ci[1])],
        "ci_includes_zero": ci is not None and not excludes,
        "conclusive": excludes,
    }


def summarize_grid(
    outcomes: np.ndarray,
    predictors: Mapping[str, Sequence[float]],
    *,
    chosen: int | None,
    feasible: Sequence[int],
    seed: int = 0,
    reps: int = 1000,
) -> dict[str, Any]:
    """The grid study's summary: the measured means, the separated pairs and each predictor's ordering of
    them, and (``chosen``: the index of the probe's choice among the points) its regret."""
    m = np.asarray(outcomes, dtype=np.float64)
    n = int(m.shape[0])
    values = m.mean(axis=(1, 2)).tolist()
    replicates = two_level_replicates(m, reps, seed)
    pairs = separated_pairs(replicates) if n >= 2 else []
    order = ordering(predictors, values, pairs)
    out: dict[str, Any] = {
        "points": n,
        "repeats": int(m.shape[1]),
        "images": int(m.shape[2]),
        "bootstrap": {
            "method": "two-level: images (shared by the points) x repeats (per point), percentile",
            "replicates": reps,
            "seed": seed,
        },
        "separated_pairs": {
            "method": PAIRS_METHOD,
            "pairs": [[i, j] for i, j in pairs],
            "of": n * (n - 1) // 2,
        },
        "ordering": order,
        "regret": None if chosen is None else regret(values, replicates, chosen, feasible),
    }
    out["note"] = note(out)
    return out


def note(summary: Mapping[str, Any]) -> str:
    """The summary in one sentence: the separated pairs, each predictor's share right, the regret."""
    sep = summary["separated_pairs"]
    parts = [f"{len(sep['pairs'])} of {sep['of']} point pairs differ outside the noise"]
    if sep["pairs"]:
        shares = ", ".join(f"{k} {q['right']}/{len(sep['pairs'])}" for k, q in summary["ordering"].items())
        parts.append(f"ordered right by {shares}")
    r = summary.get("regret")
    if r is not None:
        ci = r["ci95"]
        span = "n/a" if ci is None else f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
        verdict = "conclusive: the choice measurably loses" if r["conclusive"] else "its CI includes 0"
        parts.append(f"regret of the chosen point {100 * r['value']:.1f} points {span} ({verdict})")
    return "; ".join(parts)


def format_grid_study(data: Mapping[str, Any]) -> str:
    """The grid study as a terminal table (per measured point: predicted and measured score, latency, the chosen
    and best marks), each predictor's ordering of the separated pairs, and the note."""
    s = data["summary"]
    r = s.get("regret") or {}
    metric = data["full_model"].get("metric") or "score"
    rows = [
        f"{'cut':>4}  {'node':18} {'code B':>7}  {'predicted [95% CI]':>22}  "
        f"{metric + ' mean [95% CI]':>24}  {'total ms':>9}  mark"
    ]
    for n, p in enumerate(data["points"]):
        pr, m = p["predicted"], p["measured"]
        pred = f"{pr['value']:.1%} [{pr['ci95'][0]:.1%}, {pr['ci95'][1]:.1%}]"
        meas = f"{m['value']:.1%} [{m['ci95'][0]:.1%}, {m['ci95'][1]:.1%}]"
        ms = "-" if p["total_ms"] is None else f"{p['total_ms']:.3f}"
        marks = [name for name, i in (("chosen", r.get("chosen")), ("best", r.get("best"))) if i == n]
        if not p["feasible"]:
            marks.append("over target")
        rows.append(
            f"{p['cut']:>4}  {p['node'][:18]:18} {p['code_bytes']:>7}  {pred:>22}  {meas:>24}  {ms:>9}  "
            f"{', '.join(marks)}"
        )
    pairs = len(s["separated_pairs"]["pairs"])
    for name, q in s["ordering"].items():
        rows.append(
            f"{name:10} separated pairs: right {q['right']}, wrong {q['wrong']}, tied {q['tied']} of {pairs}"
        )
    rows.append(s["note"])
    return "\n".join(rows)
