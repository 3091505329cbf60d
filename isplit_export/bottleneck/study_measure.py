"""The study's measurement: the shared context and one measured cut.

* :func:`prepare` builds the :class:`StudyContext` from the rankings the study job computed (train/held-out
  split, the full model's outputs, the probe);
* :func:`measure_cut` is a pure function of (context, cut): its seed comes from
  ``(options.seed, cut.index)`` only, never from global state or the order the cuts run in, so the cuts
  can be shared out across processes. It trains a bottleneck (:mod:`isplit_export.bottleneck.core`)
  ``repeats`` times and measures the pair on the held-out images as a :class:`CutResult`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from isplit_export.bottleneck.core import code_shape, train
from isplit_export.errors import BadInputError
from isplit_export.models import forward_batched
from isplit_export.numbers import rounded
from isplit_export.stats import percentile_ci, two_level_replicates
from isplit_export.verification.checks import held_out_rounding, task_metric
from isplit_export.version import __version__

if TYPE_CHECKING:
    from isplit_export.bottleneck.probe import Probe
    from isplit_export.distributed import Job
    from isplit_export.options import StudyOptions
    from isplit_export.ranking.graph import Cut
    from isplit_export.ranking.ranked import RankResult


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


def prepare(
    options: StudyOptions,
    ranked: RankResult,
    class_ranked: RankResult | None = None,
    job: Job | None = None,
) -> StudyContext:
    """The study's context from ``ranked`` (all classes, no probe) and, with ``classes``, ``class_ranked``
    (the class subset's ranking): load the images, split train/held-out, run the probe on that split."""
    from isplit_export.bottleneck.holdout import split_holdout
    from isplit_export.class_labels import resolve_class_labels
    from isplit_export.distributed import images_tensor

    opts = options.replace(out=None)
    chosen = resolve_class_labels(opts)  # how the images are labelled (checked first by the study job)
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
        if class_ranked is None:
            raise ValueError("prepare: with classes, pass the class subset's ranking (class_ranked)")
        cls_rank = class_ranked
        cui_all, cui = cui, cls_rank.ranking.cui
        if chosen.keep is not None:  # the held-out images of the chosen class folders
            mask = np.array([names[i].split("/", 1)[0] in chosen.keep for i in held_idx], dtype=bool)
        else:
            keys = chosen.subset_for(opts.classes, ranked.model.class_names, ranked.model.num_classes)
            mask = np.isin(y_full.argmax(1), sorted(keys or []))
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
        "ci95": rounded_ci(ci)
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


def rounded_ci(ci: tuple[float, float] | None) -> list[float | None] | None:
    """A 95 % CI as written to ``study.json``: both bounds held-out rounded (``None`` stays ``None``)."""
    return None if ci is None else [held_out_rounding(ci[0]), held_out_rounding(ci[1])]


def study_head(ctx: StudyContext, schema: str) -> dict[str, Any]:
    """The keys that begin both study documents (``isplit.study/2`` and ``isplit.study-grid/1``): schema, tool,
    options, model, the images (how many trained and held out, whether labelled) and the full model's held-out
    metric."""
    r = ctx.ranked
    full = task_metric(
        ctx.y_full_held, ctx.y_full_held, ctx.labels_held, held_out=True, rnd=held_out_rounding
    )
    return {
        "schema": schema,
        "tool": {"name": "isplit-export", "version": __version__},
        "options": ctx.options.to_json(),
        "model": r.model.to_json(),
        "images": {
            "source": r.images.source,
            "train": len(ctx.x_train),
            "held_out": len(ctx.x_held),
            "labelled": bool((ctx.labels_held >= 0).all()),
            "labels": r.ranking.labels,
        },
        "full_model": {"metric": full["metric"], "value": full["full_model"]},
    }
