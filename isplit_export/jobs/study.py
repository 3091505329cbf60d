"""The study job (``isplit-export study``): I-Split's validation experiment, measured.

At every candidate cut (the CUI curve's local maxima), or at every cut, a bottleneck is trained
(:mod:`isplit_export.bottleneck.core`) and the pair's accuracy (labelled images) or agreement with the
full model (unlabelled) is measured on images held out from training. The study then asks how well
CUI predicted that measured value, next to CDE (the boundary size) and a random order.

:mod:`isplit_export.bottleneck.study_measure` prepares the context and measures one cut (a pure function
of context and cut, so the cuts can be shared out across processes);
:mod:`isplit_export.bottleneck.study_summary` holds the statistics (correlations with bootstrap CIs,
regret, CUI vs CDE); :mod:`isplit_export.bottleneck.study_figure` draws ``study.png``.

:func:`study` ranks (:mod:`isplit_export.jobs.rank`), runs the three and writes ``study.json`` (schema ``isplit.study/2``; everything but
its ``run`` block, which holds the training seconds, is byte-reproducible) and ``study.png``. With ``budgets``
it runs the grid study instead (:func:`study_grid`, :mod:`isplit_export.bottleneck.study_grid`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from isplit_export import progress
from isplit_export.bottleneck.study_figure import plot_study
from isplit_export.bottleneck.study_measure import CutResult, StudyContext, measure_cut, prepare, study_head
from isplit_export.bottleneck.study_summary import summarize_study
from isplit_export.class_labels import resolve_class_labels
from isplit_export.jobs.rank import rank
from isplit_export.numbers import rounded
from isplit_export.options import StudyOptions, make_options
from isplit_export.verification.checks import held_out_rounding
from isplit_export.version import run_stamp

if TYPE_CHECKING:
    from isplit_export.distributed import Job

SCHEMA = "isplit.study/2"
__all__ = ["SCHEMA", "StudyResult", "study", "study_context", "study_json"]


@dataclass
class StudyResult:
    """The written ``study.json`` content and the paths of the files."""

    data: dict[str, Any]
    results: list[CutResult]
    paths: list[Path]


def study(options: StudyOptions | str | None = None, /, **fields: Any) -> StudyResult:
    """Run the study and write ``study.json`` and ``study.png`` into ``options.out`` (default ``study``)."""
    from isplit_export.distributed import job

    opts = make_options(StudyOptions, options, fields)
    if opts.budgets is not None:  # the (cut, budget) grid study
        return study_grid(opts)
    out = opts.out or Path("study")
    paths = [out / "study.json", out / "study.png"]
    with job(opts.distributed, opts.device) as current:  # under torchrun: the cuts are shared out
        ctx = study_context(opts, current)
        progress.expect(len(ctx.cuts) * opts.repeats + 1)  # one training per cut and repeat; the write
        results = measure_shared(current, len(ctx.cuts), lambda i: measure_cut(ctx, ctx.cuts[i]))
        data = study_json(ctx, results)
        write_study(current, data, paths, plot_study)
    return StudyResult(data, results, paths)


def study_grid(opts: StudyOptions) -> StudyResult:
    """``study --budgets``: train the grid points (:mod:`isplit_export.bottleneck.study_grid`), write
    ``study.json`` (schema ``isplit.study-grid/1``) and ``study_rate.png``."""
    from isplit_export.bottleneck.study_grid import grid_study_json, measure_point, prepare_grid
    from isplit_export.bottleneck.study_grid_figure import plot_study_rate
    from isplit_export.distributed import job

    out = opts.out or Path("study")
    paths = [out / "study.json", out / "study_rate.png"]
    with job(opts.distributed, opts.device) as current:
        ranked = rank(
            opts.replace(
                out=None,
                bottleneck=None,
                budgets=None,
                link=None,
                target=None,
                server=None,
                max_latency_ms=None,
                grid_sample=None,
            )
        )
        gs = prepare_grid(opts, ranked, current)
        progress.expect(len(gs.points) * opts.repeats + 1)
        results = measure_shared(current, len(gs.points), lambda i: measure_point(gs, i))
        data = grid_study_json(gs, results)
        write_study(current, data, paths, plot_study_rate)
    return StudyResult(data, results, paths)


def measure_shared(current: Job, n: int, measure: Callable[[int], CutResult]) -> list[CutResult]:
    """Measure items ``0..n-1``, shared out across the job's processes; every process gets all results, in
    order."""
    from isplit_export.distributed import merge_order

    mine = [measure(i) for i in current.share(n)]
    return merge_order(current.gather(mine), n, current.world_size)


def write_study(
    current: Job, data: dict[str, Any], paths: list[Path], plot: Callable[[dict[str, Any], Path], None]
) -> None:
    """Write a study's document (``paths[0]``, with the job's ``distributed`` block when there is one) and its
    figure (``paths[1]``, drawn by ``plot``): on process 0, once every process is ok."""
    from isplit_export.files import write_json

    if current.describe() is not None:
        data["distributed"] = current.describe()

    def write() -> None:
        paths[0].parent.mkdir(parents=True, exist_ok=True)
        write_json(paths[0], data)
        plot(data, paths[1])

    progress.stage(f"write {paths[0].name} and {paths[1].name}")
    current.write(write)
    progress.done()


def study_context(options: StudyOptions, job: Job | None = None) -> StudyContext:
    """Rank (all classes, and the class subset with ``classes``; no probe: it runs on the study's split),
    then prepare the study's context (:func:`~isplit_export.bottleneck.study_measure.prepare`)."""
    opts = options.replace(out=None)
    resolve_class_labels(opts)  # every class mismatch before any model work
    ranked = rank(opts.replace(classes=None, bottleneck=None))
    class_ranked = rank(opts.replace(bottleneck=None)) if opts.classes else None
    return prepare(opts, ranked, class_ranked, job)


def study_json(ctx: StudyContext, results: Sequence[CutResult]) -> dict[str, Any]:
    """The ``isplit.study/2`` document; only its ``run`` block (seconds, host, date) varies between runs."""
    opts = ctx.options
    r = ctx.ranked
    return {
        **study_head(ctx, SCHEMA),
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
            **run_stamp(),
            "train_seconds": {str(res.index): res.train_seconds for res in results},
            "probe_seconds": None if ctx.probe is None else rounded(ctx.probe.seconds, 3, decimals=True),
        },
    }
