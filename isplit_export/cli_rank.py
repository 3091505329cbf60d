"""``isplit-export rank``: I-Split's ranking of every valid cut of a model (and the probe's score at a link
budget), printed as a table with the probe's lines. ``cli`` registers it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from isplit_export import progress
from isplit_export.cli_options import (
    FLAG,
    RANK,
    BatchOpt,
    BootstrapOpt,
    ClassesOpt,
    ClassMapOpt,
    DataOpt,
    DeviceOpt,
    DistributedOpt,
    GridServerOpt,
    GridTargetOpt,
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
from isplit_export.errors import BadInputError
from isplit_export.options import DEFAULT_TOP, ClassMap, CutSet, RankOptions
from isplit_export.options_grid import PairChoice

if TYPE_CHECKING:
    from isplit_export.bundle.grid_choice import GridChoice


def rank_cmd(
    model: ModelArg = "efficientnet_lite0",
    data: DataOpt = None,
    classes: ClassesOpt = None,
    class_map: ClassMapOpt = None,
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
    budgets: Annotated[
        str | None,
        typer.Option(
            "--budgets",
            help="a ladder of link budgets (16B..16KiB, 16B..1KiB*4, 16B,64B,1KiB; 16B.. ends at the fp16 "
            "boundary): the probe's rate-accuracy grid, printed and drawn (rate_accuracy.png)",
        ),
    ] = None,
    link: Annotated[
        str | None,
        typer.Option(
            "--link",
            help="wifi|lte|5g|ethernet|<Mbit/s>[,<RTT ms>]: price every (cut, budget) of the --budgets grid "
            "and print its Pareto front (pareto.png), or the pair --max-latency-ms / --min-accuracy choose",
        ),
    ] = None,
    target: GridTargetOpt = None,
    server: GridServerOpt = None,
    max_latency_ms: Annotated[
        float | None,
        typer.Option(
            "--max-latency-ms", help="with --link: the most accurate (cut, budget) within this many ms"
        ),
    ] = None,
    min_accuracy: Annotated[
        str | None,
        typer.Option(
            "--min-accuracy",
            help="with --link: the fastest (cut, budget) reaching this score (0.9) or share of the full model's (99%)",
        ),
    ] = None,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Rank every valid cut of MODEL by I-Split's cumulative Grad-CAM importance (CUI)."""
    from isplit_export.class_labels import announce
    from isplit_export.distributed import is_primary
    from isplit_export.jobs.rank import rank

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
            budgets=budgets,
        ),
        bottleneck=bottleneck_from_flags(bottleneck, None, None, None),
    )
    pair = pair_choice(
        budgets,
        link,
        **given(max_latency_ms=max_latency_ms, min_accuracy=min_accuracy, target=target, server=server),
    )
    announce(options)  # a class mismatch is refused before torch loads; agreement is said once
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
    chosen = None
    if r.rate_accuracy is not None:
        from isplit_export.bundle.grid_table import grid_lines

        written = r.to_json()
        for line in grid_lines(written):
            typer.echo(line)
        if pair is not None:
            chosen = choose_on_grid(written, r.model, pair, out)
    if out is not None:
        typer.echo(
            f"wrote {out / 'ranking.json'}, {out / 'cui.png'}, {out / 'cde.png'}"
            + (f", {out / 'probe.png'}" if r.probe is not None else "")
            + (f", {out / 'rate_accuracy.png'}" if r.rate_accuracy is not None else "")
            + (f", {out / 'pareto.png'}" if chosen is not None else "")
        )


def pair_choice(budgets: str | None, link: str | None, **flags: Any) -> PairChoice | None:
    """The (cut, budget) choice the flags ask for, checked before any model work (None without ``--link``)."""
    if link is None:
        if flags:
            raise BadInputError(
                f"{', '.join('--' + k.replace('_', '-') for k in flags)} "
                f"{'prices' if len(flags) == 1 else 'price'} the grid: add --link"
            )
        return None
    if budgets is None:
        raise BadInputError(
            "rank --link prices the probe's rate-accuracy grid: add --budgets (e.g. 16B..1KiB)"
        )
    return PairChoice(link=link, **flags)


def choose_on_grid(ranking: dict[str, Any], model: str, pair: PairChoice, out: Path | None) -> GridChoice:
    """Choose on the ranking's grid, print the choice (or the Pareto front) and draw ``pareto.png`` into ``out``."""
    from isplit_export.bundle.grid_choice import choose_pair
    from isplit_export.contract.rate_accuracy import grid_of
    from isplit_export.plots_rate import plot_pareto

    grid = grid_of(ranking)
    if grid is None:
        raise BadInputError("the ranking has no rate-accuracy grid: pass --budgets")
    choice = choose_pair(grid, pair)
    for line in choice.lines():
        typer.echo(line)
    if out is not None:
        plot_pareto(choice.to_json(), out / "pareto.png", model)
    return choice
