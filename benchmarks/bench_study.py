"""The digits study's targets (issue 16) over several ``--seed`` values: per seed (its own train/held-out
split and training seeds), the largest spread between training repeats, the cuts whose trained mean is
below the probe, Spearman of the probe, CUI and CDE with the measured means, the top picks' regrets and
what ``conclusive`` says, and how each predictor orders the pairs of cuts whose measured difference is
outside the noise (its paired bootstrap CI excludes 0).

    .venv/bin/python benchmarks/make_digits.py run
    .venv/bin/python benchmarks/bench_study.py --weights run/digits.pt --data run/digits \\
        [--bottleneck 64B] [--seeds 0 1 2 3 4] [--repeats 5] [--out DIR]

Targets: Spearman(probe) >= 0.9; the probe's top pick within the CI of the best cut; the spread between
seeds <= 2 points at every cut; the trained mean >= the probe at every cut.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

PREDICTORS = ("probe", "cui", "cde", "random")


def run_study(
    weights: Path, data: Path, bottleneck: str, seed: int, repeats: int, out: Path
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "isplit_export.cli",
        "study",
        "isplit_export.zoo:digits_cnn",
        "--weights",
        str(weights),
        "--data",
        str(data),
        "--cuts",
        "all",
        "--bottleneck",
        bottleneck,
        "--repeats",
        str(repeats),
        "--seed",
        str(seed),
        "--out",
        str(out),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(
            f"study --seed {seed} failed (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}"
        )
    return dict(json.loads((out / "study.json").read_text()))


def row(study: dict[str, Any]) -> dict[str, Any]:
    cuts, s = study["cuts"], study["summary"]
    mean = {c["index"]: c["measured"]["value"] for c in cuts}
    best = max(cuts, key=lambda c: c["measured"]["value"])
    pick = s["predictors"]["probe"]["top_pick"]["index"]
    lo, hi = best["measured"]["ci95"]
    return {
        "max_sd_points": round(100 * max(c["measured"]["sd"] for c in cuts), 1),
        "max_sd_cut": max(cuts, key=lambda c: c["measured"]["sd"])["index"],
        "below_probe": [c["index"] for c in cuts if c["measured"]["value"] < c["probe"]["value"]],
        "spearman": {p: round(s["predictors"][p]["spearman"], 3) for p in ("probe", "cui", "cde")},
        "regret_points": {p: round(100 * s["predictors"][p]["regret"], 1) for p in ("probe", "cui", "cde")},
        "probe_pick_in_best_ci": bool(lo <= mean[pick] <= hi),
        "conclusive": s["concludes_for"] or "nothing",
        "separated_pairs": len(s["separated_pairs"]["pairs"]),
        "ordered_right": {p: s["predictors"][p]["separated_pairs"]["right"] for p in PREDICTORS},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--bottleneck", default="64B")
    p.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2, 3, 4])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=None, help="keep each study here (DIR/seed-N/study.json)")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            out = (args.out or Path(tmp)).resolve() / f"seed-{seed}"
            r = row(
                run_study(
                    args.weights.resolve(), args.data.resolve(), args.bottleneck, seed, args.repeats, out
                )
            )
            rows.append(r)
            print(json.dumps({"seed": seed, **r}))
    n = len(rows)
    print(
        f"{args.bottleneck}, {n} seeds x {args.repeats} repeats: spread <= 2 points at every cut in "
        f"{sum(r['max_sd_points'] <= 2 for r in rows)}/{n}; trained >= probe at every cut in "
        f"{sum(not r['below_probe'] for r in rows)}/{n}; Spearman(probe) >= 0.9 in "
        f"{sum(r['spearman']['probe'] >= 0.9 for r in rows)}/{n}; probe's pick within the best cut's CI in "
        f"{sum(r['probe_pick_in_best_ci'] for r in rows)}/{n}"
    )
    pairs = sum(r["separated_pairs"] for r in rows)
    right = ", ".join(f"{p} {sum(r['ordered_right'][p] for r in rows)}/{pairs}" for p in PREDICTORS)
    print(f"pairs of cuts that differ outside the noise: {pairs}; ordered right by {right}")


if __name__ == "__main__":
    main()
