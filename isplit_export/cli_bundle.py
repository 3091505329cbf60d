"""The bundle commands of ``isplit-export``: verify, plan and build-engines (torch-free at import; ``cli``
registers them on its ``app``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from isplit_export import progress
from isplit_export.cli_options import (
    FLAG,
    BoundaryKibOpt,
    ExpectShaOpt,
    HeadFlopsOpt,
    LatencyOpt,
    QuietOpt,
    SplitOpt,
    TargetName,
    TrustEnginesOpt,
    VerboseOpt,
    constraints_from_flags,
    renamed,
    setup_logging,
)
from isplit_export.errors import EXIT_GATE_FAILED, BadInputError
from isplit_export.options import Objective, VerifyBackend

OutOpt = Annotated[
    Path | None,
    typer.Option(
        "--out", help="write the result JSON to this file", show_default="verify.json / plan.json in BUNDLE"
    ),
]
ReportOpt = Annotated[Path | None, typer.Option("--report", hidden=True, help="old spelling of --out")]
NoWriteOpt = Annotated[
    bool | None,
    typer.Option("--no-write", help="print only, write nothing (e.g. a read-only bundle)", metavar=FLAG),
]


def _result_path(expect_sha256: str | None, report: Path | None, no_write: bool | None) -> bool:
    """Validate --expect-sha256 / --out / --no-write before any work; returns whether to write."""
    from isplit_export.contract import check_sha256_text
    from isplit_export.errors import BadInputError
    from isplit_export.options import DEFAULT_WRITE_RESULT
    from isplit_export.outdir import check_writable_file

    write = DEFAULT_WRITE_RESULT if no_write is None else not no_write
    if expect_sha256 is not None:
        check_sha256_text(expect_sha256, "--expect-sha256")
    if report is not None:
        if not write:
            raise BadInputError("--out and --no-write contradict each other: pass one of them")
        check_writable_file(report, "--out")
    return write


def verify_cmd(
    bundle: Annotated[Path, typer.Argument(help="bundle directory written by isplit-export")],
    backend: Annotated[
        VerifyBackend, typer.Option("--backend", help="runtime of the golden inputs")
    ] = "onnxruntime",
    split: SplitOpt = None,
    expect_sha256: ExpectShaOpt = None,
    out: OutOpt = None,
    report: ReportOpt = None,
    no_write: NoWriteOpt = None,
    trust_engines: TrustEnginesOpt = False,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Re-hash every bundle file and re-run the golden inputs (torch-free: runs on the device)."""
    from isplit_export.jobs.verify import verify_bundle, write_verification
    from isplit_export.verification.outcome import format_verification

    setup_logging(verbose)
    out = renamed(out, report, "--report", "--out")
    write = _result_path(expect_sha256, out, no_write)
    with progress.stages(quiet=quiet):
        result = verify_bundle(
            bundle,
            backend=backend,
            split=split,
            write=False,
            expect_sha256=expect_sha256,
            trust_engines=trust_engines,
        )
    typer.echo(format_verification(result))  # printed first: a read-only bundle still shows its results
    if write:
        typer.echo(f"wrote {write_verification(result, out)}")
    if not result.passed:
        raise typer.Exit(EXIT_GATE_FAILED)


def plan_cmd(
    bundle: Annotated[Path, typer.Argument(help="bundle directory written by isplit-export")],
    link: Annotated[
        str | None,
        typer.Option(
            "--link",
            help="wifi|lte|5g|ethernet|<Mbit/s>[,<RTT ms>] or measured",
            show_default="run.json's",
        ),
    ] = None,
    objective: Annotated[
        Objective | None,
        typer.Option("--objective", help="how the splits are ordered", show_default="the export's"),
    ] = None,
    server: Annotated[
        TargetName | None,
        typer.Option(
            "--server", help="target profile of the server running the tail", show_default="the export's"
        ),
    ] = None,
    top: Annotated[
        int | None,
        typer.Option("--top", help="how many splits to select", show_default="the export's"),
    ] = None,
    max_head_flops: HeadFlopsOpt = None,
    max_boundary_kib: BoundaryKibOpt = None,
    max_latency_ms: LatencyOpt = None,
    min_accuracy: Annotated[
        str | None,
        typer.Option(
            "--min-accuracy",
            help="on a bundle exported with --budgets: the fastest (cut, budget) of its grid reaching this "
            "score (0.9) or share of the full model's (99%)",
        ),
    ] = None,
    measured: Annotated[
        bool,
        typer.Option(
            "--measured/--estimated",
            help="use the latencies measured so far, or estimates only",
            metavar=FLAG,
        ),
    ] = True,
    expect_sha256: ExpectShaOpt = None,
    out: OutOpt = None,
    report: ReportOpt = None,
    no_write: NoWriteOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Re-plan an exported bundle for a link, objective or constraints, from its measured latencies (torch-free)."""
    from isplit_export.jobs.plan import plan, plan_pair, write_plan

    setup_logging(verbose)
    out = renamed(out, report, "--report", "--out")
    write = _result_path(expect_sha256, out, no_write)
    # on a bundle exported with --budgets, a target re-runs its (cut, budget) choice
    if max_latency_ms is not None or min_accuracy is not None:
        pair = plan_pair(
            bundle,
            link=link,
            server=server,
            expect_sha256=expect_sha256,
            max_latency_ms=max_latency_ms,
            min_accuracy=min_accuracy,
        )
        if pair is not None:
            cut_flags: dict[str, object] = {
                "--objective": objective,
                "--top": top,
                "--max-head-flops": max_head_flops,
                "--max-boundary-kib": max_boundary_kib,
                "--out": out,
            }
            if given := [flag for flag, v in cut_flags.items() if v is not None]:
                raise BadInputError(
                    f"{', '.join(given)}: plan re-chooses this bundle's (cut, budget) on its grid and prints it "
                    "only; drop them (or drop --max-latency-ms / --min-accuracy for the cost re-plan)"
                )
            typer.echo("\n".join(pair.lines()))
            return
    result = plan(
        bundle,
        link=link,
        objective=objective,
        server=server,
        top=top,
        measured=measured,
        write=False,
        expect_sha256=expect_sha256,
        constraints=None
        if (max_head_flops, max_boundary_kib, max_latency_ms) == (None, None, None)
        else constraints_from_flags(max_head_flops, max_boundary_kib, max_latency_ms),
    )
    typer.echo(result.table())  # printed first: a read-only bundle still shows the plan
    if link is None or link.strip().lower() != "measured":  # a grid bundle: its own target on this link
        pair = plan_pair(bundle, link=link, server=server, expect_sha256=expect_sha256)
        if pair is not None:
            typer.echo("\n".join(pair.lines()))
    if write:
        typer.echo(f"wrote {write_plan(result, out)}")


def build_engines_cmd(
    bundle: Annotated[Path, typer.Argument(help="bundle directory written with a TensorRT target")],
    split: SplitOpt = None,
    expect_sha256: ExpectShaOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Build the TensorRT engines of a bundle with the TensorRT 10/11 Python API (on the device)."""
    from isplit_export.jobs.build_engines import build_bundle_engines

    setup_logging(verbose)
    _result_path(expect_sha256, None, None)
    for record in build_bundle_engines(bundle, split, expect_sha256=expect_sha256):
        typer.echo(str(record))
