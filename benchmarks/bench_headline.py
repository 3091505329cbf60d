"""Time, peak memory and bundle size of one export command line (the tool card's headline command).

    .venv/bin/python benchmarks/bench_headline.py [--out DIR] [--stages] [--baseline-s S] [--baseline-rss-gb G] \
        [--baseline-bundle-gb G] -- vgg16 --weights none --top 3 --target jetson

Runs ``python -m isplit_export ARGS --out DIR --force`` as a subprocess under ``/usr/bin/time -v``
(psutil polling where GNU time is missing) and prints, as JSON: the wall time, the peak RSS of the
export, the bundle's size on disk with and without ``triton/`` (each inode counted once, so hard links
cost nothing), the unique weight bytes (the packs under ``weights/``) and the ratios of the figures to
the baseline given. The export's own output goes to ``DIR.log``. ``--stages`` samples the RSS instead
(:func:`run_sampled`) and adds the peak of every progress stage.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

GB = 1e9
_MAX_RSS = re.compile(r"Maximum resident set size \(kbytes\): (\d+)")


def run_timed(cmd: list[str], log: Path) -> tuple[float, int, int]:
    """(wall seconds, peak RSS bytes, exit code) of ``cmd``, its output written to ``log``."""
    time_bin = Path("/usr/bin/time")
    with open(log, "w", encoding="utf-8") as out:
        if time_bin.is_file():
            report = log.with_suffix(".time")
            t0 = time.perf_counter()
            rc = subprocess.run(
                [str(time_bin), "-v", "-o", str(report), *cmd], stdout=out, stderr=out, check=False
            ).returncode
            wall = time.perf_counter() - t0
            match = _MAX_RSS.search(report.read_text(encoding="utf-8"))
            return wall, int(match.group(1)) * 1024 if match else 0, rc
        import psutil

        t0 = time.perf_counter()
        proc = psutil.Popen(cmd, stdout=out, stderr=out)
        peak = 0
        while proc.poll() is None:
            try:
                procs = [proc, *proc.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in procs))
            except psutil.Error:
                pass
            time.sleep(0.2)
        return time.perf_counter() - t0, peak, int(proc.returncode)


def run_sampled(
    cmd: list[str], log: Path, every_s: float = 0.2
) -> tuple[float, int, int, list[dict[str, object]]]:
    """(wall seconds, sampled peak RSS bytes, exit code, peak per stage) of ``cmd`` (Linux ``/proc``).

    ``VmRSS`` is read every ``every_s`` seconds; each ``stage k/n`` line the export prints (off a terminal)
    closes a stage, which gets the largest sample since the previous one. A spike shorter than ``every_s``
    can be missed: the kernel's peak (the default mode, ``/usr/bin/time``) is the figure to quote.
    """
    env = {**os.environ, "ISPLIT_QUIET": ""}
    samples: list[tuple[float, int]] = []
    lines: list[tuple[float, str]] = []
    with open(log, "w", encoding="utf-8") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, text=True, env=env)
        assert proc.stderr is not None

        def read() -> None:
            for line in proc.stderr:  # type: ignore[union-attr]
                lines.append((time.perf_counter(), line.rstrip("\n")))
                out.write(line)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        status = Path(f"/proc/{proc.pid}/status")
        while proc.poll() is None:
            try:
                kb = next(
                    int(x.split()[1]) for x in status.read_text().splitlines() if x.startswith("VmRSS:")
                )
                samples.append((time.perf_counter(), kb * 1024))
            except (OSError, StopIteration, ValueError):
                pass
            time.sleep(every_s)
        reader.join(timeout=10)
        wall = time.perf_counter() - t0
    stages: list[dict[str, object]] = []
    start = t0
    for t, line in lines:
        if line.startswith("stage "):
            peak = max((r for ts, r in samples if start <= ts <= t), default=None)  # None: no sample in it
            stages.append({"stage": line, "peak_rss_gb": None if peak is None else round(peak / GB, 2)})
            start = t
    return wall, max((r for _, r in samples), default=0), int(proc.returncode), stages


def disk_bytes(root: Path, *, skip: str | None = None) -> int:
    """Bytes of the regular files under ``root`` (optionally not under ``root/skip``), each inode once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        if skip is not None and Path(dirpath) == root and skip in dirnames:
            dirnames.remove(skip)
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="bundle folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the bundle (always kept with --out)")
    parser.add_argument("--baseline-s", type=float, default=None, help="baseline wall time, seconds")
    parser.add_argument("--baseline-rss-gb", type=float, default=None, help="baseline peak RSS, GB")
    parser.add_argument("--baseline-bundle-gb", type=float, default=None, help="baseline bundle size, GB")
    parser.add_argument(
        "--stages",
        action="store_true",
        help="sample the RSS every 0.2 s and report the peak per progress stage (instead of /usr/bin/time)",
    )
    parser.add_argument("args", nargs=argparse.REMAINDER, help="-- then the isplit-export arguments")
    a = parser.parse_args()
    args = a.args[1:] if a.args[:1] == ["--"] else a.args
    if not args:
        parser.error("give the export's arguments after --, e.g. -- vgg16 --weights none --top 3")
    tmp = None if a.out is not None else Path(tempfile.mkdtemp(prefix="bench-headline-"))
    out = a.out if a.out is not None else Path(tmp, "bundle")  # type: ignore[arg-type]
    cmd = [sys.executable, "-m", "isplit_export", *args, "--out", str(out), "--force"]
    out.parent.mkdir(parents=True, exist_ok=True)
    log = out.with_name(out.name + ".log")
    stages = None
    if a.stages:
        wall, rss, rc, stages = run_sampled(cmd, log)
    else:
        wall, rss, rc = run_timed(cmd, log)
    result: dict[str, object] = {
        "command": " ".join(["isplit-export", *args]),
        "exit_code": rc,
        "wall_s": round(wall, 1),
        "peak_rss_gb": round(rss / GB, 3),
        "peak_rss_from": "0.2 s /proc samples" if a.stages else "the kernel (/usr/bin/time -v)",
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "log": str(log),
    }
    if out.is_dir():
        total = disk_bytes(out)
        without = disk_bytes(out, skip="triton")
        weights = disk_bytes(out / "weights") if (out / "weights").is_dir() else 0
        result.update(
            bundle_gb=round(total / GB, 3),
            bundle_without_triton_gb=round(without / GB, 3),
            unique_weights_gb=round(weights / GB, 3),
            bundle_over_unique_weights=round(total / weights, 3) if weights else None,
        )
        if a.baseline_bundle_gb:
            result["bundle_ratio"] = round(total / GB / a.baseline_bundle_gb, 3)
    if a.baseline_s:
        result["time_ratio"] = round(wall / a.baseline_s, 3)
    if a.baseline_rss_gb:
        result["rss_ratio"] = round(rss / GB / a.baseline_rss_gb, 3)
    if stages is not None:
        result["stages"] = stages
    print(json.dumps(result, indent=2))
    if tmp is not None and not a.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(0 if rc == 0 else 1)


if __name__ == "__main__":
    main()
