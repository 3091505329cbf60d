"""The grid study (``isplit-export study --budgets LADDER [--link L --max-latency-ms T]``): does the probe's
rate-accuracy grid choose the (cut, budget) pair well?

1. :func:`prepare_grid` loads the images, splits them as the study does (train / held out, by seed), runs the
   probe's grid (:func:`isplit_export.bottleneck.rate_accuracy.run_grid`) on that split, prices it on the link
   and chooses a point as ``rank --budgets`` does (:func:`isplit_export.bundle.grid_choice.choose_pair`: the most
   accurate within ``T``, CI ties to the smaller code; without ``T`` or without a link, the most accurate point),
   and selects the points to train: every reachable point, or (``sample``) the Pareto front, the chosen point and
   a seeded random sample of the rest;
2. :func:`measure_point` trains ``repeats`` bottlenecks at one point (the study's
   :func:`~isplit_export.bottleneck.study_measure.measure_cut` with the budget as the bottleneck size; seeds from
   (seed, cut index, repeat), so the budgets of one cut share their training seeds);
3. :func:`grid_study_json` writes the ``isplit.study-grid/1`` document: the grid, the choice, the selection, every
   measured point next to its prediction, and the summary
   (:func:`isplit_export.bottleneck.study_grid_summary.summarize_grid`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from isplit_export.bottleneck.study_grid_summary import summarize_grid
from isplit_export.bottleneck.study_measure import CutResult, StudyContext, measure_cut, study_head
from isplit_export.bundle.grid_choice import PricedPoint, choose_pair, most_accurate_within
from isplit_export.contract.rate_accuracy import GridPoint, RateAccuracyGrid
from isplit_export.numbers import rounded
from isplit_export.options_grid import PairChoice
from isplit_export.verification.checks import held_out_rounding
from isplit_export.version import run_stamp

if TYPE_CHECKING:
    from isplit_export.bottleneck.rate_accuracy import RateAccuracy
    from isplit_export.distributed import Job
    from isplit_export.options import StudyOptions
    from isplit_export.ranking.ranked import RankResult

SCHEMA = "isplit.study-grid/1"
PREDICTORS = ("probe", "cui", "layer_size", "code_size", "random")
"""How the summary orders the points: the probe's predicted score, the cut's CUI, its boundary (layer) size, the
code's size, and a seeded random order. CUI and layer size score every budget of one cut equally (a tie)."""


@dataclass
class GridStudy:
    """The grid study's context: the study context (``probe`` unused), the probe's grid on the study's split, the
    choice and the selected points (``points``; ``chosen`` and ``feasible`` index into them)."""

    ctx: StudyContext
    grid: RateAccuracy
    table: RateAccuracyGrid
    points: list[GridPoint]
    total_ms: list[float | None]
    chosen: int
    feasible: list[int]
    choice: dict[str, Any]
    selection: dict[str, Any]


def select_points(
    points: Sequence[GridPoint], keep: Sequence[GridPoint], sample: int | None, seed: int
) -> tuple[list[GridPoint], dict[str, Any]]:
    """Every point (``sample`` None), or the points of ``keep`` (the front and the chosen point) plus ``sample`` of the others drawn at random
    (``numpy.random.default_rng(seed)``); in grid order (cut, then budget)."""
    if sample is None:
        return list(points), {"mode": "all", "points": len(points), "of": len(points)}
    keep = list(dict.fromkeys(keep))  # the chosen point may be on the front too
    kept = {(p.cut, p.budget) for p in keep}
    rest = [p for p in points if (p.cut, p.budget) not in kept]
    drawn = np.random.default_rng(seed).permutation(len(rest))[: min(sample, len(rest))]
    chosen = kept | {(rest[int(i)].cut, rest[int(i)].budget) for i in drawn}
    out = [p for p in points if (p.cut, p.budget) in chosen]
    return out, {
        "mode": "front+sample",
        "kept": [p.label for p in keep],
        "sample": int(min(sample, len(rest))),
        "sample_seed": seed,
        "points": len(out),
        "of": len(points),
    }


