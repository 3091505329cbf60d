"""``isplit-export study``: train a bottleneck at each cut, measure it on held-out images, and print how
CUI/CDE correlate with it. ``cli`` registers it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from isplit_export.cli_options import (
    BatchOpt,
    ClassesOpt,
    ClassMapOpt,
    DataOpt,
    DistributedOpt,
    FinetuneOpt,
    ImagesOpt,
    ModelArg,
    ScoreOpt,
    SizeOpt,
    TrainBatchOpt,
    TrainStepsOpt,
    VerboseOpt,
    WeightsOpt,
    WorkersOpt,
    given,
    setup_logging,
    shown,
    split_classes,
)
from isplit_export.options import ClassMap, RankOptions, StudyOptions
from isplit_export.options_bottleneck import BottleneckOptions


def study_cmd(
    model: ModelArg = "efficientnet_lite0",
    # Left out, a flag takes StudyOptions' / BottleneckOptions' default.
    cuts: Annotated[
        str | None, typer.Option("--cuts", help="'candidates' (local maxima of the CUI, default) or 'all'")
    ] = None,
    bottleneck: Annotated[
        str | None,
        typer.Option(
            "--bottleneck",
            help="bottleneck at each cut: ratio of the boundary (default 1/16) or bytes (2KiB)",
        ),
    ] = None,
    finetune: FinetuneOpt = None,
    train_steps: TrainStepsOpt = None,
    train_batch: TrainBatchOpt = None,
    boundary: Annotated[
        str | None, typer.Option("--boundary", help="encoding of the code: int8 (default), fp16, fp32")
    ] = None,
    data: DataOpt = None,
    classes: ClassesOpt = None,
    class_map: ClassMapOpt = None,
    weights: WeightsOpt = None,
    images: ImagesOpt = None,
    score: ScoreOpt = None,
    input_size: SizeOpt = None,
    out: Annotated[Path, typer.Option("--out", help="write study.json and study.png here")] = Path("study"),
    batch_size: BatchOpt = None,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed",
            help="seed of the split, the training and the random baseline",
            show_default=shown(RankOptions, "seed"),
        ),
    ] = None,
    repeats: Annotated[
        int | None,
        typer.Option(
            "--repeats",
            help="bottlenecks trained per cut with different seeds",
            show_default=shown(StudyOptions, "repeats"),
        ),
    ] = None,
    workers: WorkersOpt = None,
    distributed: DistributedOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Train a bottleneck at each cut, measure it on held-out images, and correlate CUI/CDE with it."""
    from isplit_export.class_labels import announce
    from isplit_export.distributed import is_primary

    setup_logging(verbose)
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
        progress=sys.stderr.isatty(),
        workers=workers,
        distributed=distributed,
        **given(
            cuts=cuts,
            boundary=boundary,
            weights=weights,
            score=score,
            batch_size=batch_size,
            seed=seed,
            repeats=repeats,
        ),
    )
    announce(options)  # a class mismatch is refused before the study (and torch) loads
    from isplit_export.bottleneck.study import study

    result = study(options)
    if not is_primary():  # under torchrun, process 0 alone reports
        return
    from isplit_export.bottleneck.study_table import format_study

    typer.echo(format_study(result.data))
    typer.echo(f"wrote {result.paths[0]}, {result.paths[1]}")
