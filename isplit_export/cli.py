"""``isplit-export``: the command line over the jobs (rank, export, study, verify, plan), one sub-command each.

    isplit-export [MODEL] --top K --target TARGET --out DIR     export a verified bundle (main job)
    isplit-export rank MODEL [--data DIR] [--classes a,b] ...   I-Split ranking only
    isplit-export study MODEL [--cuts candidates|all] [--bottleneck 1/16|2KiB] [--data DIR] [--classes a,b]
    isplit-export verify BUNDLE [--backend onnxruntime|tensorrt] [--split N]
    isplit-export plan BUNDLE [--link L] [--objective O] [...]  re-plan a bundle for a link (torch-free)
    isplit-export serve BUNDLE [--split N|all] [--port P]       serve the tails (MLServer, gRPC + HTTP)
    isplit-export run BUNDLE --server H:P [--requests N]        head here, tail on the server: run.json
    isplit-export build-engines BUNDLE [--split N]              on the device (TensorRT)
    isplit-export targets | models

Exit codes: 0 passed, 1 a gate failed or the bundle was tampered with, 2 bad input, 3 technical
failure, 4 a check that could not run here (e.g. TensorRT without a GPU); ``run``: 5 no server at
--server, 6 requests failed after their retries (docs/serving.md).
"""

from __future__ import annotations

import contextlib
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from isplit_export.cli_bundle import build_engines_cmd, plan_cmd, verify_cmd
from isplit_export.cli_options import (
    BatchOpt,
    BootstrapOpt,
    BottleneckOpt,
    BoundaryKibOpt,
    ClassesOpt,
    DataOpt,
    DeviceOpt,
    DistributedOpt,
    FinetuneOpt,
    HeadFlopsOpt,
    ImagesOpt,
    LatencyOpt,
    ModelArg,
    ObjectiveOpt,
    ScoreOpt,
    SizeOpt,
    TopOpt,
    TrainBatchOpt,
    TrainStepsOpt,
    VerboseOpt,
    WeightsOpt,
    WorkersOpt,
    _bottleneck,
    _constraints,
    _given,
    _setup,
    _shown,
    _split_classes,
)
from isplit_export.cli_serving import run_cmd, serve_cmd
from isplit_export.errors import EXIT_GATE_FAILED, EXIT_TECHNICAL, IsplitError
from isplit_export.options import BottleneckOptions, ExportOptions, RankOptions, StudyOptions
from isplit_export.version import __version__

if TYPE_CHECKING:
    from isplit_export.ranking.candidates import Ranking

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Rank CNN split points with I-Split and export verified head/tail ONNX pairs for edge split computing.",
)

EXIT_INTERRUPTED = 130


