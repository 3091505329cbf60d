"""The serving commands of ``isplit-export``: serve and run (``cli`` registers them on its ``app``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from isplit_export import progress
from isplit_export.cli_options import ExpectShaOpt, QuietOpt, TrustEnginesOpt, given
from isplit_export.options_serving import RunOptions, ServeOptions

_SERVE, _RUN = ServeOptions, RunOptions  # the defaults live in the dataclasses; help texts quote them


def serve_cmd(
    bundle: Annotated[Path, typer.Argument(help="bundle directory written by isplit-export")],
    split: Annotated[
        str | None, typer.Option("--split", help="serve split N only, or 'all' (default: all)")
    ] = None,
    host: Annotated[
        str | None, typer.Option("--host", help=f"address to listen on (default: {_SERVE.host})")
    ] = None,
    port: Annotated[int | None, typer.Option("--port", help=f"gRPC port (default: {_SERVE.port})")] = None,
    http_port: Annotated[
        int | None, typer.Option("--http-port", help="HTTP/REST port (default: --port + 1)")
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads", help=f"onnxruntime threads per tail (default: {_SERVE.threads}; 0: all cores)"
        ),
    ] = None,
    expect_sha256: ExpectShaOpt = None,
) -> None:
    """Serve the bundle's tails over the Open Inference Protocol (gRPC + HTTP) with MLServer (verifies first).

    Exit codes: 0 stopped by SIGINT/SIGTERM, 1 a modified or unlisted file or another manifest than
    --expect-sha256, 2 bad input (a port already in use included).
    """
    from isplit_export.errors import BadInputError
    from isplit_export.serving.serve import serve

    n: int | None = None
    if split is not None and split.strip().lower() != "all":
        if not split.strip().isdigit():
            raise BadInputError(f"--split {split!r}: pass a split number (as in splits/NN-*) or 'all'")
        n = int(split)
    serve(
        ServeOptions(
            **given(
                bundle=bundle,
                split=n,
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
    server: Annotated[
        str, typer.Option("--server", help="HOST:PORT of the server (isplit-export serve / Triton)")
    ],
    split: Annotated[int | None, typer.Option("--split", help=f"split N (default: {_RUN.split})")] = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="images to send (default: the split's golden inputs)")
    ] = None,
    images: Annotated[int | None, typer.Option("--images", help="use at most N images")] = None,
    requests: Annotated[
        int | None, typer.Option("--requests", help="send N requests, cycling over the images")
    ] = None,
    duration: Annotated[float | None, typer.Option("--duration", help="send for S seconds instead")] = None,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", help=f"requests in flight (default: {_RUN.concurrency})")
    ] = None,
    protocol: Annotated[
        str | None, typer.Option("--protocol", help=f"grpc or http (JSON) (default: {_RUN.protocol})")
    ] = None,
    timeout_ms: Annotated[
        float | None, typer.Option("--timeout-ms", help=f"per-attempt timeout (default: {_RUN.timeout_ms:g})")
    ] = None,
    retries: Annotated[
        int | None, typer.Option("--retries", help=f"retries per request (default: {_RUN.retries})")
    ] = None,
    backoff_ms: Annotated[
        float | None,
        typer.Option("--backoff-ms", help=f"first retry's wait, doubling (default: {_RUN.backoff_ms:g})"),
    ] = None,
    wait: Annotated[
        float | None,
        typer.Option("--wait", help=f"seconds to wait for the server (default: {_RUN.wait_s:g})"),
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(
            "--backend",
            help="head runtime: auto (TensorRT when build-engines built its head engine here, "
            f"else onnxruntime), onnxruntime or tensorrt (default: {_RUN.backend})",
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option("--threads", help=f"onnxruntime threads of the head (default: {_RUN.threads})"),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="run.json path, checked before the first request (default: BUNDLE/run.json)"
        ),
    ] = None,
    no_write: Annotated[
        bool, typer.Option("--no-write", help="print the summary only, write no run.json")
    ] = False,
    fail_after: Annotated[
        int | None,
        typer.Option(
            "--fail-after",
            help=f"stop after N requests in a row failed, the rest skipped (default: "
            f"{_RUN.fail_after}; 0: never)",
        ),
    ] = None,
    trust_engines: TrustEnginesOpt = False,
    expect_sha256: ExpectShaOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Run the head here against a served tail: every request measured and accounted for; writes run.json.

    Exit codes: 0 ok, 1 a check failed (or another manifest than --expect-sha256), 5 no server at --server, 6 requests failed after retries or were
    skipped (the circuit breaker), 130/143 interrupted (run.json written first).
    """
    from isplit_export.serving.records import format_run
    from isplit_export.serving.run import run

    options = RunOptions(
        **given(
            bundle=bundle,
            server=server,
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
