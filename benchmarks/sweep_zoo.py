"""Zoo sweep: rank every model that ``isplit-export models`` lists, with random weights, on 2 images.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sweep_zoo.py [--models swin_t vit_b_16] \\
        [--timeout 900] [--max-rss-gib 8] [--table sweep.md]

One ``isplit-export rank M --weights none --images 2 --out TMP/M`` subprocess per model, with a
wall-clock timeout and a resident-memory watchdog (a model whose process grows past
``--max-rss-gib`` is stopped and reported as such, not left to take the machine's memory). Prints a
markdown table: model, exit code, number of cuts, cuts per layout, seconds, and the first line of
the error for a non-zero exit. Exits 1 when any model ended in "internal failure" (a bug, as opposed
to a clear refusal with exit 2). Not part of the test suite: it takes tens of minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "isplit_export.cli"]


def list_models() -> list[str]:
    out = subprocess.run([*CLI, "models"], capture_output=True, text=True, check=True, cwd=ROOT)
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_model(name: str, out: Path, timeout: float, max_rss: int) -> dict[str, object]:
    """Rank one model in a subprocess; returns its row of the table."""
    env = {**os.environ, "ISPLIT_OFFLINE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cmd = [*CLI, "rank", name, "--weights", "none", "--images", "2", "--batch-size", "2", "--out", str(out)]
    t0 = time.perf_counter()
    peak = 0
    note = ""
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT, env=env, text=True)
        while proc.poll() is None:
            peak = max(peak, _rss_bytes(proc.pid))
            elapsed = time.perf_counter() - t0
            if peak > max_rss or elapsed > timeout:
                proc.kill()
                proc.wait()
                note = (
                    f"stopped: RSS > {max_rss / 2**30:.0f} GiB"
                    if peak > max_rss
                    else f"stopped: > {timeout:.0f} s"
                )
                break
            time.sleep(0.2)
        code = proc.returncode
        err.seek(0)
        stderr = err.read()
    seconds = time.perf_counter() - t0
    lines = [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("WARNING: --weights none")]
    if not note and code != 0 and lines:
        note = lines[-1].strip()[:140]
    cuts, layouts = 0, ""
    ranking = out / "ranking.json"
    if code == 0 and ranking.is_file():
        rows = json.loads(ranking.read_text())["candidates"]
        cuts = len(rows)
        counts = Counter(str(r.get("layout", "?")) for r in rows)
        layouts = " ".join(f"{k}:{v}" for k, v in sorted(counts.items()))
    return {
        "model": name,
        "exit": code,
        "cuts": cuts,
        "layouts": layouts,
        "seconds": round(seconds, 1),
        "peak_rss_gib": round(peak / 2**30, 2),
        "internal_failure": "internal failure" in stderr,
        "note": note,
    }


def table(rows: list[dict[str, object]]) -> str:
    head = "| model | exit | cuts | layouts | s | peak RSS GiB | note |\n|---|---|---|---|---|---|---|"
    body = [
        f"| {r['model']} | {r['exit']} | {r['cuts']} | {r['layouts']} | {r['seconds']} | {r['peak_rss_gib']} | "
        f"{str(r['note']).replace('|', '/')} |"
        for r in rows
    ]
    return "\n".join([head, *body])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", help="default: every model `isplit-export models` lists")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per model")
    ap.add_argument(
        "--max-rss-gib", type=float, default=8.0, help="stop a model whose process grows past this"
    )
    ap.add_argument(
        "--table", type=Path, help="also write the table (markdown) here, updated after every model"
    )
    args = ap.parse_args()
    names = args.models or list_models()
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="isplit-sweep-") as tmp:
        for name in names:
            row = run_model(name, Path(tmp) / name, args.timeout, int(args.max_rss_gib * 2**30))
            rows.append(row)
            print(
                f"{name}: exit {row['exit']}, {row['cuts']} cuts {row['layouts']} ({row['seconds']} s) {row['note']}",
                flush=True,
            )
            if args.table:
                args.table.write_text(table(rows) + "\n", encoding="utf-8")
    print(table(rows))
    ok = sum(1 for r in rows if r["exit"] == 0)
    refused = sum(1 for r in rows if r["exit"] == 2)
    bad = [str(r["model"]) for r in rows if r["internal_failure"]]
    print(
        f"\n{len(rows)} models: {ok} ranked, {refused} refused (exit 2), "
        f"{len(rows) - ok - refused} other; internal failures: {', '.join(bad) or 'none'}"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
