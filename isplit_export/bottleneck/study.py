"""``isplit-export study``: I-Split's validation experiment, measured.

At every candidate cut (the CUI curve's local maxima), or at every cut, a bottleneck is trained
(:mod:`isplit_export.bottleneck.core`) and the pair's accuracy (labelled images) or agreement with the
full model (unlabelled) is measured on images held out from training. The study then asks how well
CUI predicted that measured value, next to CDE (the boundary size) and a random order.

Three public pieces, kept apart so the cuts can be shared out across processes:

* :func:`prepare` builds the :class:`StudyContext` (model, trace, ranking, train/held-out split);
* :func:`measure_cut` is a pure function of (context, cut): its seed comes from
  ``(options.seed, cut.index)`` only, never from global state or the order the cuts run in;
* :func:`summarize` turns the :class:`CutResult` list into the summary (correlations with
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

from isplit_export.bottleneck.core import (
    BottleneckOptions,
    as_bottleneck,
    cut_seed,
    plan,
    train,
)
from isplit_export.errors import BadInputError
from isplit_export.models import forward_batched
from isplit_export.options import RankOptions, make_options
from isplit_export.verification.checks import held_out_rounding, task_metric
from isplit_export.verification.metrics import bootstrap_ci, kendall_tau, spearman
from isplit_export.version import __version__

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from isplit_export.api import RankResult
    from isplit_export.ranking.graph import Cut

SCHEMA = "isplit.study/1"
CUT_SETS = ("candidates", "all")
MIN_CUTS_TO_CONCLUDE = 5
"""Below this many measured cuts the correlations are reported but said to be inconclusive."""


@dataclass(frozen=True)
class StudyOptions(RankOptions):
    """What the study measures: ``cuts`` (``candidates`` or ``all``), the ``bottleneck`` at each, the code's
    ``boundary`` encoding, at most ``max_images`` images in memory, ``ci_reps`` bootstrap replicates for the
    correlations' CIs (``bootstrap``, inherited, is the ranking's Poisson bootstrap of the CUI)."""

    cuts: str = "candidates"
    bottleneck: BottleneckOptions | None = None
    boundary: str = "int8"
    max_images: int = 2000
    ci_reps: int = 1000

    def validate(self) -> None:
        object.__setattr__(self, "bottleneck", as_bottleneck(self.bottleneck) or BottleneckOptions())
        super().validate()
        if self.cuts not in CUT_SETS:
            raise BadInputError(f"--cuts {self.cuts!r}: choose {' or '.join(CUT_SETS)}")
        if self.boundary not in ("fp32", "fp16", "int8"):
            raise BadInputError(f"--boundary {self.boundary!r}: choose fp32, fp16 or int8")
        if self.max_images < 1 or self.ci_reps < 1:
            raise BadInputError("max_images and ci_reps must be positive")

    @property
    def bn(self) -> BottleneckOptions:
        assert self.bottleneck is not None  # set by validate()
        return self.bottleneck


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


@dataclass
class CutResult:
    """One measured cut. ``train_seconds`` is the only field that varies from run to run."""

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
    training: dict[str, Any]
    train_seconds: float

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


def prepare(options: StudyOptions) -> StudyContext:
    """Rank (all classes, and the class subset with ``classes``), load the images, split train/held-out."""
    from isplit_export.api import rank
    from isplit_export.bottleneck.holdout import split_holdout
    from isplit_export.data import resolve_model_classes
    from isplit_export.distributed import images_tensor

    opts = options.replace(out=None)
    ranked = rank(opts.replace(classes=None))
    cuts = (
        ranked.traced.cuts
        if opts.cuts == "all"
        else sorted(ranked.ranking.ranked(None), key=lambda c: c.index)
    )
    if not cuts:
        raise BadInputError("no candidate cut (no local maximum of the CUI curve): pass --cuts all")
    for cut in cuts:  # every size error before any training
        plan(cut, opts.bn.spec, opts.boundary)
    x, labels, names = images_tensor(ranked.images, opts.max_images)  # decoded in parts under torchrun
    train_idx, held_idx = split_holdout(names, opts.bn.holdout, opts.seed)
    x_train, x_held = x[train_idx], x[held_idx]
    lab = labels.numpy()[held_idx]
    y_full = forward_batched(ranked.model.module, x_held, 64).numpy()
    cui = ranked.ranking.cui
    cui_all = None
    mask = None
    if opts.classes:
        cls_rank = rank(opts)
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
    return StudyContext(
        opts, ranked, list(cuts), np.asarray(cui), None if cui_all is None else np.asarray(cui_all),
        x_train, x_held, lab, y_full, mask, [names[i] for i in held_idx],
    )  # fmt: skip


def measure_cut(ctx: StudyContext, cut: Cut) -> CutResult:
    """Train the bottleneck at ``cut`` and measure it on the held-out images (seeded by the cut index)."""
    opts = ctx.options
    head, tail = ctx.ranked.traced.split(cut)
    trained = train(
        cut, head, tail, ctx.x_train, opts.bn, seed=cut_seed(opts.seed, cut.index), encoding=opts.boundary,
        batch_size=opts.batch_size, progress=opts.progress,
    )  # fmt: skip
    logits = trained.logits(ctx.x_held, opts.batch_size)
    measured = task_metric(ctx.y_full_held, logits, ctx.labels_held, held_out=True, rnd=held_out_rounding)
    class_measured = None
    if ctx.class_mask is not None:
        m = ctx.class_mask
        class_measured = task_metric(ctx.y_full_held[m], logits[m], ctx.labels_held[m], held_out=True, rnd=held_out_rounding)
    return CutResult(
        index=cut.index, node=cut.node, module=cut.module, shape=tuple(cut.shape), cui=float(ctx.cui[cut.index]),
        cui_all=None if ctx.cui_all is None else float(ctx.cui_all[cut.index]), boundary_bytes=cut.boundary_bytes,
        code_shape=trained.plan.code_shape, code_bytes=trained.plan.code_bytes, measured=measured,
        class_measured=class_measured, training=trained.summary, train_seconds=round(trained.seconds, 3),
    )  # fmt: skip


def _predictor(pred: Sequence[float], values: Sequence[float], reps: int, seed: int) -> dict[str, Any]:
    rho, tau = spearman(pred, values), kendall_tau(pred, values)
    return {
        "spearman": held_out_rounding(rho),
        "spearman_ci95": _ci(bootstrap_ci(spearman, pred, values, reps, seed)),
        "kendall": held_out_rounding(tau),
        "kendall_ci95": _ci(bootstrap_ci(kendall_tau, pred, values, reps, seed)),
    }


def _regret(cui: Sequence[float], values: Sequence[float], indices: Sequence[int]) -> dict[str, Any]:
    top = int(np.argmax(cui))
    best = int(np.argmax(values))
    return {
        "cui_top_pick": {"index": indices[top], "value": held_out_rounding(values[top])},
        "best": {"index": indices[best], "value": held_out_rounding(values[best])},
        "regret": held_out_rounding(values[best] - values[top]),
    }


def summarize(results: Sequence[CutResult], *, seed: int = 0, reps: int = 1000) -> dict[str, Any]:
    """Correlations of CUI, CDE and a seeded random order with the measured values; regret; CUI vs CDE."""
    n = len(results)
    values = [float(r.measured["value"]) for r in results]
    cui = [r.cui for r in results]
    indices = [r.index for r in results]
    random_order = np.random.default_rng(seed).permutation(n).astype(float).tolist()
    preds = {
        "cui": _predictor(cui, values, reps, seed),
        "cde": _predictor([float(r.boundary_bytes) for r in results], values, reps, seed),
        "random": _predictor(random_order, values, reps, seed),
    }
    rc, rd = preds["cui"]["spearman"], preds["cde"]["spearman"]
    beats = None if rc is None or rd is None else bool(rc > rd)
    conclusive = n >= MIN_CUTS_TO_CONCLUDE
    if n < 2:
        note = "fewer than two cuts were measured: nothing can be concluded"
    elif rc is None:
        note = "every cut measured the same value (or CUI is constant): the CUI order is neither confirmed nor contradicted"
    else:
        cde = "undefined" if rd is None else f"{rd:.3f}"
        note = f"Spearman(CUI, measured) = {rc:.3f}, Spearman(CDE, measured) = {cde}: " + (
            "CUI predicted better than CDE" if beats else "CUI did not predict better than CDE"
        )
        if not conclusive:
            note += f"; but {n} cuts are too few to conclude anything (need {MIN_CUTS_TO_CONCLUDE}+)"
    out: dict[str, Any] = {
        "cuts": n,
        "metric": results[0].measured["metric"] if results else None,
        "predictors": preds,
        **(_regret(cui, values, indices) if results else {}),
        "cui_beats_cde": beats,
        "conclusive": conclusive,
        "note": note,
    }
    if results and results[0].class_measured is not None:
        cvals = [float(r.class_measured["value"]) for r in results if r.class_measured is not None]
        call = [float(r.cui_all) if r.cui_all is not None else math.nan for r in results]
        out["classes"] = {
            "metric": results[0].class_measured["metric"] if results[0].class_measured else None,
            "class_cui": {**_predictor(cui, cvals, reps, seed), **_regret(cui, cvals, indices)},
            "all_class_cui": {**_predictor(call, cvals, reps, seed), **_regret(call, cvals, indices)},
        }
    return out


def study(options: StudyOptions | str | None = None, /, **fields: Any) -> StudyResult:
    """Run the study and write ``study.json`` and ``study.png`` into ``options.out`` (default ``study``)."""
    from isplit_export.distributed import job, merge_order
    from isplit_export.files import write_json

    opts = make_options(StudyOptions, options, fields)
    out = opts.out or Path("study")
    paths = [out / "study.json", out / "study.png"]
    with job(opts.distributed, opts.device) as current:  # under torchrun: the cuts are shared out
        ctx = prepare(opts)
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
    full = task_metric(ctx.y_full_held, ctx.y_full_held, ctx.labels_held, held_out=True, rnd=held_out_rounding)
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
        "summary": summarize(results, seed=opts.seed, reps=opts.ci_reps),
        "run": {
            "created": dt.datetime.now(dt.timezone.utc)
            .replace(microsecond=0)
            .isoformat()
            .replace("+00:00", "Z"),
            "host": platform.platform(),
            "torch": torch.__version__,
            "train_seconds": {str(res.index): res.train_seconds for res in results},
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
        right.errorbar(xs, ys, yerr=[lo, hi], color="#d1495b", marker="s", markersize=5, linestyle="-",
                       linewidth=1.0, capsize=3, label=f"held-out {metric} (95 % CI)")  # fmt: skip
        right.axhline(
            data["full_model"]["value"], color="#6c757d", linestyle="--", linewidth=0.8, label="full model"
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
