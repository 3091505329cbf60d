"""``isplit-export rank``: I-Split's ranking of every valid cut of a model (and the probe's score at a link
budget), printed as a table with the probe's lines. ``cli`` registers it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from isplit_export.cli_options import (
    BatchOpt,
    BootstrapOpt,
    ClassesOpt,
    ClassMapOpt,
    DataOpt,
    DeviceOpt,
    DistributedOpt,
    ImagesOpt,
    ModelArg,
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
from isplit_export.options import ClassMap, RankOptions


def rank_cmd(
    model: ModelArg = "efficientnet_lite0",
    data: DataOpt = None,
    classes: ClassesOpt = None,
    class_map: ClassMapOpt = None,
    weights: WeightsOpt = None,
    images: ImagesOpt = None,
    score: ScoreOpt = None,
    top: TopOpt = 5,
    input_size: SizeOpt = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="write ranking.json, cui.png, cde.png here")
    ] = None,
    force: Annotated[
        bool | None,
        typer.Option("--force", help="replace an existing --out (only a rank output or bundle of this tool)"),
    ] = None,
    batch_size: BatchOpt = None,
    device: DeviceOpt = None,
    workers: WorkersOpt = None,
    distributed: DistributedOpt = False,
    bootstrap: BootstrapOpt = None,
    bottleneck: Annotated[
        str | None,
        typer.Option("--bottleneck", help="link budget (64B, 1KiB, 1/16): add the probe's held-out score"),
    ] = None,
    probe_cuts: Annotated[
        str | None, typer.Option("--probe-cuts", help="probe the 'candidates' (default) or 'all' cuts")
    ] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Rank every valid cut of MODEL by I-Split's cumulative Grad-CAM importance (CUI)."""
    from isplit_export.api import rank
    from isplit_export.class_labels import announce
    from isplit_export.distributed import is_primary

    setup_logging(verbose)
    options = RankOptions(
        model=model,
        data=data,
        classes=split_classes(classes),
        class_map=None if class_map is None else ClassMap.read(class_map),
        images=images,
        top=top,
        input_size=input_size,
        out=out,
        progress=sys.stderr.isatty(),
        workers=workers,
        distributed=distributed,
        **given(
            weights=weights,
            score=score,
            batch_size=batch_size,
            device=device,
            bootstrap=bootstrap,
            force=force,
            probe_cuts=probe_cuts,
        ),
        bottleneck=bottleneck_from_flags(bottleneck, None, None, None),
    )
    announce(options)  # a class mismatch is refused before torch loads; agreement is said once
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
