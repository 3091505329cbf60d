"""Serving on loopback: round trip, throughput, transport overhead, bytes on the wire, restart, client memory.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_serve.py [--work DIR] [--requests 200]
        [--memory-seconds 60]

Bundles (built into ``--work`` unless already there):

- ``effnet``: ``efficientnet_lite0 --top 3 --target onnx --boundary fp16 --triton`` (its three splits,
  ranked on the skimage photos; fp16 boundary as the Jetson targets default to);
- ``digits-bn``: the trained digits CNN with a learned bottleneck (``--bottleneck 1/8``, int8 code,
  ``--top 2 --target onnx --triton``).

Each bundle is served by ``isplit-export serve`` (MLServer, 1 onnxruntime thread per tail) on free
127.0.0.1 ports, and ``isplit-export run``'s API sends each split's golden inputs (cycled) at
concurrency 1, 4 and 8 over gRPC. Printed per split and concurrency: round-trip p50/p99 (network plus
server, the client's view), end-to-end p50 (head + encode + round trip), throughput, and at
concurrency 1 the transport overhead: end-to-end p50 minus (local head p50 + local tail median, both
onnxruntime with 1 thread in this process, timed before the requests), and ``trans p50``: per request
encode + round trip - the server's compute time (the same quantity measured inside the run, so
robust to what else the shared CPU does meanwhile). Bytes: the payload per image against the bundle's
``bytes_per_image`` and the gRPC request on the wire (protobuf message + 5-byte prefix; HTTP/2
frame headers not counted).

Then: a server restart mid-run (SIGKILL after 100 requests, a new server started at once, default
retries: 6, 100 ms doubling), counting ok / failed / skipped; and client memory (RSS) of an
``isplit-export run`` process over a ``--memory-seconds`` run at concurrency 4. Targets (SPEC 8): overhead p50 <= 2 ms at batch 1 for
boundaries up to 64 KiB; zero lost requests across a restart; client memory flat.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


from serve_process import ServeProcess  # noqa: E402

from isplit_export.cli import main as cli  # noqa: E402
from isplit_export.jobs.run import run  # noqa: E402
from isplit_export.options_serving import RunOptions  # noqa: E402
from isplit_export.serving.bundle_access import SplitAccess, open_bundle  # noqa: E402
from isplit_export.serving.records import Request  # noqa: E402


def build(work: Path) -> dict[str, Path]:
    """The two bundles (built once; reused when present)."""
    bundles = {"effnet": work / "effnet", "digits-bn": work / "digits-bn"}
    if not (bundles["effnet"] / "manifest.json").is_file():
        code = cli(
            [
                "efficientnet_lite0",
                "--top",
                "3",
                "--target",
                "onnx",
                "--boundary",
                "fp16",
                "--triton",
                "--out",
                str(bundles["effnet"]),
                "--latency-runs",
                "5",
                "--force",
            ]
        )
        assert code in (0, 1), code
    if not (bundles["digits-bn"] / "manifest.json").is_file():
        import torch

        from isplit_export.zoo import train_digits_cnn, write_digits_imagefolder

        model, _ = train_digits_cnn(seed=0)
        torch.save(model.state_dict(), work / "digits.pt")
        data = write_digits_imagefolder(work / "digits", start=1500, count=200)
        code = cli(
            [
                "isplit_export.zoo:digits_cnn",
                "--weights",
                str(work / "digits.pt"),
                "--data",
                str(data),
                "--top",
                "2",
                "--target",
                "onnx",
                "--bottleneck",
                "1/8",
                "--triton",
                "--out",
                str(bundles["digits-bn"]),
                "--latency-runs",
                "5",
                "--force",
            ]
        )
        assert code in (0, 1), code
    return bundles


def _splits(bundle: Path) -> tuple[SplitAccess, ...]:
    """The bundle's splits as ``run`` and ``serve`` see them (read through the contract, not re-hashed)."""
    return open_bundle(bundle, verify=False).splits


