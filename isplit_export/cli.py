"""``isplit-export``: the command line, a thin layer over :mod:`isplit_export.api`.

    isplit-export [MODEL] --top K --target TARGET --out DIR     export a verified bundle (main job)
    isplit-export rank MODEL [--data DIR] [--classes a,b] ...   I-Split ranking only
    isplit-export study MODEL [--cuts candidates|all] [--bottleneck 1/16|2KiB] [--data DIR] [--classes a,b]
    isplit-export verify BUNDLE [--backend onnxruntime|tensorrt] [--split N]
    isplit-export plan BUNDLE --link L [--objective O] [...]    re-plan a bundle for a link (torch-free)
    isplit-export build-engines BUNDLE [--split N]              on the device (TensorRT)
    isplit-export targets | models

Exit codes: 0 passed, 1 a gate failed or the bundle was tampered with, 2 bad input, 3 technical
failure, 4 a check that could not run here (e.g. TensorRT without a GPU).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from isplit_export import __version__
from isplit_export.errors import EXIT_GATE_FAILED, EXIT_TECHNICAL, IsplitError
from isplit_export.ranking.bootstrap import DEFAULT_REPLICATES

if TYPE_CHECKING:
    from isplit_export.bundle.selection import Constraints
    from isplit_export.options import BottleneckOptions
    from isplit_export.ranking.candidates import Ranking

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Rank CNN split points with I-Split and export verified head/tail ONNX pairs for edge split computing.",
)

EXIT_INTERRUPTED = 130

ModelArg = Annotated[
    str, typer.Argument(help="efficientnet_lite0 (offline default), a torchvision model name, or package.module:factory")
]
DataOpt = Annotated[
    Path | None, typer.Option("--data", help="folder of images or of class sub-folders (default: skimage photos)")
]
ClassesOpt = Annotated[
    str | None, typer.Option("--classes", help="comma-separated class names or indices: class-specific CUI")
]
WeightsOpt = Annotated[
    str, typer.Option("--weights", help="'default' (pretrained), 'none' (random, seeded) or a state-dict path")
]
ImagesOpt = Annotated[int | None, typer.Option("--images", help="use at most N images")]
ScoreOpt = Annotated[str, typer.Option("--score", help="Grad-CAM target: 'top' predicted class or 'label'")]
TopOpt = Annotated[int, typer.Option("--top", help="number of ranked splits to report / export")]
SizeOpt = Annotated[int | None, typer.Option("--input-size", help="override the model's input crop size")]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="images per forward/backward pass")]
DeviceOpt = Annotated[str, typer.Option("--device", help="torch device for the ranking passes (cpu, cuda)")]
BootstrapOpt = Annotated[
    int, typer.Option("--bootstrap", help="Poisson-bootstrap replicates for CUI CIs and rank stability (0: off)")
]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="log progress details")]
WorkersOpt = Annotated[
    int | None, typer.Option("--workers", help="image decoding processes (default: min(4, CPUs - 1); 0: inline)")
]
DistributedOpt = Annotated[
    bool, typer.Option("--distributed", help="torch.distributed job (implied under torchrun with several processes)")
]
BottleneckOpt = Annotated[
    str | None,
    typer.Option("--bottleneck", help="learned bottleneck at each cut: ratio of the boundary (1/16) or bytes (2KiB)"),
]
FinetuneOpt = Annotated[str, typer.Option("--finetune", help="bottleneck training: 'none' (frozen model) or 'tail'")]
TrainStepsOpt = Annotated[int, typer.Option("--train-steps", help="bottleneck training steps (early stopping may end sooner)")]
TrainBatchOpt = Annotated[int, typer.Option("--train-batch", help="images per bottleneck training step")]


def _bottleneck(size: str | None, finetune: str, steps: int, batch: int) -> BottleneckOptions | None:
    """The BottleneckOptions of the flags (None without --bottleneck; --finetune etc. need it)."""
    from isplit_export.errors import BadInputError
    from isplit_export.options import BottleneckOptions

    if size is None:
        defaults = BottleneckOptions()
        if (finetune, steps, batch) != (defaults.finetune, defaults.train_steps, defaults.train_batch):
            BottleneckOptions(finetune=finetune, train_steps=steps, train_batch=batch)  # bad values first
            raise BadInputError("--finetune/--train-steps/--train-batch configure a bottleneck: add --bottleneck 1/16")
        return None
    return BottleneckOptions(size=size, finetune=finetune, train_steps=steps, train_batch=batch)


ObjectiveOpt = Annotated[
    str, typer.Option("--objective", help="cui (I-Split's ranking), latency, balanced (Pareto front of CUI vs latency), "
                      "or probe (the probe's score at --bottleneck)")
]
HeadFlopsOpt = Annotated[
    float | None, typer.Option("--max-head-flops", help="constraint: the head's share of the FLOPs, in (0, 1]")
]
BoundaryKibOpt = Annotated[float | None, typer.Option("--max-boundary-kib", help="constraint: boundary KiB per image")]
LatencyOpt = Annotated[float | None, typer.Option("--max-latency-ms", help="constraint: end-to-end ms per image")]


def _constraints(head: float | None, kib: float | None, ms: float | None) -> Constraints:
    from isplit_export.bundle.selection import Constraints

    return Constraints(max_head_flops=head, max_boundary_kib=kib, max_latency_ms=ms)


def _given(**values: Any) -> dict[str, Any]:
    """The options the user gave (None: the options dataclass's default applies)."""
    return {k: v for k, v in values.items() if v is not None}


def _split_classes(classes: str | None) -> tuple[str, ...] | None:
    return tuple(c.strip() for c in classes.split(",") if c.strip()) if classes else None


def _setup(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s: %(message)s", force=True)


@app.command("export")
def export_cmd(
    model: ModelArg = "efficientnet_lite0",
    top: TopOpt = 3,
    target: Annotated[str, typer.Option("--target", help="onnx, cpu, jetson, jetson-orin-nx, ... (see `targets`)")] = "onnx",
    out: Annotated[Path, typer.Option("--out", help="bundle directory to create")] = Path("bundle"),
    boundary: Annotated[
        str | None, typer.Option("--boundary", help="boundary encoding fp32|fp16|int8 (default: the target's)")
    ] = None,
    precision: Annotated[
        str | None, typer.Option("--precision", help="TensorRT engine precision fp32|fp16|int8 (default: the target's)")
    ] = None,
    data: DataOpt = None,
    classes: ClassesOpt = None,
    weights: WeightsOpt = "default",
    images: ImagesOpt = None,
    score: ScoreOpt = "top",
    input_size: SizeOpt = None,
    golden: Annotated[int, typer.Option("--golden", help="golden images stored per split")] = 4,
    verify_images: Annotated[
        int, typer.Option("--verify-images", help="images for calibration and verification (in memory)")
    ] = 256,
    force: Annotated[bool, typer.Option("--force", help="replace an existing --out")] = False,
    strict: Annotated[bool, typer.Option("--strict/--no-strict", help="exit 1 when a gate fails")] = True,
    batch_size: BatchOpt = 16,
    latency_runs: Annotated[int, typer.Option("--latency-runs", help="timed runs per model for the latency table")] = 30,
    bootstrap: BootstrapOpt = DEFAULT_REPLICATES,
    bottleneck: BottleneckOpt = None,
    finetune: FinetuneOpt = "none",
    train_steps: TrainStepsOpt = 64,
    train_batch: TrainBatchOpt = 8,
    link: Annotated[
        str | None, typer.Option("--link", help="wifi|lte|5g|ethernet|<Mbit/s>[,<RTT ms>]: add the cost columns")
    ] = None,
    objective: ObjectiveOpt = "cui",
    server: Annotated[str, typer.Option("--server", help="target profile of the server running the tail")] = "x86-tensorrt",
    max_head_flops: HeadFlopsOpt = None,
    max_boundary_kib: BoundaryKibOpt = None,
    max_latency_ms: LatencyOpt = None,
    weights_layout: Annotated[
        str, typer.Option("--weights-layout", help="shared (each weight once, in OUT/weights/) or inline")
    ] = "shared",
    summary_json: Annotated[
        Path | None, typer.Option("--summary-json", help="write the CI summary (isplit.summary/1) to this file")
    ] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Rank MODEL, export its top-K splits for TARGET and verify them into the bundle --out."""
    from isplit_export.bundle.build import export
    from isplit_export.options import ExportOptions

    _setup(verbose)
    options = ExportOptions(
        model=model, out=out, top=top, target=target, boundary=boundary, precision=precision, data=data,
        classes=_split_classes(classes), weights=weights, images=images, score=score, input_size=input_size,
        golden=golden, verify_images=verify_images, force=force, batch_size=batch_size, latency_runs=latency_runs,
        progress=sys.stderr.isatty(), bootstrap=bootstrap, link=link, objective=objective, server=server,
        bottleneck=_bottleneck(bottleneck, finetune, train_steps, train_batch),
        constraints=_constraints(max_head_flops, max_boundary_kib, max_latency_ms),
        weights_layout=weights_layout, summary_json=summary_json,
    )  # fmt: skip
    result = export(options)
    if result.rank.ranking.cost is not None:
        from isplit_export.bundle.planning import format_table

        typer.echo(format_table(result.rank.ranking.to_json()))
    else:
        typer.echo(result.rank.ranking.table(top))
    if objective == "cui" and (line := probe_choice(result.rank.ranking)) is not None:
        typer.echo(line)
    for split in result.manifest["splits"]:
        v = split["verification"]
        b = split["boundary"]
        task = v["checks"][b["encoding"]]["task"]
        ci = f" [{task['ci95'][0]:.1%}, {task['ci95'][1]:.1%}] on {task['images']} held-out images" if "ci95" in task else ""
        typer.echo(
            f"{split['dir']}: boundary {b['encoding']} {b['bytes_per_image']} B/image "
            f"(fp32 {b['fp32_bytes_per_image']} B), gates {'PASS' if v['passed'] else 'FAIL'}, "
            f"{task['metric']} {task['value']:.1%}{ci}"
        )
    typer.echo(result.manifest["verification"]["note"])
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
    weights: WeightsOpt = "default",
    images: ImagesOpt = None,
    score: ScoreOpt = "top",
    top: TopOpt = 5,
    input_size: SizeOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="write ranking.json, cui.png, cde.png here")] = None,
    batch_size: BatchOpt = 16,
    device: DeviceOpt = "cpu",
    workers: WorkersOpt = None,
    distributed: DistributedOpt = False,
    bootstrap: BootstrapOpt = DEFAULT_REPLICATES,
    bottleneck: Annotated[
        str | None, typer.Option("--bottleneck", help="link budget (64B, 1KiB, 1/16): add the probe's held-out score")
    ] = None,
    probe_cuts: Annotated[
        str | None, typer.Option("--probe-cuts", help="probe the 'candidates' (default) or 'all' cuts")
    ] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Rank every valid cut of MODEL by I-Split's cumulative Grad-CAM importance (CUI)."""
    from isplit_export.api import rank
    from isplit_export.distributed import is_primary
    from isplit_export.options import BottleneckOptions, RankOptions

    _setup(verbose)
    options = RankOptions(
        model=model, data=data, classes=_split_classes(classes), weights=weights, images=images, score=score, top=top,
        input_size=input_size, batch_size=batch_size, out=out, progress=sys.stderr.isatty(), device=device,
        workers=workers, distributed=distributed, bootstrap=bootstrap,
        bottleneck=_bottleneck(bottleneck, "none", BottleneckOptions.train_steps, BottleneckOptions.train_batch),
        **_given(probe_cuts=probe_cuts),
    )  # fmt: skip
    result = rank(options)
    if not is_primary():  # under torchrun, process 0 alone reports
        return
    r = result.ranking
    skipped = f" ({result.images.skipped} unreadable files skipped)" if result.images.skipped else ""
    typer.echo(f"{r.model} ({r.weights}), {r.images} images{skipped}, {len(r.cuts)} valid cuts, score={r.score}")
    typer.echo(r.table(top))
    if (line := probe_choice(r)) is not None:
        typer.echo(line)
    if out is not None:
        typer.echo(f"wrote {out / 'ranking.json'}, {out / 'cui.png'}, {out / 'cde.png'}"
                   + (f", {out / 'probe.png'}" if r.probe is not None else ""))  # fmt: skip


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
    return (f"the probe at {r.probe.spec.text} would choose cut {best} ({c.node}, {s[best]['metric']} "
            f"{100 * s[best]['value']:.1f}%) over CUI's cut {cui_pick.index} ({cui_pick.node}, {theirs}): "
            "--objective probe exports it")  # fmt: skip


@app.command("study")
def study_cmd(
    model: ModelArg = "efficientnet_lite0",
    cuts: Annotated[str, typer.Option("--cuts", help="'candidates' (local maxima of the CUI) or 'all'")] = "candidates",
    bottleneck: Annotated[
        str, typer.Option("--bottleneck", help="bottleneck at each cut: ratio of the boundary (1/16) or bytes (2KiB)")
    ] = "1/16",
    finetune: FinetuneOpt = "none",
    train_steps: TrainStepsOpt = 64,
    train_batch: TrainBatchOpt = 8,
    boundary: Annotated[str, typer.Option("--boundary", help="encoding of the code: int8 (default), fp16, fp32")] = "int8",
    data: DataOpt = None,
    classes: ClassesOpt = None,
    weights: WeightsOpt = "default",
    images: ImagesOpt = None,
    score: ScoreOpt = "top",
    input_size: SizeOpt = None,
    out: Annotated[Path, typer.Option("--out", help="write study.json and study.png here")] = Path("study"),
    batch_size: BatchOpt = 16,
    seed: Annotated[int, typer.Option("--seed", help="seed of the split, the training and the random baseline")] = 0,
    repeats: Annotated[
        int | None, typer.Option("--repeats", help="bottlenecks trained per cut with different seeds (default 3)")
    ] = None,
    workers: WorkersOpt = None,
    distributed: DistributedOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Train a bottleneck at each cut, measure it on held-out images, and correlate CUI/CDE with it."""
    from isplit_export.bottleneck.study import study
    from isplit_export.distributed import is_primary
    from isplit_export.options import BottleneckOptions, StudyOptions

    _setup(verbose)
    options = StudyOptions(
        model=model, cuts=cuts, bottleneck=BottleneckOptions(size=bottleneck, finetune=finetune,
        train_steps=train_steps, train_batch=train_batch), boundary=boundary, data=data,
        classes=_split_classes(classes), weights=weights, images=images, score=score, input_size=input_size,
        out=out, batch_size=batch_size, seed=seed, progress=sys.stderr.isatty(), workers=workers,
        distributed=distributed, **_given(repeats=repeats),
    )  # fmt: skip
    result = study(options)
    if not is_primary():  # under torchrun, process 0 alone reports
        return
    typer.echo(format_study(result.data))
    typer.echo(f"wrote {result.paths[0]}, {result.paths[1]}")


def format_study(data: dict[str, object]) -> str:
    """The study as a terminal table (per cut: CUI, sizes, the probe, the trained mean, its spread and CI)
    plus each predictor's correlations, regret and the differences that decide ``conclusive``."""
    import math
    from typing import cast

    d = cast("dict[str, Any]", data)
    s = d["summary"]
    metric = s["metric"] or "measured"
    rows = [f"{'cut':>4}  {'node':24} {'log10 CUI':>9}  {'fp32 B':>8}  {'code B':>7}  {'probe':>6}  "
            f"{metric + ' mean [95% CI]':>25}  {'sd':>5}  {'R':>2}"]  # fmt: skip
    for c in d["cuts"]:
        m = c["measured"]
        ci = f"{m['value']:.1%} [{m['ci95'][0]:.1%}, {m['ci95'][1]:.1%}]"
        lc = math.log10(c["cui"]) if c["cui"] else float("nan")
        pv = c.get("probe") or {}
        probe = f"{pv['value']:.1%}" if pv.get("value") is not None else "-"
        sd = f"{100 * m['sd']:.1f}" if m.get("sd") is not None else "-"
        rows.append(f"{c['index']:>4}  {c['node'][:24]:24} {lc:>9.3f}  {c['boundary_bytes']:>8}  {c['code_bytes']:>7}  "
                    f"{probe:>6}  {ci:>25}  {sd:>5}  {m.get('repeats', 1):>2}")  # fmt: skip
    for name, q in s["predictors"].items():
        sci, kci = q["spearman_ci95"], q["kendall_ci95"]
        pick = q.get("top_pick") or {}
        regret = f"  top pick cut {pick['index']}, regret {q['regret']:.1%}" if pick and q.get("regret") is not None else ""
        rows.append(f"{name.upper():6} Spearman {_f(q['spearman'])} {_fci(sci)}  Kendall {_f(q['kendall'])} {_fci(kci)}{regret}")
    for key, diff in (s.get("differences") or {}).items():
        a, b = key.split("-")
        verdict = f"conclusive: {diff['better']} better" if diff["conclusive"] else "CI contains 0: inconclusive"
        rows.append(f"Spearman {a.upper()} - {b.upper()} = {_f(diff['spearman_difference'])} {_fci(diff['ci95'])}  {verdict}")
    if "best" in s:
        rows.append(f"best measured cut: {s['best']['index']} ({s['best']['value']:.1%})")
    rows.append(s["note"])
    return "\n".join(rows)


def _f(v: object) -> str:
    return "n/a" if v is None else f"{float(v):+.3f}"  # type: ignore[arg-type]


def _fci(ci: object) -> str:
    if not isinstance(ci, list) or ci[0] is None:
        return "[n/a]"
    return f"[{ci[0]:+.2f}, {ci[1]:+.2f}]"


@app.command("verify")
def verify_cmd(
    bundle: Annotated[Path, typer.Argument(help="bundle directory written by isplit-export")],
    backend: Annotated[str, typer.Option("--backend", help="onnxruntime or tensorrt")] = "onnxruntime",
    split: Annotated[int | None, typer.Option("--split", help="only split N (1-based, as in splits/NN-*)")] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Re-hash every bundle file and re-run the golden inputs (torch-free: runs on the device)."""
    from isplit_export.verification.verify import format_table, verify_bundle

    _setup(verbose)
    result = verify_bundle(bundle, backend=backend, split=split)
    typer.echo(format_table(result))
    if not result.passed:
        raise typer.Exit(EXIT_GATE_FAILED)


@app.command("plan")
def plan_cmd(
    bundle: Annotated[Path, typer.Argument(help="bundle directory written by isplit-export")],
    link: Annotated[str, typer.Option("--link", help="wifi|lte|5g|ethernet|<Mbit/s>[,<RTT ms>]")],
    objective: Annotated[
        str | None, typer.Option("--objective", help="cui, latency or balanced (default: the export's)")
    ] = None,
    server: Annotated[
        str | None, typer.Option("--server", help="server profile for the tail (default: the export's)")
    ] = None,
    top: Annotated[int | None, typer.Option("--top", help="how many splits to select (default: the export's)")] = None,
    max_head_flops: HeadFlopsOpt = None,
    max_boundary_kib: BoundaryKibOpt = None,
    max_latency_ms: LatencyOpt = None,
    measured: Annotated[
        bool, typer.Option("--measured/--estimated", help="use the latencies measured so far, or estimates only")
    ] = True,
    verbose: VerboseOpt = False,
) -> None:
    """Re-plan an exported bundle for a link, objective or constraints, from its measured latencies (torch-free)."""
    from isplit_export.bundle.planning import plan

    _setup(verbose)
    if top is not None and top < 1:
        from isplit_export.errors import BadInputError

        raise BadInputError(f"--top {top}: pass a positive number of splits")
    result = plan(bundle, link=link, objective=objective, server=server, top=top, measured=measured,
                  constraints=None if (max_head_flops, max_boundary_kib, max_latency_ms) == (None, None, None)
                  else _constraints(max_head_flops, max_boundary_kib, max_latency_ms))  # fmt: skip
    typer.echo(result.table())
    if result.written is not None:
        typer.echo(f"wrote {result.written}")


@app.command("build-engines")
def build_engines_cmd(
    bundle: Annotated[Path, typer.Argument(help="bundle directory written with a TensorRT target")],
    split: Annotated[int | None, typer.Option("--split", help="only split N")] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Build the TensorRT engines of a bundle with the TensorRT 10 Python API (on the device)."""
    from isplit_export.targets.trt_backend import build_bundle_engines

    _setup(verbose)
    for record in build_bundle_engines(bundle, split):
        typer.echo(str(record))


@app.command("targets")
def targets_cmd() -> None:
    """List the deployment target profiles."""
    from isplit_export.targets.profiles import ALIASES, list_targets

    for t in list_targets():
        alias = [a for a, n in ALIASES.items() if n == t.name]
        extra = f" (alias: {', '.join(alias)})" if alias else ""
        typer.echo(f"{t.name:18} {t.description}{extra}")


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


def main(argv: list[str] | None = None) -> int:
    """Console entry point: the main job needs no sub-command (``isplit-export vgg16 --top 3``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    commands = {c.name for c in app.registered_commands}
    if args and args[0] not in commands and args[0] not in ("--help", "-h", "--version"):
        args.insert(0, "export")
    try:
        rc = app(args=args, prog_name="isplit-export", standalone_mode=False)
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
    if rc == EXIT_INTERRUPTED:  # typer turns Ctrl-C into Exit(130)
        typer.echo("error: interrupted: nothing was written to --out", err=True)
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    sys.exit(main())
