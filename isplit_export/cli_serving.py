"""The serving commands of ``isplit-export``: serve and run (``cli`` registers them on its ``app``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from isplit_export import progress
from isplit_export.cli_options import (
    FLAG,
    ExpectShaOpt,
    QuietOpt,
    SplitOpt,
    TrustEnginesOpt,
    VerboseOpt,
    given,
    renamed,
    setup_logging,
)
from isplit_export.options_serving import RunBackend, RunOptions, ServeOptions, WireProtocol

SERVE, RUN = ServeOptions(), RunOptions()
"""serve's and run's defaults (their dataclasses): each flag's default."""


def serve_cmd(
    bundle: Annotated[Path, typer.Argument(help="bundle directory written by isplit-export")],
    split: SplitOpt = None,
    host: Annotated[
        str | None,
        typer.Option("--host", help="address to listen on"),
    ] = SERVE.host,
    port: Annotated[int | None, typer.Option("--port", help="gRPC port")] = SERVE.port,
    http_port: Annotated[
        int | None, typer.Option("--http-port", help="HTTP/REST port", show_default="--port + 1")
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            help="onnxruntime threads per tail (0: all cores)",
        ),
    ] = SERVE.threads,
    expect_sha256: ExpectShaOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Serve the bundle's tails over the Open Inference Protocol (gRPC + HTTP) with MLServer (verifies first).

    Exit codes: 0 stopped by SIGINT/SIGTERM, 1 a modified or unlisted file or another manifest than
    --expect-sha256, 2 bad input (a port already in use included).
    """
    from isplit_export.jobs.serve import serve

    setup_logging(verbose)
    serve(
        ServeOptions(
            **given(
                bundle=bundle,
                split=split,
                host=host,
                port=port,
                http_port=http_port,
                threads=threads,
                expect_sha256=expect_sha256,
            )
        )
    )


def run_cmd(
    bundle: Annotated[Path, typer.Argument(help="bundle directory written by isplit-export")],
    url: Annotated[
        str | None,
        typer.Option("--url", "-u", help="HOST:PORT of the server (isplit-export serve / Triton)"),
    ] = None,
    server: Annotated[str | None, typer.Option("--server", hidden=True, help="old spelling of --url")] = None,
    split: Annotated[int | None, typer.Option("--split", help="split N")] = RUN.split,
    data: Annotated[
        Path | None,
        typer.Option("--data", help="images to send", show_default="the split's golden inputs"),
    ] = None,
    images: Annotated[int | None, typer.Option("--images", help="use at most N images")] = None,
    requests: Annotated[
        int | None,
        typer.Option(
            "--requests", help="send N requests, cycling over the images", show_default="each image once"
        ),
    ] = None,
    duration: Annotated[float | None, typer.Option("--duration", help="send for S seconds instead")] = None,
    concurrency: Annotated[
        int | None,
        typer.Option("--concurrency", help="requests in flight"),
    ] = RUN.concurrency,
    protocol: Annotated[
        WireProtocol | None,
        typer.Option("--protocol", help="gRPC, or JSON over HTTP/REST"),
    ] = RUN.protocol,
    timeout_ms: Annotated[
        float | None,
        typer.Option("--timeout-ms", help="per-attempt timeout"),
    ] = RUN.timeout_ms,
    retries: Annotated[
        int | None,
        typer.Option("--retries", help="retries per request"),
    ] = RUN.retries,
    backoff_ms: Annotated[
        float | None,
        typer.Option("--backoff-ms", help="first retry's wait, doubling"),
    ] = RUN.backoff_ms,
    wait: Annotated[
        float | None,
        typer.Option("--wait", help="seconds to wait for the server"),
    ] = RUN.wait_s,
    backend: Annotated[
        RunBackend | None,
        typer.Option(
            "--backend",
            help="head runtime (auto: TensorRT when build-engines built its head engine here, else onnxruntime)",
        ),
    ] = RUN.backend,
    threads: Annotated[
        int | None,
        typer.Option("--threads", help="onnxruntime threads of the head"),
    ] = RUN.threads,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="run.json path, checked before the first request", show_default="BUNDLE/run.json"
        ),
    ] = None,
    no_write: Annotated[
        bool, typer.Option("--no-write", help="print the summary only, write no run.json", metavar=FLAG)
    ] = False,
    fail_after: Annotated[
        int | None,
        typer.Option(
            "--fail-after",
            help="stop after N requests in a row failed, the rest skipped (0: never)",
        ),
    ] = RUN.fail_after,
    trust_engines: TrustEnginesOpt = False,
    expect_sha256: ExpectShaOpt = None,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Run the head here against a served tail: every request measured and accounted for; writes run.json.

    Exit codes: 0 ok, 1 a check failed (or another manifest than --expect-sha256), 5 no server at --url,
    6 requests failed after retries or were skipped (the circuit breaker), 130/143 interrupted (run.json written first).
    """
    from isplit_export.errors import BadInputError
    from isplit_export.jobs.run import run
    from isplit_export.serving.records import format_run

    setup_logging(verbose)
    address = renamed(url, server, "--server", "--url")
    if address is None:
        raise BadInputError("run needs the server's address: pass --url HOST:PORT (e.g. 127.0.0.1:8001)")
    options = RunOptions(
        **given(
            bundle=bundle,
            server=address,
            split=split,
            data=data,
            images=images,
            requests=requests,
            duration_s=duration,
            concurrency=concurrency,
            protocol=protocol,
            timeout_ms=timeout_ms,
            retries=retries,
            backoff_ms=backoff_ms,
            wait_s=wait,
            backend=backend,
            threads=threads,
            out=out,
            no_write=no_write or None,
            fail_after=fail_after,
            trust_engines=trust_engines or None,
            expect_sha256=expect_sha256,
        )
    )
    with progress.stages(quiet=quiet):
        result = run(options, write=False)
    typer.echo(format_run(result.data))  # printed first: the results show even if the file cannot be written
    written = result.write()
    if written is not None:
        typer.echo(f"wrote {written}")
    stopped = result.interrupted_error()
    if stopped is not None:
        raise stopped
    if result.exit_code:
        raise typer.Exit(result.exit_code)