@app.command("export")
def export_cmd(
    model: ModelArg = "efficientnet_lite0",
    top: Annotated[
        int | None,
        typer.Option(
            "--top", help="number of ranked splits to export", show_default=_shown(ExportOptions, "top")
        ),
    ] = None,
    target: Annotated[
        str | None,
        typer.Option(
            "--target",
            help="onnx, cpu, jetson, jetson-orin-nx, ... (see `targets`)",
            show_default=_shown(ExportOptions, "target"),
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="bundle directory to create")] = Path("bundle"),
    boundary: Annotated[
        str | None,
        typer.Option("--boundary", help="boundary encoding fp32|fp16|int8 (default: the target's)"),
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option("--precision", help="TensorRT engine precision fp32|fp16|int8 (default: the target's)"),
    ] = None,
    data: DataOpt = None,
    classes: ClassesOpt = None,
    weights: WeightsOpt = None,
    images: ImagesOpt = None,
    score: ScoreOpt = None,
    input_size: SizeOpt = None,
    golden: Annotated[
        int | None,
        typer.Option(
            "--golden",
            help="golden images stored per split",
            show_default=_shown(ExportOptions, "golden_images"),
        ),
    ] = None,
    verify_images: Annotated[
        int | None,
        typer.Option(
            "--verify-images",
            help="images for calibration and verification (in memory)",
            show_default=_shown(ExportOptions, "verify_images"),
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="replace an existing --out")] = False,
    strict: Annotated[bool, typer.Option("--strict/--no-strict", help="exit 1 when a gate fails")] = True,
    batch_size: BatchOpt = None,
    latency_runs: Annotated[
        int | None,
        typer.Option(
            "--latency-runs",
            help="timed runs per model for the latency table",
            show_default=_shown(ExportOptions, "latency_runs"),
        ),
    ] = None,
    bootstrap: BootstrapOpt = None,
    bottleneck: BottleneckOpt = None,
    finetune: FinetuneOpt = None,
    train_steps: TrainStepsOpt = None,
    train_batch: TrainBatchOpt = None,
    link: Annotated[
        str | None,
        typer.Option("--link", help="wifi|lte|5g|ethernet|<Mbit/s>[,<RTT ms>]: add the cost columns"),
    ] = None,
    objective: ObjectiveOpt = None,
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            help="target profile of the server running the tail",
            show_default=_shown(ExportOptions, "server"),
        ),
    ] = None,
    max_head_flops: HeadFlopsOpt = None,
    max_boundary_kib: BoundaryKibOpt = None,
    max_latency_ms: LatencyOpt = None,
    weights_layout: Annotated[
        str | None,
        typer.Option(
            "--weights-layout",
            help="shared (each weight once, in OUT/weights/) or inline",
            show_default=_shown(ExportOptions, "weights_layout"),
        ),
    ] = None,
    min_dla_fraction: Annotated[
        float | None,
        typer.Option(
            "--min-dla-fraction",
            help="plan a head on the DLA only if this share of its layers runs there",
            show_default=_shown(ExportOptions, "min_dla_fraction"),
        ),
    ] = None,
    summary_json: Annotated[
        Path | None,
        typer.Option("--summary-json", help="write the CI summary (isplit.summary/1) to this file"),
    ] = None,
    triton: Annotated[
        bool | None,
        typer.Option(
            "--triton/--no-triton", help="write OUT/triton/ (default: when the tail runs on a server)"
        ),
    ] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Rank MODEL, export its top-K splits for TARGET and verify them into the bundle --out."""
    from isplit_export.bundle.build import export

    _setup(verbose)
    options = ExportOptions(
        model=model,
        out=out,
        boundary=boundary,
        precision=precision,
        data=data,
        classes=_split_classes(classes),
        images=images,
        input_size=input_size,
        force=force,
        progress=sys.stderr.isatty(),
        link=link,
        bottleneck=_bottleneck(bottleneck, finetune, train_steps, train_batch),
        constraints=_constraints(max_head_flops, max_boundary_kib, max_latency_ms),
        summary_json=summary_json,
        triton=triton,
        **_given(
            top=top,
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
        ),
    )
    result = export(options)
    if result.ranked.ranking.cost is not None:
        from isplit_export.bundle.cost_table import format_cost_table

        typer.echo(format_cost_table(result.ranked.ranking.to_json()))
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
    typer.echo(result.manifest.verification.note)
    typer.echo(f"bundle written to {result.out} ({'verified' if result.passed else 'GATE FAILED'})")
    if not result.passed:
        for failure in result.failures:
            typer.echo(f"gate failed: {failure}", err=True)
        if strict:
            raise typer.Exit(EXIT_GATE_FAILED)


@app.command("rank")
def rank_cmd(
    model: ModelArg = "efficientnet_lite0",
    data: DataOpt = None,
    classes: ClassesOpt = None,
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
    from isplit_export.distributed import is_primary

    _setup(verbose)
    options = RankOptions(
        model=model,
        data=data,
        classes=_split_classes(classes),
        images=images,
        top=top,
        input_size=input_size,
        out=out,
        progress=sys.stderr.isatty(),
        workers=workers,
        distributed=distributed,
        **_given(
            weights=weights,
            score=score,
            batch_size=batch_size,
            device=device,
            bootstrap=bootstrap,
            force=force,
            probe_cuts=probe_cuts,
        ),
        bottleneck=_bottleneck(bottleneck, None, None, None),
    )
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


def probe_caveat(r: Ranking) -> str | None:
    """One line when the probe's code was fitted on too few images at some probed cuts (the deepest three named)."""
    probe = r.probe
    if probe is None or not (under := probe.underfitted()):
        return None
    named = "; ".join(f"cut {i}: {why}" for i, why in sorted(under.items(), key=lambda t: -t[0])[:3])
    return (
        f"the probe's code is fitted on too few images at {len(under)} of {len(probe.scores)} probed cuts "
        f"({probe.train_images} train images; {named}): pass more images (--data) for a probe that measures the cut"
    )


