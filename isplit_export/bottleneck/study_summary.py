"""The study's statistics: how well CUI, CDE, the probe and a random order predict the measured values.

:func:`summarize_study` turns the measured :class:`~isplit_export.bottleneck.study_measure.CutResult`
list into the summary: rank correlations with two-level bootstrap CIs, regret, the separated pairs and
the differences in Spearman (probe - CUI, CUI - CDE), conclusive only where a CI excludes 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from isplit_export.bottleneck.study_measure import rounded_ci
from isplit_export.stats import (
    MIN_TO_CONCLUDE,
    difference_ci,
    excludes_zero,
    kendall_tau,
    pair_order,
    replicate_ci,
    separated_pairs,
    spearman,
    two_level_replicates,
)
from isplit_export.verification.checks import held_out_rounding

if TYPE_CHECKING:
    from isplit_export.bottleneck.study_measure import CutResult

PREDICTORS = ("cui", "cde", "probe", "random")
DIFFERENCES = (("probe", "cui"), ("cui", "cde"))
"""The differences in Spearman the study tests: the probe against CUI, CUI against CDE."""


def _predictor(
    pred: Sequence[float],
    values: Sequence[float],
    replicates: np.ndarray,
    indices: Sequence[int],
    pairs: Sequence[tuple[int, int]] | None = None,
) -> dict[str, Any]:
    """Spearman and Kendall of ``pred`` with the measured ``values``, CIs over the replicates, regret of its top
    pick, and (``pairs``) how it orders the pairs of cuts whose measured difference is outside the noise."""
    top, best = int(np.argmax(pred)), int(np.argmax(values))
    extra = {} if pairs is None else {"separated_pairs": pair_order(pred, values, pairs)}
    return {
        "spearman": held_out_rounding(spearman(pred, values)),
        "spearman_ci95": rounded_ci(replicate_ci(spearman, pred, replicates)),
        "kendall": held_out_rounding(kendall_tau(pred, values)),
        "kendall_ci95": rounded_ci(replicate_ci(kendall_tau, pred, replicates)),
        "top_pick": {"index": indices[top], "value": held_out_rounding(values[top])},
        "regret": held_out_rounding(values[best] - values[top]),
        **extra,
    }


def _regret(cui: Sequence[float], values: Sequence[float], indices: Sequence[int]) -> dict[str, Any]:
    top = int(np.argmax(cui))
    best = int(np.argmax(values))
    return {
        "cui_top_pick": {"index": indices[top], "value": held_out_rounding(values[top])},
        "best": {"index": indices[best], "value": held_out_rounding(values[best])},
        "regret": held_out_rounding(values[best] - values[top]),
    }


def _outcomes(results: Sequence[CutResult]) -> np.ndarray:
    """``[cuts, repeats, images]`` outcomes; a cut without them stands as its value (one repeat, one image)."""
    if all(r.outcomes is not None for r in results):
        reps = min(int(r.outcomes.shape[0]) for r in results if r.outcomes is not None)
        return np.stack([np.asarray(r.outcomes)[:reps] for r in results])
    return np.array([[[float(r.measured["value"])]] for r in results])


def summarize_study(results: Sequence[CutResult], *, seed: int = 0, reps: int = 1000) -> dict[str, Any]:
    """Correlations of CUI, CDE, the probe and a seeded random order with the measured means (CIs from the
    two-level bootstrap over images and repeats), each predictor's regret, and the differences in Spearman
    probe - CUI and CUI - CDE with their CIs. ``conclusive`` only where such a difference's CI excludes 0."""
    n = len(results)
    values = [float(r.measured["value"]) for r in results]
    cui = [r.cui for r in results]
    indices = [r.index for r in results]
    replicates = two_level_replicates(_outcomes(results), reps, seed) if results else np.zeros((0, 0))
    preds_in: dict[str, list[float]] = {
        "cui": cui,
        "cde": [float(r.boundary_bytes) for r in results],
        "random": np.random.default_rng(seed).permutation(n).astype(float).tolist(),
    }
    if results and all(r.probe is not None and r.probe.get("value") is not None for r in results):
        preds_in["probe"] = [float(r.probe["value"]) for r in results if r.probe is not None]
    pairs = separated_pairs(replicates) if n >= 2 else []
    preds = {k: _predictor(v, values, replicates, indices, pairs) for k, v in preds_in.items()} if n else {}
    diffs: dict[str, Any] = {}
    conclusions: list[str] = []
    for a, b in DIFFERENCES:
        if a not in preds_in or b not in preds_in or n < 2:
            continue
        ra, rb = spearman(preds_in[a], values), spearman(preds_in[b], values)
        ci = difference_ci(spearman, preds_in[a], preds_in[b], replicates)
        decided = n >= MIN_TO_CONCLUDE and excludes_zero(ci)
        better = (a if ci is not None and ci[0] > 0 else b) if decided else None
        diffs[f"{a}-{b}"] = {
            "spearman_difference": held_out_rounding(None if ra is None or rb is None else ra - rb),
            "ci95": rounded_ci(ci),
            "conclusive": decided,
            "better": better,
        }
        if better is not None:
            conclusions.append(f"{better} predicts better than {b if better == a else a}")
    rc, rd = spearman(cui, values) if n else None, spearman(preds_in["cde"], values) if n else None
    beats = None if rc is None or rd is None else bool(rc > rd)
    conclusive = bool(conclusions)
    if n < 2:
        note = "fewer than two cuts were measured: nothing can be concluded"
    elif rc is None:
        note = "every cut measured the same value (or CUI is constant): the CUI order is neither confirmed nor contradicted"
    else:
        parts = [
            f"Spearman with the measured mean: {k.upper()} {_fmt(preds[k]['spearman'])}"
            if k == "cui"
            else f"{k.upper()} {_fmt(preds[k]['spearman'])}"
            for k in ("cui", "cde", "probe")
            if k in preds
        ]
        note = ", ".join(parts)
        if n < MIN_TO_CONCLUDE:
            note += f"; {n} cuts are too few to conclude anything (need {MIN_TO_CONCLUDE}+)"
        elif conclusions:
            note += "; conclusive: " + "; ".join(conclusions)
        else:
            note += "; inconclusive: every difference's 95 % CI contains 0"
        if pairs:
            order = ", ".join(
                f"{k.upper()} {preds[k]['separated_pairs']['right']}"
                for k in ("cui", "cde", "probe")
                if k in preds
            )
            note += (
                f"; {len(pairs)} of {n * (n - 1) // 2} cut pairs differ outside the noise, ordered right by "
                f"{order}"
            )
    out: dict[str, Any] = {
        "cuts": n,
        "repeats": int(replicates.shape[0] and _outcomes(results).shape[1]) if results else 0,
        "metric": results[0].measured["metric"] if results else None,
        "bootstrap": {
            "method": "two-level: images (shared by the cuts) x repeats (per cut), percentile",
            "replicates": reps,
            "seed": seed,
        },
        "predictors": preds,
        "differences": diffs,
        "separated_pairs": {
            "method": "pairs of cuts whose paired bootstrap difference has a 95 % CI excluding 0 (uncorrected)",
            "pairs": [[indices[i], indices[j]] for i, j in pairs],
            "of": n * (n - 1) // 2,
        },
        **(_regret(cui, values, indices) if results else {}),
        "cui_beats_cde": beats,
        "conclusive": conclusive,
        "concludes_for": conclusions[0].split(" ")[0] if conclusions else None,
        "note": note,
    }
    if results and results[0].class_measured is not None:
        cvals = [float(r.class_measured["value"]) for r in results if r.class_measured is not None]
        call = [float(r.cui_all) if r.cui_all is not None else math.nan for r in results]
        crep = np.array([cvals])  # the class subset is measured on one repeat: no bootstrap over images here
        out["classes"] = {
            "metric": results[0].class_measured["metric"] if results[0].class_measured else None,
            "class_cui": {**_predictor(cui, cvals, crep, indices), **_regret(cui, cvals, indices)},
            "all_class_cui": {**_predictor(call, cvals, crep, indices), **_regret(call, cvals, indices)},
        }
    return out


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:+.3f}"
