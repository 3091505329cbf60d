"""``isplit-export``: the command line, a thin layer over :mod:`isplit_export.api`.

    isplit-export [MODEL] --top K --target TARGET --out DIR     export a verified bundle (main job)
    isplit-export rank MODEL [--data DIR] [--classes a,b] ...   I-Split ranking only
    isplit-export verify BUNDLE [--backend onnxruntime|tensorrt] [--split N]
    isplit-export build-engines BUNDLE [--split N]              on the device (TensorRT)
    isplit-export targets | models

Exit codes: 0 passed, 1 a gate failed or the bundle was tampered with, 2 bad input, 3 technical
failure, 4 a check that could not run here (e.g. TensorRT without a GPU).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from . import __version__
from .errors import EXIT_GATE_FAILED, EXIT_TECHNICAL, IsplitError

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
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="log progress details")]


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
    weights_layout: Annotated[
        str, typer.Option("--weights-layout", help="shared (each weight once, in OUT/weights/) or inline")
    ] = "shared",
    summary_json: Annotated[
        Path | None, typer.Option("--summary-json", help="write the CI summary (isplit.summary/1) to this file")
    ] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Rank MODEL, export its top-K splits for TARGET and verify them into the bundle --out."""
    from .bundle import export
    from .options import ExportOptions

    _setup(verbose)
    options = ExportOptions(
        model=model, out=out, top=top, target=target, boundary=boundary, precision=precision, data=data,
        classes=_split_classes(classes), weights=weights, images=images, score=score, input_size=input_size,
        golden=golden, verify_images=verify_images, force=force, batch_size=batch_size, latency_runs=latency_runs,
        progress=sys.stderr.isatty(), weights_layout=weights_layout, summary_json=summary_json,
    )  # fmt: skip
    result = export(options)
    typer.echo(result.rank.ranking.table(top))
    for split in result.manifest["splits"]:
        v = split["verification"]
        typer.echo(
            f"{split['dir']}: boundary {split['boundary']['encoding']} {split['boundary']['bytes_per_image']} B/image, "
            f"gates {'PASS' if v['passed'] else 'FAIL'}"
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
    verbose: VerboseOpt = False,
) -> None:
    """Rank every valid cut of MODEL by I-Split's cumulative Grad-CAM importance (CUI)."""
    from .api import rank
    from .options import RankOptions

    _setup(verbose)
    options = RankOptions(
        model=model, data=data, classes=_split_classes(classes), weights=weights, images=images, score=score, top=top,
        input_size=input_size, batch_size=batch_size, out=out, progress=sys.stderr.isatty(), device=device,
    )  # fmt: skip
    result = rank(options)
    r = result.ranking
    skipped = f" ({result.images.skipped} unreadable files skipped)" if result.images.skipped else ""
    typer.echo(f"{r.model} ({r.weights}), {r.images} images{skipped}, {len(r.cuts)} valid cuts, score={r.score}")
    typer.echo(r.table(top))
    if out is not None:
        typer.echo(f"wrote {out / 'ranking.json'}, {out / 'cui.png'}, {out / 'cde.png'}")


@app.command("verify")
def verify_cmd(
    bundle: Annotated[Path, typer.Argument(help="bundle directory written by isplit-export")],
    backend: Annotated[str, typer.Option("--backend", help="onnxruntime or tensorrt")] = "onnxruntime",
    split: Annotated[int | None, typer.Option("--split", help="only split N (1-based, as in splits/NN-*)")] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Re-hash every bundle file and re-run the golden inputs (torch-free: runs on the device)."""
    from .verify import format_table, verify_bundle

    _setup(verbose)
    result = verify_bundle(bundle, backend=backend, split=split)
    typer.echo(format_table(result))
    if not result.passed:
        raise typer.Exit(EXIT_GATE_FAILED)


@app.command("build-engines")
def build_engines_cmd(
    bundle: Annotated[Path, typer.Argument(help="bundle directory written with a TensorRT target")],
    split: Annotated[int | None, typer.Option("--split", help="only split N")] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Build the TensorRT engines of a bundle with the TensorRT 10 Python API (on the device)."""
    from .trt_backend import build_bundle_engines

    _setup(verbose)
    for record in build_bundle_engines(bundle, split):
        typer.echo(str(record))


@app.command("targets")
def targets_cmd() -> None:
    """List the deployment target profiles."""
    from .targets import ALIASES, list_targets

    for t in list_targets():
        alias = [a for a, n in ALIASES.items() if n == t.name]
        extra = f" (alias: {', '.join(alias)})" if alias else ""
        typer.echo(f"{t.name:18} {t.description}{extra}")


@app.command("models")
def models_cmd() -> None:
    """List the model names accepted (besides package.module:factory)."""
    from .models import available_models

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
