"""Cost of the ranking's Poisson bootstrap: ranking time with and without it, and its own share.

    .venv/bin/python benchmarks/bench_bootstrap.py [--model efficientnet_lite0] [--replicates 200] [--repeats 3]

Ranks MODEL on its default images (19 skimage photos for efficientnet_lite0) through the Python API,
with ``bootstrap=0`` and ``bootstrap=B``, interleaved, best of ``--repeats`` each; then times the
bootstrap's own work (weights + replicate sums + the summary) on the same number of images and cuts,
and prints the replicate state's bytes (independent of the number of images).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--replicates", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch

    from isplit_export import rank
    from isplit_export.ranking.bootstrap import BootstrapSums, summarize_uncertainty

    torch.set_num_threads(1)
    rank(args.model, bootstrap=0)  # warm-up: imports, weights, oneDNN caches
    t_off = t_on = float("inf")
    result = None
    for _ in range(args.repeats):
        t = time.perf_counter()
        rank(args.model, bootstrap=0)
        t_off = min(t_off, time.perf_counter() - t)
        t = time.perf_counter()
        result = rank(args.model, bootstrap=args.replicates)
        t_on = min(t_on, time.perf_counter() - t)
    assert result is not None
    r = result.ranking
    n, cuts = r.images, len(r.cuts)

    scores = np.abs(np.random.default_rng(0).standard_normal((n, cuts))).astype(np.float32).astype(np.float64)
    t_add = float("inf")
    boot = BootstrapSums(args.replicates, cuts)
    for _ in range(max(args.repeats, 5)):
        boot = BootstrapSums(args.replicates, cuts)
        t = time.perf_counter()
        boot.add([0] * n, scores)
        reps = boot.replicate_cui()
        summarize_uncertainty(r.cui, reps, r.ranks)
        t_add = min(t_add, time.perf_counter() - t)

    out = {
        "model": r.model,
        "images": n,
        "cuts": cuts,
        "replicates": args.replicates,
        "rank_s_bootstrap_off": round(t_off, 3),
        "rank_s_bootstrap_on": round(t_on, 3),
        "ratio_on_over_off": round(t_on / t_off, 3),
        "bootstrap_own_s": round(t_add, 4),
        "bootstrap_own_ms_per_image": round(1000 * t_add / n, 3),
        "state_bytes_per_class_key": boot.nbytes,
    }
    print(json.dumps(out, indent=1))
    print(r.table())


if __name__ == "__main__":
    main()
