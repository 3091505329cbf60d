"""The probe's cost against one ranking pass (the CUI's forward + backward over the same images).

    .venv/bin/python benchmarks/bench_probe.py [--models efficientnet_lite0 resnet50] [--budget 1KiB]

efficientnet_lite0 with its default (bundled) weights and resnet50 with ``--weights none``, both on the
default skimage photos (19). For each model: seconds of the ranking pass (``compute_importance``), of the
probe over the candidates (the CUI's local maxima) and over all cuts (:mod:`isplit_export.bottleneck.probe`:
two no-grad forwards over the train images, one over the held-out images with each probed cut's tail).
Targets (issue 16): probe over the candidates <= 1x the ranking; over all cuts <= 3x.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any


def bench(model: str, weights: str, budget: str, repeats: int) -> dict[str, Any]:
    from isplit_export.bottleneck.probe import probe_ranking
    from isplit_export.jobs.rank import rank
    from isplit_export.options_bottleneck import parse_size
    from isplit_export.ranking.importance import compute_importance

    ranked = rank(model, weights=weights, bootstrap=0, workers=0)
    spec = parse_size(budget)

    def best(fn: Any) -> float:
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    t_rank = best(lambda: compute_importance(ranked.traced, ranked.images, batch_size=16, workers=0))
    t_cand = best(lambda: probe_ranking(ranked, spec, "candidates", batch_size=16))
    t_all = best(lambda: probe_ranking(ranked, spec, "all", batch_size=16))
    n_cand = len(ranked.ranking.ranked(None))
    return {
        "model": model,
        "weights": weights,
        "budget": budget,
        "images": ranked.images.__len__(),
        "cuts": len(ranked.traced.cuts),
        "candidates": n_cand,
        "ranking_s": round(t_rank, 3),
        "probe_candidates_s": round(t_cand, 3),
        "probe_all_s": round(t_all, 3),
        "ratio_candidates": round(t_cand / t_rank, 3),
        "ratio_all": round(t_all / t_rank, 3),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", default=["efficientnet_lite0", "resnet50"])
    p.add_argument("--budget", default="1KiB")
    p.add_argument("--repeats", type=int, default=1)
    args = p.parse_args()
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for model in args.models:
        weights = "default" if model == "efficientnet_lite0" else "none"
        r = bench(model, weights, args.budget, args.repeats)
        print(json.dumps(r))
        print(
            f"{model}: ranking {r['ranking_s']:.2f} s; probe over {r['candidates']} candidates "
            f"{r['probe_candidates_s']:.2f} s ({r['ratio_candidates']:.2f}x, target <= 1); over all {r['cuts']} "
            f"cuts {r['probe_all_s']:.2f} s ({r['ratio_all']:.2f}x, target <= 3)"
        )


if __name__ == "__main__":
    main()
