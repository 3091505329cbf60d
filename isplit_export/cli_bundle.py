"""The bundle commands of ``isplit-export``: verify, plan and build-engines (torch-free at import; ``cli``
registers them on its ``app``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from isplit_export.backend_names import ONNXRUNTIME, TENSORRT
from isplit_export.cli_options import (
    BoundaryKibOpt,
    ExpectShaOpt,
    HeadFlopsOpt,
    LatencyOpt,
    TrustEnginesOpt,
    VerboseOpt,
    constraints_from_flags,
    setup_logging,
)
from isplit_export.errors import EXIT_GATE_FAILED

ReportOpt = Annotated[
    Path | None, typer.Option("--report", help="write the result JSON here instead of into the bundle")
]
NoWriteOpt = Annotated[
    bool | None, typer.Option("--no-write", help="print only, write nothing (e.g. a read-only bundle)")
]


def _result_path(expect_sha256: str | None, report: Path | None, no_write: bool | None) -> bool:
    """Validate --expect-sha256 / --report / --no-write before any work; returns whether to write."""
    from isplit_export.contract import check_sha256_text
    from isplit_export.errors import BadInputError
    from isplit_export.options import DEFAULT_WRITE_RESULT
    from isplit_export.outdir import check_writable_file

    write = DEFAULT_WRITE_RESULT if no_write is None else not no_write
    if expect_sha256 is not None:
        check_sha256_text(expect_sha256, "--expect-sha256")
    if report is not None:
        if not write:
            raise BadInputError("--report and --no-write contradict each other: pass one of them")
        check_writable_file(report, "--report")
    return write


def verify_cmd(
    bundle: Annotated[Path, typer.Argument(help="bundle directory written by isplit-export")],
    backend: Annotated[str, typer.Option("--backend", help=f"{ONNXRUNTIME} or {TENSORRT}")] = ONNXRUNTIME,
    split: Annotated[
        int | None, typer.Option("--split", help="only split N (1-based, as in splits/NN-*)")
    ] = None,
    expect_sha256: ExpectShaOpt = None,
    report: ReportOpt = None,
    no_write: NoWriteOpt = None,
    trust_engines: TrustEnginesOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Re-hash every bundle file and re-run the golden inputs (torch-free: runs on the device)."""
    from isplit_export.verification.outcome import format_verification
    from isplit_export.verification.verify import verify_bundle, write_verification

    setup_logging(verbose)
    write = _result_path(expect_sha256, report, no_write)
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
        typer.echo(f"wrote {write_verification(result, report)}")
    if not result.passed:
        raise typer.Exit(EXIT_GATE_FAILED)


def plan_cmd(
    bundle: Annotated[Path, typer.Argument(help="bundle directory written by isplit-export")],
    link: Annotated[
        str | None,
        typer.Option(
            "--link", help="wifi|lte|5g|ethernet|<Mbit/s>[,<RTT ms>] or measured (default: run.json's)"
        ),
    ] = None,
    objective: Annotated[
        str | None, typer.Option("--objective", help="cui, latency or balanced (default: the export's)")
    ] = None,
    server: Annotated[
        str | None, typer.Option("--server", help="server profile for the tail (default: the export's)")
    ] = None,
    top: Annotated[
        int | None, typer.Option("--top", help="how many splits to select (default: the export's)")
    ] = None,
    max_head_flops: HeadFlopsOpt = None,
    max_boundary_kib: BoundaryKibOpt = None,
    max_latency_ms: LatencyOpt = None,
    measured: Annotated[
        bool,
        typer.Option("--measured/--estimated", help="use the latencies measured so far, or estimates only"),
    ] = True,
    expect_sha256: ExpectShaOpt = None,
    report: ReportOpt = None,
    no_write: NoWriteOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Re-plan an exported bundle for a link, objective or constraints, from its measured latencies (torch-free)."""
    from isplit_export.bundle.planning import plan, write_plan

    setup_logging(verbose)
    write = _result_path(expect_sha256, report, no_write)
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
    if write:
        typer.echo(f"wrote {write_plan(result, report)}")


def build_engines_cmd(
    bundle: Annotated[Path, typer.Argument(help="bundle directory written with a TensorRT target")],
    split: Annotated[int | None, typer.Option("--split", help="only split N")] = None,
    expect_sha256: ExpectShaOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Build the TensorRT engines of a bundle with the TensorRT 10/11 Python API (on the device)."""
    from isplit_export.targets.trt_backend import build_bundle_engines

    setup_logging(verbose)
    _result_path(expect_sha256, None, None)
    for record in build_bundle_engines(bundle, split, expect_sha256=expect_sha256):
        typer.echo(str(record))