def sweep(name: str, bundle: Path, work: Path, requests: int) -> list[dict[str, Any]]:
    """Every split at concurrency 1, 4, 8 against one server."""
    splits = _splits(bundle)
    server = ServeProcess(bundle, log=work / f"{name}.serve.log").start()
    rows = []
    try:
        server.wait_ready(splits[-1].model)
        for pos, split in enumerate(splits, start=1):
            for c in (1, 4, 8):
                out = work / "runs" / f"{name}-{pos}-c{c}.json"
                out.parent.mkdir(parents=True, exist_ok=True)
                r = run(
                    RunOptions(
                        bundle=bundle,
                        server=server.address,
                        split=pos,
                        requests=requests * max(1, c // 2),
                        concurrency=c,
                        out=out,
                    )
                ).data
                rows.append({"bundle": name, "split": split.dir, "concurrency": c, "run": r})
    finally:
        rc = server.stop()
    print(f"# {name}: server stopped with exit code {rc}")
    return rows


def restart(bundle: Path, work: Path, requests: int = 400) -> dict[str, Any]:
    """SIGKILL the server after 100 requests, start a new one at once; default retries."""
    model = _splits(bundle)[0].model
    log = work / "restart.serve.log"
    first = ServeProcess(bundle, log=log).start()
    first.wait_ready(model)
    second = ServeProcess(bundle, port=first.port, http_port=first.http_port, log=log)
    timing: dict[str, float] = {}

    def back() -> None:
        second.wait_ready(model)
        timing["ready_s"] = time.monotonic() - timing["killed"]

    def on_result(req: Request) -> None:
        if req.n == 100 and "killed" not in timing:
            first.kill()
            timing["killed"] = time.monotonic()
            second.start()
            threading.Thread(target=back, daemon=True).start()

    try:
        r = run(
            RunOptions(
                bundle=bundle, server=first.address, requests=requests, out=work / "runs" / "restart.json"
            ),
            on_result=on_result,
        ).data
    finally:
        first.kill()
        second.stop()
    return {
        "images": r["images"],
        "restart_ready_s": timing.get("ready_s"),
        "max_attempts": max((f["attempts"] for f in r["failures"]), default=None),
        "round_trip_ms": r["latency_ms"]["round_trip"],
    }


def memory(bundle: Path, work: Path, seconds: float) -> dict[str, Any]:
    """Client RSS over a ``seconds`` run at concurrency 4: ``isplit-export run`` in its own process."""
    first = _splits(bundle)[0]
    model = first.model
    server = ServeProcess(bundle, split=1, log=work / "memory.serve.log").start()
    out = work / "runs" / "memory.json"
    try:
        server.wait_ready(model)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "isplit_export.cli",
                "run",
                str(bundle),
                "--url",
                server.address,
                "--duration",
                str(seconds),
                "--concurrency",
                "4",
                "--out",
                str(out),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    finally:
        server.stop()
    r = json.loads(out.read_text(encoding="utf-8"))["runs"][first.dir]
    return {
        "images": r["images"],
        "client_rss_mib": r["client_rss_mib"],
        "throughput_rps": r["throughput_rps"],
    }


def _f(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(float(v), spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("bench-serve"))
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--memory-seconds", type=float, default=60.0)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    print(
        f"# OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, cpus={os.cpu_count()}, loopback 127.0.0.1, gRPC"
    )
    bundles = build(args.work)
    rows = [row for name, b in bundles.items() for row in sweep(name, b, args.work, args.requests)]
    head = (
        f"{'bundle':10} {'split':24} {'C':>2} {'payload B':>9} {'bundle B':>8} {'wire B':>8} {'framing':>7} "
        f"{'rtt p50':>8} {'rtt p99':>8} {'e2e p50':>8} {'req/s':>8} {'local h+t':>9} {'overhead':>8} "
        f"{'srv p50':>7} {'trans p50':>9} {'agree':>6} {'ok/fail/skip':>12}"
    )
    print(head)
    for row in rows:
        r = row["run"]
        lat, b, local = r["latency_ms"], r["bytes"], r.get("local_ms") or {}
        srv = (r["server_compute"]["ms"] or {}).get("p50")
        lt = (local.get("head_ms", 0) + local.get("tail_ms", 0)) if local else None
        i = r["images"]
        print(
            f"{row['bundle']:10} {row['split'][-24:]:24} {row['concurrency']:>2} {b['payload_per_image']!s:>9} "
            f"{b['bundle_bytes_per_image']:>8} {b['request_on_wire']!s:>8} {b['framing']!s:>7} "
            f"{_f(lat['round_trip']['p50']):>8} {_f(lat['round_trip']['p99']):>8} {_f(lat['end_to_end']['p50']):>8} "
            f"{_f(r['throughput_rps'], '.1f'):>8} {_f(lt):>9} "
            f"{_f(r['transport_overhead_ms_p50']) if row['concurrency'] == 1 else '-':>8} {_f(srv):>7} "
            f"{_f((lat.get('transport') or {}).get('p50')):>9} "
            f"{_f(r['task'].get('agreement_with_full_model'), '.2f'):>6} "
            f"{str(i['ok']) + '/' + str(i['failed']) + '/' + str(i['skipped']):>12}"
        )
    rs = restart(bundles["digits-bn"], args.work)
    print(
        f"restart (digits-bn split 1, SIGKILL after 100 of 400 requests, new server at once, retries 6): "
        f"{rs['images']['ok']} ok, {rs['images']['failed']} failed, {rs['images']['skipped']} skipped; "
        f"server ready again after {_f(rs['restart_ready_s'], '.2f')} s"
    )
    mem = memory(bundles["effnet"], args.work, args.memory_seconds)
    rss = mem["client_rss_mib"] or {}
    print(
        f"client memory over {args.memory_seconds:g} s (effnet split 1, concurrency 4, {mem['images']['ok']} ok, "
        f"{_f(mem['throughput_rps'], '.1f')} req/s): RSS start {_f(rss.get('start'), '.1f')} MiB, "
        f"at 1/4 {_f(rss.get('quarter'), '.1f')} MiB, "
        f"end {_f(rss.get('end'), '.1f')} MiB, max {_f(rss.get('max'), '.1f')} MiB ({rss.get('samples')} samples)"
    )
    (args.work / "bench_serve.json").write_text(
        json.dumps({"rows": rows, "restart": rs, "memory": mem}, indent=2, allow_nan=False) + "\n",
        encoding="utf-8",
    )
    print(f"wrote {args.work / 'bench_serve.json'}")


if __name__ == "__main__":
    main()
