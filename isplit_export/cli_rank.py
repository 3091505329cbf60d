"""``isplit-export rank``: I-Split's ranking of every valid cut of a model (and the probe's score at a link
budget), printed as a table with the probe's lines. ``cli`` registers it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from isplit_export import progress
from isplit_export.cli_options import (
    FLAG,
    RANK,
    BatchOpt,
    BootstrapOpt,
    ClassesOpt,
    DataOpt,
    DeviceOpt,
    DistributedOpt,
    ImagesOpt,
    ModelArg,
    QuietOpt,
    ScoreOpt,
    SizeOpt,
    TopOpt,
    VerboseOpt,
    WeightsOpt,
    WorkersOpt,
    bottleneck_from_flags,
    given,
    setup_logging,
    split_classes,
)
from isplit_export.cli_probe import probe_caveat, probe_choice
from isplit_export.options import DEFAULT_TOP, CutSet, RankOptions


def rank_cmd(
    model: ModelArg = "efficientnet_lite0",
    data: DataOpt = None,
    classes: ClassesOpt = None,
    weights: WeightsOpt = RANK.weights,
    images: ImagesOpt = None,
    score: ScoreOpt = RANK.score,
    top: TopOpt = DEFAULT_TOP,
    input_size: SizeOpt = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="write ranking.json, cui.png, cde.png here")
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="replace an existing --out (only a rank output or bundle of this tool)",
            metavar=FLAG,
        ),
    ] = False,
    batch_size: BatchOpt = RANK.batch_size,
    device: DeviceOpt = RANK.device,
    workers: WorkersOpt = None,
    distributed: DistributedOpt = False,
    bootstrap: BootstrapOpt = RANK.bootstrap,
    bottleneck: Annotated[
        str | None,
        typer.Option("--bottleneck", help="link budget (64B, 1KiB, 1/16): add the probe's held-out score"),
    ] = None,
    probe_cuts: Annotated[
        CutSet | None,
        typer.Option(
            "--probe-cuts",
            help="probe the CUI's local maxima or all cuts",
        ),
    ] = RANK.probe_cuts,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Rank every valid cut of MODEL by I-Split's cumulative Grad-CAM importance (CUI)."""
    from isplit_export.distributed import is_primary
    from isplit_export.jobs.rank import rank

    setup_logging(verbose)
    options = RankOptions(
        model=model,
        data=data,
        classes=split_classes(classes),
        images=images,
        top=top,
        input_size=input_size,
        out=out,
        progress=not quiet,
        workers=workers,
        distributed=distributed,
        force=force,
        **given(
            weights=weights,
            score=score,
            batch_size=batch_size,
            device=device,
            bootstrap=bootstrap,
            probe_cuts=probe_cuts,
        ),
        bottleneck=bottleneck_from_flags(bottleneck, None, None, None),
    )
    with progress.stages(quiet=quiet):
        result = rank(options)
    if not is_primary():  # under torchrun, process 0 alone reports
        return
    r = result.ranking
    skipped = f" ({result.images.skipped} unreadable files skipped)" if result.images.skipped else ""
    typer.echo(
        f"{r.model} ({r.weights}), {r.images} images{skipped}, {len(r.cuts)} valid cuts, score={r.score}"
    )
    typer.echo(r.table(top))
    for line in (probe_choice(r), probe_caveat(r)):
        if line is not None:
            typer.echo(line)
    if out is not None:
        typer.echo(
            f"wrote {out / 'ranking.json'}, {out / 'cui.png'}, {out / 'cde.png'}"
            + (f", {out / 'probe.png'}" if r.probe is not None else "")
        )
