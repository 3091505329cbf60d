"""``isplit-export``: the command line over the jobs (rank, export, study, verify, plan), one sub-command each.

    isplit-export [MODEL] --top K --target TARGET --out DIR     export a verified bundle (main job)
    isplit-export rank MODEL [--data DIR] [--classes a,b] ...   I-Split ranking only
    isplit-export study MODEL [--cuts candidates|all] [--bottleneck 1/16|2KiB] [--data DIR] [--classes a,b]
    isplit-export verify BUNDLE [--backend onnxruntime|tensorrt] [--split N]
    isplit-export plan BUNDLE [--link L] [--objective O] [...]  re-plan a bundle for a link (torch-free)
    isplit-export serve BUNDLE [--split N] [--port P]           serve the tails (MLServer, gRPC + HTTP)
    isplit-export run BUNDLE --url H:P [--requests N]           head here, tail on the server: run.json
    isplit-export build-engines BUNDLE [--split N]              on the device (TensorRT)
    isplit-export targets | models

Exit codes: 0 passed, 1 a gate failed or the bundle was tampered with, 2 bad input, 3 technical
failure, 4 a check that could not run here (e.g. TensorRT without a GPU); ``run``: 5 no server at
--url, 6 requests failed after their retries (docs/serving.md).
"""

from __future__ import annotations

import contextlib
import signal
import sys
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup, TyperOption

from isplit_export.backend_names import ONNXRUNTIME
from isplit_export.cli_bundle import build_engines_cmd, plan_cmd, verify_cmd
from isplit_export.cli_export import export_cmd
from isplit_export.cli_names import check_command, listed_models, usage_line
from isplit_export.cli_rank import rank_cmd
from isplit_export.cli_serving import run_cmd, serve_cmd
from isplit_export.cli_study import study_cmd
from isplit_export.errors import EXIT_TECHNICAL, IsplitError
from isplit_export.version import __version__

HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}
"""``-h`` and ``--help`` on the app and every command (click hands them down to each sub-command)."""


def _no_metavar(option: TyperOption | None) -> TyperOption | None:
    if option is not None:
        option.metavar = ""  # -h takes no value: no <bool> in --help
    return option


class _Group(TyperGroup):
    """The app: its ``-h`` shows no ``<bool>``, as no on/off flag does."""

    def get_help_option(self, ctx: Any) -> TyperOption | None:
        return _no_metavar(super().get_help_option(ctx))


class _Command(TyperCommand):
    """A command: its ``-h`` shows no ``<bool>``, as no on/off flag does."""

    def get_help_option(self, ctx: Any) -> TyperOption | None:
        return _no_metavar(super().get_help_option(ctx))


app = typer.Typer(
    cls=_Group,
    add_completion=False,
    context_settings=HELP_OPTIONS,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Rank CNN split points with I-Split and export verified head/tail ONNX pairs for edge split computing.",
)

EXIT_INTERRUPTED = 130


# The job commands (cli_export, cli_rank, cli_study), the bundle commands (cli_bundle) and the serving commands
# (cli_serving), registered here so that --help lists every command in this order.
app.command("export", cls=_Command)(export_cmd)
app.command("rank", cls=_Command)(rank_cmd)
app.command("study", cls=_Command)(study_cmd)
app.command("verify", cls=_Command)(verify_cmd)
app.command("plan", cls=_Command)(plan_cmd)
app.command("serve", cls=_Command)(serve_cmd)
app.command("run", cls=_Command)(run_cmd)
app.command("build-engines", cls=_Command)(build_engines_cmd)


@app.command("targets", cls=_Command)
def targets_cmd() -> None:
    """List the deployment target profiles."""
    from isplit_export.target_names import ALIASES
    from isplit_export.targets.profiles import list_targets

    for t in list_targets():
        alias = [a for a, n in ALIASES.items() if n == t.name]
        extra = f" (alias: {', '.join(alias)})" if alias else ""
        trt = f"TensorRT {t.tensorrt_version}" if t.tensorrt_version else ONNXRUNTIME
        typer.echo(f"{t.name:20} {trt:16} {t.description}{extra}")


@app.command("models", cls=_Command)
def models_cmd() -> None:
    """List the model names accepted (besides package.module:factory)."""
    names = listed_models()
    if names is None:
        from isplit_export.models import available_models

        names = available_models()
    typer.echo("\n".join(names))


def _version(value: bool) -> None:
    if value:
        typer.echo(f"isplit-export {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="print the version and exit", metavar=""
        ),
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
    previous = signal.getsignal(signal.SIGTERM)
    terminated = _handle_sigterm()
    try:
        return _main(args, terminated)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM landing after the command had returned
        return _stopped(terminated)
    finally:
        with contextlib.suppress(ValueError, TypeError):
            signal.signal(signal.SIGTERM, previous)


def _with_command(args: list[str]) -> list[str]:
    """``args`` with ``export`` put first when they name no command (``isplit-export vgg16 --top 3``); a
    first word that reads as a mistyped command (``verfy``) is refused with a "did you mean" instead."""
    commands = [str(c.name) for c in app.registered_commands]
    if not args or args[0] in commands or args[0] in (*HELP_OPTIONS["help_option_names"], "--version"):
        return args
    check_command(args[0], commands)
    return ["export", *args]


def _main(args: list[str], terminated: _Terminated) -> int:
    try:
        args = _with_command(args)
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
        if type(err).__name__ == "NoArgsIsHelpError":  # its message is the help
            typer.echo(err.format_message(), err=True)
            return 0
        typer.echo(f"error: {usage_line(err, args)}", err=True)
        return err.exit_code
    except Exception as err:
        if terminated:  # the signal surfaced as another exception (e.g. inside a C extension's import)
            return _stopped(terminated)
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
