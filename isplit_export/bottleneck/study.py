"""``isplit-export study``: I-Split's validation experiment, measured.

At every candidate cut (the CUI curve's local maxima), or at every cut, a bottleneck is trained
(:mod:`isplit_export.bottleneck.core`) and the pair's accuracy (labelled images) or agreement with the
full model (unlabelled) is measured on images held out from training. The study then asks how well
CUI predicted that measured value, next to CDE (the boundary size) and a random order.

Three public pieces, kept apart so the cuts can be shared out across processes:

* :func:`prepare` builds the :class:`StudyContext` (model, trace, ranking, train/held-out split);
* :func:`measure_cut` is a pure function of (context, cut): its seed comes from
  ``(options.seed, cut.index)`` only, never from global state or the order the cuts run in;
* :func:`summarize_study` turns the :class:`CutResult` list into the summary (correlations with
  bootstrap CIs, regret, CUI vs CDE).

:func:`study` runs the three and writes ``study.json`` (schema ``isplit.study/1``; everything but
its ``run`` block, which holds the training seconds, is byte-reproducible) and ``study.png``.
"""

from __future__ import annotations

import datetime as dt
import math
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from isplit_export.bottleneck.core import code_shape, train
from isplit_export.errors import BadInputError
from isplit_export.models import forward_batched
from isplit_export.numbers import rounded
from isplit_export.options import CUT_SETS, StudyOptions, make_options
from isplit_export.stats import (
    MIN_TO_CONCLUDE,
    difference_ci,
    excludes_zero,
    kendall_tau,
    pair_order,
    percentile_ci,
    replicate_ci,
    separated_pairs,
    spearman,
    two_level_replicates,
)
from isplit_export.verification.checks import held_out_rounding, task_metric
from isplit_export.version import __version__

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from isplit_export.api import RankResult
    from isplit_export.bottleneck.probe import Probe
    from isplit_export.distributed import Job
    from isplit_export.ranking.graph import Cut

SCHEMA = "isplit.study/2"
__all__ = ["CUT_SETS", "SCHEMA", "StudyOptions", "measure_cut", "prepare", "study", "summarize_study"]

PREDICTORS = ("cui", "cde", "probe", "random")
DIFFERENCES = (("probe", "cui"), ("cui", "cde"))
"""The differences in Spearman the study tests: the probe against CUI, CUI against CDE."""


@dataclass
class StudyContext:
    """Everything :func:`measure_cut` needs, computed once: read-only afterwards."""

    options: StudyOptions
    ranked: RankResult
    cuts: list[Cut]
    cui: np.ndarray
    cui_all: np.ndarray | None
    x_train: torch.Tensor
    x_held: torch.Tensor
    labels_held: np.ndarray
    y_full_held: np.ndarray
    class_mask: np.ndarray | None
    names_held: list[str] = field(default_factory=list)
    probe: Probe | None = None


