"""The probe's rate-accuracy grid against a single-budget probe over the same cuts, in one run.

    .venv/bin/python benchmarks/bench_rate_accuracy.py [--data DIR] [--budgets 16B..1KiB] [--budget 64B] [--threads N]

The digits CNN (``isplit_export.zoo:digits_cnn`` with the committed ``tests/data/digits.pt``) on an
ImageFolder of digits (``zoo.write_digits_imagefolder``; made in a temporary folder when ``--data`` is not
given: the 450 digits the CNN never saw), all cuts. Times the grid
(:func:`isplit_export.bottleneck.rate_accuracy.grid_ranking`) and the one-budget probe
(:func:`isplit_export.bottleneck.probe.probe_ranking`), in turns, best of ``--repeats`` each, and prints both
and their ratio. Target (issue 27): the whole grid at most 3x the single-budget probe.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

WEIGHTS = Path(__file__).resolve().parents[1] / "tests" / "data" / "digits.pt"
HELD_OUT_DIGITS = (1347, 450)
"""The digits the committed CNN never saw in training (start, count): its last quarter."""


def best_interleaved(a: Any, b: Any, repeats: int) -> tuple[float, float]:
    """The best of ``repeats`` seconds of ``a`` and of ``b``, run in turns (a shared machine's load then
    weighs on both alike)."""
    ta, tb = [], []
    for _ in range(repeats):
        for fn, times in ((a, ta), (b, tb)):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return min(ta), min(tb)


def bench(data: Path, budgets: str, budget: str, repeats: int) -> dict[str, Any]:
    from isplit_export.bottleneck.probe import probe_ranking
    from isplit_export.bottleneck.rate_accuracy import grid_ranking
    from isplit_export.jobs.rank import rank
    from isplit_export.options_bottleneck import parse_ladder, parse_size

    ranked = rank("isplit_export.zoo:digits_cnn", weights=str(WEIGHTS), data=data, bootstrap=0, workers=0)
    ladder, spec = parse_ladder(budgets), parse_size(budget)
    grid = grid_ranking(ranked, ladder, "all")
    t_grid, t_one = best_interleaved(
        lambda: grid_ranking(ranked, ladder, "all"), lambda: probe_ranking(ranked, spec, "all"), repeats
    )
    points = sum(len(v) for v in grid.points.values())
    return {
        "model": "isplit_export.zoo:digits_cnn",
        "images": len(ranked.images),
        "cuts": len(grid.points),
        "budgets": budgets,
        "grid_points": points,
        "decompositions": grid.groups,
        "single_budget": budget,
        "grid_s": round(t_grid, 3),
        "single_s": round(t_one, 3),
        "ratio": round(t_grid / t_one, 3),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=None)
    p.add_argument("--budgets", default="16B..1KiB")
    p.add_argument("--budget", default="64B")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args()
    import os

    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            from isplit_export.zoo import write_digits_imagefolder

            data = write_digits_imagefolder(
                Path(tmp) / "digits", start=HELD_OUT_DIGITS[0], count=HELD_OUT_DIGITS[1]
            )
        r = bench(data, args.budgets, args.budget, args.repeats)
    print(json.dumps(r))
    print(
        f"grid {r['budgets']} over {r['cuts']} cuts ({r['grid_points']} points, {r['decompositions']} "
        f"decompositions): {r['grid_s']:.2f} s; single-budget probe at {r['single_budget']}: {r['single_s']:.2f} s; "
        f"ratio {r['ratio']:.2f}x (target <= 3)"
    )


if __name__ == "__main__":
    main()