def prepare_grid(options: StudyOptions, ranked: RankResult, job: Job | None = None) -> GridStudy:
    """The study's split, the probe's grid on it, the choice and the points to train (see the module docstring).
    An unreachable latency target is refused here, before any training."""
    from isplit_export.bottleneck.holdout import split_holdout
    from isplit_export.bottleneck.rate_accuracy import run_grid
    from isplit_export.distributed import images_tensor
    from isplit_export.models import forward_batched

    opts = options.replace(out=None)
    ladder = opts.ladder
    assert ladder is not None  # the job runs the grid study only with budgets
    cuts = (
        ranked.traced.cuts
        if opts.cuts == "all"
        else sorted(ranked.ranking.ranked(None), key=lambda c: c.index)
    )
    x, labels, names = images_tensor(ranked.images, opts.max_images)
    train_idx, held_idx = split_holdout(names, opts.bn.holdout, opts.seed)
    x_train, x_held = x[train_idx], x[held_idx]
    lab = labels.numpy()[held_idx]
    y_full = forward_batched(ranked.model.module, x_held, 64).numpy()
    grid = run_grid(
        ranked.traced,
        cuts,
        ladder,
        x_train,
        x_held,
        lab,
        encoding=opts.boundary,
        batch_size=opts.batch_size,
        job=job,
    )
    cui = np.asarray(ranked.ranking.cui)
    log10 = [math.log10(v) if v > 0 else None for v in cui.tolist()]
    table = RateAccuracyGrid.from_json(grid.to_json(ranked.ranking.ranks, log10))
    every = table.points
    if opts.link is not None:
        profiles = {k: v for k, v in (("target", opts.target), ("server", opts.server)) if v is not None}
        decided = choose_pair(
            table, PairChoice(link=opts.link, max_latency_ms=opts.max_latency_ms, **profiles)
        )
        priced, front = decided.points, decided.front
        choice = decided.to_json()
        del choice["points"]  # every point's price is in the points block
    else:
        priced = [PricedPoint(p, {"total_ms": 0.0}) for p in every]  # no link: every point is feasible
        front, choice = [], {"mode": "most_accurate", "target": None, "link": None}
    limit = math.inf if opts.max_latency_ms is None else opts.max_latency_ms
    pick = most_accurate_within(priced, limit, opts.link or "none")
    if choice.get("chosen") is None:  # no latency target: the most accurate point
        choice["mode"] = "most_accurate"
        choice["chosen"] = {"cut": pick.point.cut, "budget": pick.point.budget, "value": pick.point.value}
    choice["rule"] = (
        "the most accurate predicted point within the target; points whose predicted score lies inside its 95 % "
        "CI are tied with it and the smallest code wins"
    )
    selected, selection = select_points(
        every, [*(q.point for q in front), pick.point], opts.grid_sample, opts.seed
    )
    ms = {(q.point.cut, q.point.budget): q.total_ms for q in priced}
    total_ms = [ms[p.cut, p.budget] if opts.link is not None else None for p in selected]
    feasible = [i for i, t in enumerate(total_ms) if t is None or t <= limit]
    chosen = next(
        i for i, p in enumerate(selected) if (p.cut, p.budget) == (pick.point.cut, pick.point.budget)
    )
    ctx = StudyContext(
        opts,
        ranked,
        list(cuts),
        cui,
        None,
        x_train,
        x_held,
        lab,
        y_full,
        None,
        [names[i] for i in held_idx],
        None,
    )
    return GridStudy(ctx, grid, table, selected, total_ms, chosen, feasible, choice, selection)


def measure_point(gs: GridStudy, i: int) -> CutResult:
    """Train ``repeats`` bottlenecks at point ``i`` (its budget as the bottleneck size) and measure them."""
    p = gs.points[i]
    opts = gs.ctx.options
    size = dataclasses.replace(opts.bn, size=f"{p.budget}B")
    ctx = dataclasses.replace(gs.ctx, options=opts.replace(bottleneck=size))
    cut = next(c for c in gs.ctx.cuts if c.index == p.cut)
    return measure_cut(ctx, cut)


def predictors(gs: GridStudy) -> dict[str, list[float]]:
    """Each predictor's score per selected point (:data:`PREDICTORS`)."""
    boundary = {c.index: float(c.boundary_bytes) for c in gs.ctx.cuts}
    n = len(gs.points)
    return {
        "probe": [p.value for p in gs.points],
        "cui": [float(gs.ctx.cui[p.cut]) for p in gs.points],
        "layer_size": [boundary[p.cut] for p in gs.points],
        "code_size": [float(p.code_bytes) for p in gs.points],
        "random": np.random.default_rng(gs.ctx.options.seed).permutation(n).astype(float).tolist(),
    }


def grid_study_json(gs: GridStudy, results: Sequence[CutResult]) -> dict[str, Any]:
    """The ``isplit.study-grid/1`` document; only its ``run`` block (seconds, host, date) varies between runs."""
    ctx, opts = gs.ctx, gs.ctx.options
    r = ctx.ranked
    reps = min(int(np.asarray(res.outcomes).shape[0]) for res in results)
    outcomes = np.stack([np.asarray(res.outcomes)[:reps] for res in results])
    summary = summarize_grid(
        outcomes,
        predictors(gs),
        chosen=gs.chosen,
        feasible=gs.feasible,
        seed=opts.seed,
        reps=opts.ci_reps,
    )
    labels = [p.label for p in gs.points]
    summary["labels"] = labels
    boundary = {c.index: c.boundary_bytes for c in ctx.cuts}
    rows = []
    for n, (p, res) in enumerate(zip(gs.points, results, strict=True)):
        rows.append(
            {
                "cut": p.cut,
                "node": p.node,
                "budget": p.budget,
                "code_bytes": p.code_bytes,
                "code_shape": list(res.code_shape),
                "cui": held_out_rounding(float(ctx.cui[p.cut])),
                "boundary_bytes": boundary[p.cut],
                "total_ms": gs.total_ms[n],
                "feasible": n in gs.feasible,
                "predicted": {"value": p.value, "ci95": list(p.ci95)},
                "measured": res.measured,
                "repeats": res.repeats,
                "training": res.training,
            }
        )
    ranks = r.ranking.ranks
    log10 = [math.log10(v) if v > 0 else None for v in np.asarray(r.ranking.cui).tolist()]
    return {
        **study_head(ctx, SCHEMA),
        "grid": gs.grid.to_json(ranks, log10),
        "choice": gs.choice,
        "selection": gs.selection,
        "points": rows,
        "summary": summary,
        "run": {
            **run_stamp(),
            "train_seconds": {label: res.train_seconds for label, res in zip(labels, results, strict=True)},
            "grid_seconds": rounded(gs.grid.seconds, 3, decimals=True),
        },
    }
