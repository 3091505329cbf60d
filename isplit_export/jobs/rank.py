"""The rank job, :func:`rank`: load the model and images, trace, compute the CUI, rank the candidates
(and the probe at a budget), write ``ranking.json`` and its figures with ``out``. The export and the study
start with it; every job is re-exported by ``isplit_export``.

    from isplit_export import ExportOptions, export, rank, verify_bundle
    result = rank("efficientnet_lite0", top=3)                 # I-Split ranking
    print(result.ranking.table())
    export("efficientnet_lite0", out="bundle", top=3, target="onnx")   # verified bundle
    export(ExportOptions(model="efficientnet_lite0", out="bundle"))      # the same, as one object
    verify_bundle("bundle")                                     # re-check a bundle anywhere
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from isplit_export import progress
from isplit_export.errors import BadInputError
from isplit_export.options import RankOptions, make_options
from isplit_export.options_bottleneck import HOLDOUT, parse_ladder
from isplit_export.ranking.ranked import RankResult

if TYPE_CHECKING:  # torch-free at import time: `import isplit_export.jobs.rank` needs no PyTorch
    from isplit_export.distributed import Job
    from isplit_export.ranking.candidates import Ranking

__all__ = ["RankResult", "rank", "write_ranking"]


def rank(options: RankOptions | str | None = None, /, **fields: Any) -> RankResult:
    """Rank every valid cut of the model by I-Split's CUI on the images (default: skimage photos).

    ``options`` is a :class:`RankOptions` (or a model name); keyword ``fields`` override its fields,
    so ``rank("resnet50", top=3)`` works. With ``options.out`` the ranking is written as
    ``ranking.json``, ``cui.png`` and ``cde.png`` there.
    """
    opts = make_options(RankOptions, options, fields)
    from isplit_export.class_labels import resolve_class_labels

    resolve_class_labels(opts)  # a class mismatch is refused before torch starts (again in _rank: cheap)
    from isplit_export.distributed import (
        job,  # lazy (here and below): torch; `isplit_export.rank` stays torch-free to import
    )

    with job(opts.distributed, opts.device) as current:  # one process, or one of a torchrun job
        return _rank(opts, current)


def _rank(opts: RankOptions, current: Job) -> RankResult:
    from isplit_export import data as data_mod
    from isplit_export.class_labels import resolve_class_labels
    from isplit_export.models import load_model
    from isplit_export.ranking.candidates import Ranking
    from isplit_export.ranking.graph import trace
    from isplit_export.ranking.importance import compute_importance

    _check_device(current.device)
    if opts.out is not None and current.primary:  # before any work: the same rule as export's --out
        from isplit_export.outdir import check_out

        check_out(opts.out, force=opts.force, allow_empty=True)
    labels = resolve_class_labels(opts)  # every class mismatch before the model is loaded
    progress.expect(4 + (opts.bottleneck is not None) + (opts.out is not None))
    progress.stage(f"load {opts.model} and the images")
    loaded = load_model(opts.model, opts.weights, input_size=opts.input_size, seed=opts.seed)
    labels.check_range(loaded.num_classes)
    subset = labels.subset_for(opts.classes, loaded.class_names, loaded.num_classes)
    imgs = data_mod.load_images(
        opts.data,
        loaded.preprocessing,
        class_names=loaded.class_names,
        classes=opts.classes,
        limit=opts.images,
        folder_labels=labels.labels if labels.folders else None,
    )
    progress.stage("trace the graph and its cuts")
    traced = trace(loaded.module, loaded.preprocessing.input_shape)
    imp = compute_importance(
        traced,
        imgs,
        score=opts.score,
        batch_size=opts.batch_size,
        device=current.device,
        progress=opts.progress and current.primary,
        shard=current.shard(opts.batch_size),
        workers=data_mod.default_workers() if opts.workers is None else opts.workers,
        bootstrap=opts.bootstrap,
        seed=opts.seed,
    )
    imp = current.reduce_importance(imp, imgs)
    progress.stage(f"rank the cuts ({opts.bootstrap} bootstrap replicates)")
    cui = imp.cui(subset)
    curves = (
        {"all images": imp.cui().tolist(), "selected classes": cui.tolist()} if subset is not None else None
    )
    c, h, w = loaded.preprocessing.input_shape
    ranking = Ranking(
        model=loaded.name,
        weights=loaded.weights,
        images=imp.images if subset is None else sum(imp.counts.get(k, 0) for k in subset),
        classes=list(opts.classes) if opts.classes else None,
        score=opts.score,
        cuts=traced.cuts,
        cui=cui,
        input_bytes=4 * c * h * w,
        top=opts.top,
        curves=curves,
        distributed=current.describe(),
        replicates=imp.replicate_cui(subset),
        bootstrap_seed=opts.seed if opts.bootstrap else None,
        total_flops=traced.total_flops,
        labels=labels.source,
    )
    if opts.bottleneck is not None:  # the probe at the link's budget (isplit_export.bottleneck.probe)
        from isplit_export.bottleneck.probe import probe_ranking

        progress.stage("probe the cuts at the budget")
        ranking.probe = probe_ranking(
            RankResult(opts, loaded, traced, imgs, ranking),
            opts.bottleneck.spec,
            opts.probe_cuts,
            encoding=getattr(opts, "boundary", None) or "int8",
            batch_size=opts.batch_size,
            seed=opts.seed,
            holdout=opts.bottleneck.holdout,
            max_images=getattr(opts, "verify_images", 2000),
            job=current,
        )
    if opts.budgets is not None:  # the probe at every budget of the ladder (bottleneck.rate_accuracy)
        from isplit_export.bottleneck.rate_accuracy import grid_ranking

        ranking.rate_accuracy = grid_ranking(
            RankResult(opts, loaded, traced, imgs, ranking),
            parse_ladder(opts.budgets),
            opts.probe_cuts,
            encoding=getattr(opts, "boundary", None) or "int8",
            batch_size=opts.batch_size,
            seed=opts.seed,
            holdout=opts.bottleneck.holdout if opts.bottleneck is not None else HOLDOUT,
            max_images=getattr(opts, "verify_images", 2000),
            job=current,
        )
    if opts.out is not None:
        out = opts.out
        progress.stage("write the ranking and plots")
        current.write(
            lambda: _write_rank_out(ranking, out, opts.force)
        )  # process 0, once every process is ok
    progress.done()
    return RankResult(opts, loaded, traced, imgs, ranking)


def _check_device(device: str) -> None:
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise BadInputError(f"--device {device!r} is not a torch device: use cpu or cuda") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BadInputError(f"--device {device}: no CUDA GPU is usable here: use --device cpu")


def _write_rank_out(ranking: Ranking, out: Path, force: bool) -> list[Path]:
    """``rank --out``: written in a temporary folder renamed to ``out`` (outdir.atomic_directory), which
    replaces only an empty folder or, with ``force``, a previous rank output or bundle of this tool."""
    from isplit_export.outdir import atomic_directory

    with atomic_directory(out, force=force, allow_empty=True) as tmp:
        write_ranking(ranking, tmp)
    return [out / p.name for p in sorted(out.iterdir())]


def write_ranking(ranking: Ranking, out: Path) -> list[Path]:
    """Write ``ranking.json``, ``cui.png``, ``cde.png`` (``probe.png`` with a budget, ``tradeoff.png`` with costs)."""
    from isplit_export.files import write_json
    from isplit_export.plots_cde import plot_cde
    from isplit_export.plots_cui import plot_cui

    out.mkdir(parents=True, exist_ok=True)
    data = ranking.to_json()
    paths = [out / "ranking.json", out / "cui.png", out / "cde.png"]
    write_json(paths[0], data)
    plot_cui(data, paths[1])
    plot_cde(data, paths[2])
    if ranking.probe is not None:  # the probe at the budget, next to the CUI
        from isplit_export.plots_probe import plot_probe

        paths.append(out / "probe.png")
        plot_probe(data, paths[-1])
    if ranking.cost is not None:  # the export was given a link: CUI against end-to-end latency
        from isplit_export.plots_tradeoff import plot_tradeoff

        paths.append(out / "tradeoff.png")
        plot_tradeoff(data, paths[-1])
    if ranking.rate_accuracy is not None:  # the probe at every budget: one curve per cut
        from isplit_export.plots_rate import plot_rate_accuracy

        paths.append(out / "rate_accuracy.png")
        plot_rate_accuracy(data, paths[-1])
    return paths
