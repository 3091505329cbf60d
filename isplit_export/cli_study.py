"""``isplit-export study``: train a bottleneck at each cut, measure it on held-out images, and print how
CUI/CDE correlate with it. ``cli`` registers it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from isplit_export import progress
from isplit_export.cli_options import (
    BOTTLENECK,
    FLAG,
    RANK,
    BatchOpt,
    ClassesOpt,
    ClassMapOpt,
    DataOpt,
    DistributedOpt,
    FinetuneOpt,
    GridServerOpt,
    GridTargetOpt,
    ImagesOpt,
    ModelArg,
    QuietOpt,
    ScoreOpt,
    SizeOpt,
    TrainBatchOpt,
    TrainStepsOpt,
    VerboseOpt,
    WeightsOpt,
    WorkersOpt,
    given,
    setup_logging,
    split_classes,
)
from isplit_export.options import ClassMap, CutSet, Encoding, StudyOptions
from isplit_export.options_bottleneck import BottleneckOptions

STUDY = StudyOptions()
"""The study's defaults (its dataclass): each flag's default."""


def refuse_existing_study(out: Path, force: bool) -> None:
    """Refuse an ``--out`` that exists and holds files, unless ``--force``: a study is hours of training,
    never replaced by accident (a file in its place is refused even with ``--force``)."""
    from isplit_export.errors import BadInputError

    if out.exists() and not out.is_dir():
        raise BadInputError(f"--out {out} is a file, not a directory: choose another --out")
    if not force and out.is_dir() and any(out.iterdir()):
        raise BadInputError(
            f"study output {out} already exists: pass --force to replace it, or choose another --out"
        )


def study_cmd(
    model: ModelArg = "efficientnet_lite0",
    # Left out, a flag takes StudyOptions' / BottleneckOptions' default.
    cuts: Annotated[
        CutSet | None,
        typer.Option("--cuts", help="the CUI's local maxima or all cuts"),
    ] = STUDY.cuts,
    bottleneck: Annotated[
        str | None,
        typer.Option(
            "--bottleneck",
            help="bottleneck at each cut: ratio of the boundary (1/16) or bytes (2KiB)",
        ),
    ] = BOTTLENECK.size,
    finetune: FinetuneOpt = BOTTLENECK.finetune,
    train_steps: TrainStepsOpt = BOTTLENECK.train_steps,
    train_batch: TrainBatchOpt = BOTTLENECK.train_batch,
    boundary: Annotated[
        Encoding | None,
        typer.Option("--boundary", help="encoding of the code"),
    ] = STUDY.boundary,
    data: DataOpt = None,
    classes: ClassesOpt = None,
    class_map: ClassMapOpt = None,
    weights: WeightsOpt = RANK.weights,
    images: ImagesOpt = None,
    score: ScoreOpt = RANK.score,
    input_size: SizeOpt = None,
    out: Annotated[Path, typer.Option("--out", help="write study.json and study.png here")] = Path("study"),
    force: Annotated[
        bool, typer.Option("--force", help="replace the study in an existing --out", metavar=FLAG)
    ] = False,
    batch_size: BatchOpt = RANK.batch_size,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed",
            help="seed of the split, the training and the random baseline",
        ),
    ] = RANK.seed,
    repeats: Annotated[
        int | None,
        typer.Option(
            "--repeats",
            help="bottlenecks trained per cut with different seeds",
        ),
    ] = STUDY.repeats,
    budgets: Annotated[
        str | None,
        typer.Option(
            "--budgets",
            help="a ladder of link budgets (16B..1KiB): train at the probe's (cut, budget) grid points instead, "
            "and test its choice (study.json, study_rate.png)",
        ),
    ] = STUDY.budgets,
    link: Annotated[
        str | None,
        typer.Option(
            "--link", help="with --budgets: price the grid on wifi|lte|5g|ethernet|<Mbit/s>[,<RTT ms>]"
        ),
    ] = STUDY.link,
    target: GridTargetOpt = STUDY.target,
    server: GridServerOpt = STUDY.server,
    max_latency_ms: Annotated[
        float | None,
        typer.Option(
            "--max-latency-ms", help="with --link: the probe chooses the most accurate point within this"
        ),
    ] = STUDY.max_latency_ms,
    sample: Annotated[
        int | None,
        typer.Option(
            "--sample",
            help="with --link: train the Pareto front, the chosen point and this many other points drawn at "
            "random (default: every point)",
        ),
    ] = STUDY.grid_sample,
    workers: WorkersOpt = None,
    distributed: DistributedOpt = False,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train a bottleneck at each cut, measure it on held-out images, and correlate CUI/CDE with it."""
    from isplit_export.class_labels import announce
    from isplit_export.distributed import is_primary

    setup_logging(verbose)
    refuse_existing_study(out, force)
    options = StudyOptions(
        model=model,
        bottleneck=BottleneckOptions(
            **given(size=bottleneck, finetune=finetune, train_steps=train_steps, train_batch=train_batch)
        ),
        data=data,
        classes=split_classes(classes),
        class_map=None if class_map is None else ClassMap.read(class_map),
        images=images,
        input_size=input_size,
        out=out,
        progress=not quiet,
        workers=workers,
        distributed=distributed,
        force=force,
        **given(
            cuts=cuts,
            boundary=boundary,
            weights=weights,
            score=score,
            batch_size=batch_size,
            seed=seed,
            repeats=repeats,
        ),
        budgets=budgets,
        link=link,
        target=target,
        server=server,
        max_latency_ms=max_latency_ms,
        grid_sample=sample,
    )
    announce(options)  # a class mismatch is refused before the study (and torch) loads
    from isplit_export.jobs.study import study

    with progress.stages(quiet=quiet):
        result = study(options)
    if not is_primary():  # under torchrun, process 0 alone reports
        return
    if budgets is not None:
        from isplit_export.bottleneck.study_grid_summary import format_grid_study

        typer.echo(format_grid_study(result.data))
    else:
        from isplit_export.bottleneck.study_table import format_study

        typer.echo(format_study(result.data))
    typer.echo(f"wrote {result.paths[0]}, {result.paths[1]}")