def probe_choice(r: Ranking) -> str | None:
    """One line when the probe would choose another cut than the CUI (None otherwise, or without a probe)."""
    if r.probe is None or not r.ranked(1):
        return None
    cui_pick, best = r.ranked(1)[0], r.probe.best()
    if best is None or best == cui_pick.index:
        return None
    s, c = r.probe.scores, r.cuts[best]
    mine = s.get(cui_pick.index)
    if mine is not None and mine["value"] is not None and mine["value"] >= s[best]["value"]:
        return None  # tied: the probe has no reason to move away from the CUI's choice
    theirs = f"{100 * mine['value']:.1f}%" if mine else "not probed"
    return (
        f"the probe at {r.probe.spec.text} would choose cut {best} ({c.node}, {s[best]['metric']} "
        f"{100 * s[best]['value']:.1f}%) over CUI's cut {cui_pick.index} ({cui_pick.node}, {theirs}): "
        "--objective probe exports it"
    )


@app.command("study")
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
            show_default=_shown(RankOptions, "seed"),
        ),
    ] = None,
    repeats: Annotated[
        int | None,
        typer.Option(
            "--repeats",
            help="bottlenecks trained per cut with different seeds",
            show_default=_shown(StudyOptions, "repeats"),
        ),
    ] = None,
    workers: WorkersOpt = None,
    distributed: DistributedOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Train a bottleneck at each cut, measure it on held-out images, and correlate CUI/CDE with it."""
    from isplit_export.bottleneck.study import study
    from isplit_export.distributed import is_primary

    _setup(verbose)
    options = StudyOptions(
        model=model,
        bottleneck=BottleneckOptions(
            **_given(size=bottleneck, finetune=finetune, train_steps=train_steps, train_batch=train_batch)
        ),
        data=data,
        classes=_split_classes(classes),
        images=images,
        input_size=input_size,
        out=out,
        progress=sys.stderr.isatty(),
        workers=workers,
        distributed=distributed,
        **_given(
            cuts=cuts,
            boundary=boundary,
            weights=weights,
            score=score,
            batch_size=batch_size,
            seed=seed,
            repeats=repeats,
        ),
    )
    result = study(options)
    if not is_primary():  # under torchrun, process 0 alone reports
        return
    from isplit_export.bottleneck.study_table import format_study

    typer.echo(format_study(result.data))
    typer.echo(f"wrote {result.paths[0]}, {result.paths[1]}")


# The bundle commands (cli_bundle) and the serving commands (cli_serving), registered here so that --help
# lists every command in this order.
app.command("verify")(verify_cmd)
app.command("plan")(plan_cmd)
app.command("serve")(serve_cmd)
app.command("run")(run_cmd)
app.command("build-engines")(build_engines_cmd)


@app.command("targets")
def targets_cmd() -> None:
    """List the deployment target profiles."""
    from isplit_export.targets.profiles import ALIASES, list_targets

    for t in list_targets():
        alias = [a for a, n in ALIASES.items() if n == t.name]
        extra = f" (alias: {', '.join(alias)})" if alias else ""
        trt = f"TensorRT {t.tensorrt_version}" if t.tensorrt_version else "onnxruntime"
        typer.echo(f"{t.name:20} {trt:16} {t.description}{extra}")


@app.command("models")
def models_cmd() -> None:
    """List the model names accepted (besides package.module:factory)."""
    from isplit_export.models import available_models

    typer.echo("\n".join(available_models()))


def _version(value: bool) -> None:
    if value:
        typer.echo(f"isplit-export {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    """Rank CNN split points with I-Split and export verified head/tail ONNX pairs."""


EXIT_TERMINATED = 143


class _Terminated:
    """Set by the SIGTERM handler; truthy once the signal came. ``commits``: :func:`outdir.commits` when the
    command started."""

    def __init__(self) -> None:
        from isplit_export.outdir import commits

        self.seen = False
        self.commits = commits()

    def __bool__(self) -> bool:
        return self.seen


def _handle_sigterm() -> _Terminated:
    """SIGTERM raises KeyboardInterrupt, so it takes Ctrl-C's path: temporary directories are removed,
    nothing half-written stays, and one line says what happened (exit 143)."""
    flag = _Terminated()

    def handler(signum: int, frame: object) -> None:
        flag.seen = True
        raise KeyboardInterrupt

    with contextlib.suppress(ValueError):  # not the main thread (e.g. called from a test runner thread)
        signal.signal(signal.SIGTERM, handler)
    return flag


def main(argv: list[str] | None = None) -> int:
    """Console entry point: the main job needs no sub-command (``isplit-export vgg16 --top 3``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    commands = {c.name for c in app.registered_commands}
    if args and args[0] not in commands and args[0] not in ("--help", "-h", "--version"):
        args.insert(0, "export")
    previous = signal.getsignal(signal.SIGTERM)
    terminated = _handle_sigterm()
    try:
        return _main(args, terminated)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM landing after the command had returned
        return _stopped(terminated)
    finally:
        with contextlib.suppress(ValueError, TypeError):
            signal.signal(signal.SIGTERM, previous)


def _main(args: list[str], terminated: _Terminated) -> int:
    try:
        rc = app(args=args, prog_name="isplit-export", standalone_mode=False)
    except (KeyboardInterrupt, typer.Abort):
        rc = EXIT_INTERRUPTED
    except IsplitError as err:
        if not getattr(err, "reported", False):  # a distributed job's process 0 has printed it already
            typer.echo(f"error: {err}", err=True)
        return err.exit_code
    except typer.Exit as ex:
        return int(ex.exit_code or 0)
    except typer.TyperException as err:  # usage errors: unknown option, bad value...
        show = getattr(err, "show", None)
        if callable(show):
            show()
        else:
            typer.echo(f"error: {err.format_message()}", err=True)
        return 0 if type(err).__name__ == "NoArgsIsHelpError" else err.exit_code
    except Exception as err:
        typer.echo(f"error: internal failure ({type(err).__name__}: {err}): please report it", err=True)
        return EXIT_TECHNICAL
    if terminated or rc == EXIT_INTERRUPTED:  # SIGTERM (timeout, CI cancellation, docker stop) or Ctrl-C
        return _stopped(terminated)
    return rc if isinstance(rc, int) else 0


def _stopped(terminated: _Terminated) -> int:
    """One line for a run stopped by SIGTERM (exit 143) or Ctrl-C (130), saying whether ``--out`` was put in
    place before the signal (then it is complete) or not (then nothing was written: temporaries are removed)."""
    from isplit_export.outdir import commits

    done = (
        "--out was complete before the signal"
        if commits() > terminated.commits
        else "nothing was written to --out"
    )
    typer.echo(f"error: {'terminated (SIGTERM)' if terminated else 'interrupted'}: {done}", err=True)
    return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
