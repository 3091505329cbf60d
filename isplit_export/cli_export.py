"""``isplit-export [export]``, the main job: rank MODEL, export its top-K splits for a target, verify them into a
bundle, and print the cost or ranking table, the probe's lines and one line per split. ``cli`` registers it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from isplit_export import progress
from isplit_export.cli_options import (
    BOTTLENECK,
    EXPORT,
    FLAG,
    RANK,
    BatchOpt,
    BootstrapOpt,
    BottleneckOpt,
    BoundaryKibOpt,
    ClassesOpt,
    DataOpt,
    FinetuneOpt,
    HeadFlopsOpt,
    ImagesOpt,
    LatencyOpt,
    ModelArg,
    ObjectiveOpt,
    QuietOpt,
    ScoreOpt,
    SizeOpt,
    TargetName,
    TopOpt,
    TrainBatchOpt,
    TrainStepsOpt,
    VerboseOpt,
    WeightsOpt,
    bottleneck_from_flags,
    constraints_from_flags,
    given,
    setup_logging,
    split_classes,
)
from isplit_export.cli_probe import probe_caveat, probe_choice
from isplit_export.errors import EXIT_GATE_FAILED, BadInputError
from isplit_export.options import DEFAULT_TOP, CutSet, Encoding, ExportOptions, WeightsLayout
from isplit_export.options_bottleneck import BottleneckOptions

if TYPE_CHECKING:
    from isplit_export.contract import Manifest


def pair_bottleneck(
    size: str | None, finetune: str | None, steps: int | None, batch: int | None
) -> BottleneckOptions:
    """With ``--budgets`` the chosen budget sizes the bottleneck: only its training flags are taken."""
    if size is not None:
        raise BadInputError(
            f"--bottleneck {size}: with --budgets the target chooses the code size: drop --bottleneck"
        )
    return BottleneckOptions(**given(finetune=finetune, train_steps=steps, train_batch=batch))


def export_cmd(
    model: ModelArg = "efficientnet_lite0",
    top: TopOpt = DEFAULT_TOP,
    target: Annotated[
        TargetName | None,
        typer.Option(
            "--target",
            help="the device running the head (isplit-export targets describes them)",
        ),
    ] = EXPORT.target,
    out: Annotated[Path, typer.Option("--out", help="bundle directory to create")] = Path("bundle"),
    boundary: Annotated[
        Encoding | None,
        typer.Option("--boundary", help="boundary encoding", show_default="the target's"),
    ] = None,
    precision: Annotated[
        Encoding | None,
        typer.Option("--precision", help="TensorRT engine precision", show_default="the target's"),
    ] = None,
    data: DataOpt = None,
    classes: ClassesOpt = None,
    weights: WeightsOpt = RANK.weights,
    images: ImagesOpt = None,
    score: ScoreOpt = RANK.score,
    input_size: SizeOpt = None,
    golden: Annotated[
        int | None,
        typer.Option(
            "--golden",
            help="golden images stored per split",
        ),
    ] = EXPORT.golden_images,
    verify_images: Annotated[
        int | None,
        typer.Option(
            "--verify-images",
            help="images for calibration and verification (in memory)",
        ),
    ] = EXPORT.verify_images,
    force: Annotated[bool, typer.Option("--force", help="replace an existing --out", metavar=FLAG)] = False,
    strict: Annotated[
        bool, typer.Option("--strict/--no-strict", help="exit 1 when a gate fails", metavar=FLAG)
    ] = True,
    batch_size: BatchOpt = RANK.batch_size,
    latency_runs: Annotated[
        int | None,
        typer.Option(
            "--latency-runs",
            help="timed runs per model for the latency table",
        ),
    ] = EXPORT.latency_runs,
    bootstrap: BootstrapOpt = RANK.bootstrap,
    bottleneck: BottleneckOpt = None,
    finetune: FinetuneOpt = BOTTLENECK.finetune,
    train_steps: TrainStepsOpt = BOTTLENECK.train_steps,
    train_batch: TrainBatchOpt = BOTTLENECK.train_batch,
    link: Annotated[
        str | None,
        typer.Option("--link", help="wifi|lte|5g|ethernet|<Mbit/s>[,<RTT ms>]: add the cost columns"),
    ] = None,
    objective: ObjectiveOpt = EXPORT.objective,
    server: Annotated[
        TargetName | None,
        typer.Option(
            "--server",
            help="target profile of the server running the tail",
        ),
    ] = EXPORT.server,
    max_head_flops: HeadFlopsOpt = None,
    max_boundary_kib: BoundaryKibOpt = None,
    max_latency_ms: LatencyOpt = None,
    budgets: Annotated[
        str | None,
        typer.Option(
            "--budgets",
            help="with --link and --max-latency-ms or --min-accuracy: export the (cut, budget) of the probe's "
            "rate-accuracy grid (16B..1KiB) the target chooses, as one split with a bottleneck at that budget",
        ),
    ] = None,
    probe_cuts: Annotated[
        CutSet | None,
        typer.Option(
            "--probe-cuts", help="with --budgets: the grid at the CUI's local maxima or at all cuts"
        ),
    ] = RANK.probe_cuts,
    min_accuracy: Annotated[
        str | None,
        typer.Option(
            "--min-accuracy",
            help="with --budgets: export the fastest (cut, budget) reaching this score (0.9) or share of the "
            "full model's (99%)",
        ),
    ] = None,
    weights_layout: Annotated[
        WeightsLayout | None,
        typer.Option(
            "--weights-layout",
            help="shared (each weight once, in OUT/weights/) or inline",
        ),
    ] = EXPORT.weights_layout,
    min_dla_fraction: Annotated[
        float | None,
        typer.Option(
            "--min-dla-fraction",
            help="plan a head on the DLA only if this share of its layers runs there",
        ),
    ] = EXPORT.min_dla_fraction,
    summary_json: Annotated[
        Path | None,
        typer.Option("--summary-json", help="write the CI summary (isplit.summary/1) to this file"),
    ] = None,
    triton: Annotated[
        bool | None,
        typer.Option(
            "--triton/--no-triton",
            help="write OUT/triton/",
            show_default="when the tail runs on a server",
            metavar=FLAG,
        ),
    ] = None,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Rank MODEL, export its top-K splits for TARGET and verify them into the bundle --out."""
    from isplit_export.jobs.export import export

    setup_logging(verbose)
    options = ExportOptions(
        model=model,
        out=out,
        boundary=boundary,
        precision=precision,
        data=data,
        classes=split_classes(classes),
        images=images,
        input_size=input_size,
        force=force,
        progress=not quiet,
        link=link,
        bottleneck=pair_bottleneck(bottleneck, finetune, train_steps, train_batch)
        if budgets is not None
        else bottleneck_from_flags(bottleneck, finetune, train_steps, train_batch),
        budgets=budgets,
        min_accuracy=min_accuracy,
        constraints=constraints_from_flags(max_head_flops, max_boundary_kib, max_latency_ms),
        summary_json=summary_json,
        triton=triton,
        top=top,
        **given(
            target=target,
            weights=weights,
            score=score,
            golden_images=golden,
            verify_images=verify_images,
            batch_size=batch_size,
            latency_runs=latency_runs,
            bootstrap=bootstrap,
            objective=objective,
            server=server,
            weights_layout=weights_layout,
            min_dla_fraction=min_dla_fraction,
            probe_cuts=probe_cuts,
        ),
    )
    with progress.stages(quiet=quiet):
        result = export(options)
    if result.ranked.ranking.cost is not None:
        from isplit_export.bundle.cost_table import format_cost_table
        from isplit_export.contract import RankingFile

        typer.echo(format_cost_table(RankingFile.from_json(result.ranked.ranking.to_json())))
    else:
        typer.echo(result.ranked.ranking.table(options.top))
    if options.objective == "cui" and (line := probe_choice(result.ranked.ranking)) is not None:
        typer.echo(line)
    if (line := probe_caveat(result.ranked.ranking)) is not None:
        typer.echo(line)
    for split in result.manifest.splits:
        b = split.boundary
        task = split.task(str(b.encoding))
        ci = (
            f" [{task.ci95[0]:.1%}, {task.ci95[1]:.1%}] on {task.images} held-out images" if task.ci95 else ""
        )
        typer.echo(
            f"{split.dir}: boundary {b.encoding} {b.bytes_per_image} B/image "
            f"(fp32 {b.fp32_bytes_per_image} B), gates {'PASS' if split.verification and split.verification.passed else 'FAIL'}, "
            f"{task.metric} {task.value or 0.0:.1%}{ci}"
        )
    if (g := result.manifest.grid_choice) is not None:
        from isplit_export.bundle.grid_export import verdict_line

        typer.echo(
            f"chosen on the grid: cut {g.cut} ({g.node}) at {g.budget}B, predicted {g.metric} "
            f"{g.predicted.accuracy:.1%} in {g.predicted.total_ms:.3f} ms, measured {g.measured.accuracy:.1%} "
            f"(code {g.measured.code_bytes} B, {g.measured.total_ms:.3f} ms estimated)"
        )
        typer.echo(verdict_line(g))
    typer.echo(result.manifest.verification.note)
    typer.echo(
        f"bundle written to {result.out} ({'verified' if result.passed else 'GATE FAILED'}): "
        f"{_size_line(result.manifest)}"
    )
    if result.passed:
        from isplit_export.bundle.next_steps import format_next_steps

        m = result.manifest
        steps = format_next_steps(
            m.block("target"), m.block("options"), bool(m.block("triton")), str(out), m.sha256
        )
        typer.echo("\n".join(steps))
    if not result.passed:
        for failure in result.failures:
            typer.echo(f"gate failed: {failure}", err=True)
        if strict:
            raise typer.Exit(EXIT_GATE_FAILED)


def _size_line(m: Manifest) -> str:
    """The bundle's size on disk (each file once), and without ``triton/`` when it has one."""
    from isplit_export.bundle.summary import disk_bytes

    on_disk, without_triton = disk_bytes(m)
    size = f"{on_disk / 1e6:.1f} MB on disk"
    return size if not m.block("triton") else f"{size}, {without_triton / 1e6:.1f} MB without triton/"