@dataclass
class CutResult:
    """One measured cut over its repeats. ``outcomes`` ``[repeats, images]`` is 1 where the pair got a
    held-out image right (the bootstrap's input); ``train_seconds`` is the only field that varies between runs."""

    index: int
    node: str
    module: str
    shape: tuple[int, ...]
    cui: float
    cui_all: float | None
    boundary_bytes: int
    code_shape: tuple[int, ...]
    code_bytes: int
    measured: dict[str, Any]
    class_measured: dict[str, Any] | None
    training: list[dict[str, Any]]
    train_seconds: float
    outcomes: np.ndarray | None = None
    probe: dict[str, Any] | None = None
    repeats: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The byte-reproducible part (no seconds)."""
        out = {
            "index": self.index,
            "node": self.node,
            "module": self.module,
            "shape": list(self.shape),
            "cui": held_out_rounding(self.cui),
            "boundary_bytes": self.boundary_bytes,
            "code_shape": list(self.code_shape),
            "code_bytes": self.code_bytes,
            "measured": self.measured,
            "repeats": self.repeats,
            "probe": self.probe,
            "training": self.training,
        }
        if self.class_measured is not None:
            out["cui_all_classes"] = held_out_rounding(self.cui_all)
            out["class_measured"] = self.class_measured
        return out


@dataclass
class StudyResult:
    """The written ``study.json`` content and the paths of the files."""

    data: dict[str, Any]
    results: list[CutResult]
    paths: list[Path]


def prepare(options: StudyOptions, job: Job | None = None) -> StudyContext:
    """Rank (all classes, and the class subset with ``classes``), load the images, split train/held-out."""
    from isplit_export.api import rank
    from isplit_export.bottleneck.holdout import split_holdout
    from isplit_export.data import resolve_model_classes
    from isplit_export.distributed import images_tensor

    opts = options.replace(out=None)
    ranked = rank(opts.replace(classes=None, bottleneck=None))  # the probe runs below, on the study's split
    cuts = (
        ranked.traced.cuts
        if opts.cuts == "all"
        else sorted(ranked.ranking.ranked(None), key=lambda c: c.index)
    )
    if not cuts:
        raise BadInputError("no candidate cut (no local maximum of the CUI curve): pass --cuts all")
    for cut in cuts:  # every size error before any training
        code_shape(cut, opts.bn.spec, opts.boundary)
    x, labels, names = images_tensor(ranked.images, opts.max_images)  # decoded in parts under torchrun
    train_idx, held_idx = split_holdout(names, opts.bn.holdout, opts.seed)
    x_train, x_held = x[train_idx], x[held_idx]
    lab = labels.numpy()[held_idx]
    y_full = forward_batched(ranked.model.module, x_held, 64).numpy()
    cui = ranked.ranking.cui
    cui_all = None
    mask = None
    if opts.classes:
        cls_rank = rank(opts.replace(bottleneck=None))
        cui_all, cui = cui, cls_rank.ranking.cui
        if cls_rank.images.folders:
            keys = {it.label for it in cls_rank.images.items if it.label >= 0}
            if not keys:
                raise BadInputError(
                    "--classes: the chosen class folders do not map to model classes: name them 0..K-1"
                )
            mask = np.isin(lab, sorted(keys))
        else:
            keys = set(
                resolve_model_classes(opts.classes, ranked.model.class_names, ranked.model.num_classes)
            )
            mask = np.isin(y_full.argmax(1), sorted(keys))
        if not mask.any():
            raise BadInputError(
                "--classes: no held-out image belongs to those classes: pass more images of them"
            )
    from isplit_export.bottleneck.probe import run_probe

    probe = run_probe(
        ranked.traced,
        cuts,
        opts.bn.spec,
        x_train,
        x[held_idx],
        y_full,
        lab,
        encoding=opts.boundary,
        batch_size=opts.batch_size,
        job=job,
    )
    return StudyContext(
        opts,
        ranked,
        list(cuts),
        np.asarray(cui),
        None if cui_all is None else np.asarray(cui_all),
        x_train,
        x_held,
        lab,
        y_full,
        mask,
        [names[i] for i in held_idx],
        probe,
    )


def measure_cut(ctx: StudyContext, cut: Cut) -> CutResult:
    """Train ``repeats`` bottlenecks at ``cut`` (seeds from (seed, cut index, repeat) only) and measure each
    on the held-out images: per repeat its value and CI; over repeats the mean, the spread (sd) and the
    CI of the mean (two-level bootstrap over images and repeats)."""
    opts = ctx.options
    head, tail = ctx.ranked.traced.split(cut)
    lab, full = ctx.labels_held, ctx.y_full_held.argmax(1)
    truth = np.where(lab >= 0, lab, full) if (lab >= 0).any() else full
    rows, outcomes, trainings, seconds = [], [], [], 0.0
    class_measured = None
    for r in range(opts.repeats):
        # the bottleneck fits its own PCA on ctx.x_train (the probe's code, but summed in one fixed order):
        # a cut's result must not depend on how many processes added up the probe's sums
        trained = train(
            cut,
            head,
            tail,
            ctx.x_train,
            opts.bn,
            seed=opts.seed,
            repeat=r,
            encoding=opts.boundary,
            batch_size=opts.batch_size,
            progress=opts.progress,
        )
        logits = trained.logits(ctx.x_held, opts.batch_size)
        m = task_metric(ctx.y_full_held, logits, ctx.labels_held, held_out=True, rnd=held_out_rounding)
        rows.append({"value": m["value"], "ci95": m["ci95"], "kept": trained.summary["kept"]})
        outcomes.append((logits.argmax(1) == truth).astype(np.float64))
        trainings.append(trained.summary)
        seconds += trained.seconds
        if r == 0 and ctx.class_mask is not None:  # the class subset: first repeat
            k = ctx.class_mask
            class_measured = task_metric(
                ctx.y_full_held[k], logits[k], ctx.labels_held[k], held_out=True, rnd=held_out_rounding
            )
    out = np.stack(outcomes)
    values = out.mean(axis=1)
    reps = two_level_replicates(out[None], opts.ci_reps, opts.seed)[:, 0]
    ci = percentile_ci(reps.tolist())
    first = task_metric(
        ctx.y_full_held, ctx.y_full_held, ctx.labels_held, held_out=True, rnd=held_out_rounding
    )
    measured = {
        "metric": first["metric"],
        "value": held_out_rounding(float(values.mean())),
        "sd": held_out_rounding(
            float(out.sum(axis=1).std(ddof=1)) / out.shape[1] if len(values) > 1 else 0.0
        ),  # from counts: exact 0
        "ci95": _ci(ci)
        if ci is not None
        else [held_out_rounding(float(values.mean())), held_out_rounding(float(values.mean()))],
        "images": int(out.shape[1]),
        "repeats": int(out.shape[0]),
        "held_out": True,
        "full_model": first["full_model"],
        "drop": held_out_rounding(float(first["full_model"] or 0.0) - float(values.mean())),
    }
    cs = trained.shape
    return CutResult(
        index=cut.index,
        node=cut.node,
        module=cut.module,
        shape=tuple(cut.shape),
        cui=float(ctx.cui[cut.index]),
        cui_all=None if ctx.cui_all is None else float(ctx.cui_all[cut.index]),
        boundary_bytes=cut.boundary_bytes,
        code_shape=cs.code_shape,
        code_bytes=cs.code_bytes,
        measured=measured,
        class_measured=class_measured,
        training=trainings,
        train_seconds=rounded(seconds, 3, decimals=True),
        outcomes=out,
        probe=None if ctx.probe is None else ctx.probe.scores.get(cut.index),
        repeats=rows,
    )


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
        "spearman_ci95": _ci(replicate_ci(spearman, pred, replicates)),
        "kendall": held_out_rounding(kendall_tau(pred, values)),
        "kendall_ci95": _ci(replicate_ci(kendall_tau, pred, replicates)),
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
            "ci95": _ci(ci),
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


def study(options: StudyOptions | str | None = None, /, **fields: Any) -> StudyResult:
    """Run the study and write ``study.json`` and ``study.png`` into ``options.out`` (default ``study``)."""
    from isplit_export.distributed import job, merge_order
    from isplit_export.files import write_json

    opts = make_options(StudyOptions, options, fields)
    out = opts.out or Path("study")
    paths = [out / "study.json", out / "study.png"]
    with job(opts.distributed, opts.device) as current:  # under torchrun: the cuts are shared out
        ctx = prepare(opts, current)
        mine = [measure_cut(ctx, ctx.cuts[i]) for i in current.share(len(ctx.cuts))]
        results = merge_order(current.gather(mine), len(ctx.cuts), current.world_size)
        data = study_json(ctx, results)
        if current.describe() is not None:
            data["distributed"] = current.describe()

        def write() -> None:
            out.mkdir(parents=True, exist_ok=True)
            write_json(paths[0], data)
            plot_study(data, paths[1])

        current.write(write)  # process 0, once every process is ok
    return StudyResult(data, results, paths)


def study_json(ctx: StudyContext, results: Sequence[CutResult]) -> dict[str, Any]:
    """The ``isplit.study/1`` document; only its ``run`` block (seconds, host, date) varies between runs."""
    opts = ctx.options
    r = ctx.ranked
    full = task_metric(
        ctx.y_full_held, ctx.y_full_held, ctx.labels_held, held_out=True, rnd=held_out_rounding
    )
    return {
        "schema": SCHEMA,
        "tool": {"name": "isplit-export", "version": __version__},
        "options": opts.to_json(),
        "model": r.model.to_json(),
        "images": {
            "source": r.images.source,
            "train": len(ctx.x_train),
            "held_out": len(ctx.x_held),
            "labelled": bool((ctx.labels_held >= 0).all()),
        },
        "full_model": {"metric": full["metric"], "value": full["full_model"]},
        "curve": {
            "index": list(range(len(r.traced.cuts))),
            "cui": [held_out_rounding(float(v)) for v in ctx.cui],
            "boundary_bytes": [c.boundary_bytes for c in r.traced.cuts],
            "input_bytes": r.ranking.input_bytes,
        },
        "cuts": [res.to_json() for res in results],
        "probe": None if ctx.probe is None else ctx.probe.to_json(),
        "summary": summarize_study(results, seed=opts.seed, reps=opts.ci_reps),
        "run": {
            "created": dt.datetime.now(dt.timezone.utc)
            .replace(microsecond=0)
            .isoformat()
            .replace("+00:00", "Z"),
            "host": platform.platform(),
            "torch": torch.__version__,
            "train_seconds": {str(res.index): res.train_seconds for res in results},
            "probe_seconds": None if ctx.probe is None else rounded(ctx.probe.seconds, 3, decimals=True),
        },
    }


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


def _ci(ci: tuple[float, float] | None) -> list[float | None] | None:
    return None if ci is None else [held_out_rounding(ci[0]), held_out_rounding(ci[1])]
