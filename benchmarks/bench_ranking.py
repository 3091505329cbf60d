"""Ranking cost: one-pass CUI vs a no-grad forward and vs the reference algorithm; memory vs data size.

    .venv/bin/python benchmarks/bench_ranking.py [--models vgg16 resnet50] [--batch 8] [--ref-images 2]

For each model at 224x224 on the CPU (random weights: cost does not depend on weight values):
  * forward  : seconds/image of one torch.no_grad() forward of a batch;
  * ranking  : seconds/image of isplit-export's ranking (one forward + one backward per batch, in the
               parts of at most 1 GiB that compute_importance scores it in: vgg16 4 images, resnet50 3);
  * reference: seconds/image of the reference algorithm (batch 1; for every cut l a fresh forward of
               layers 0..l and l..end plus a backward), measured on --ref-images images;
  * peak RSS of a fresh process ranking N and 4N images (memory must not grow with N).
Prints the numbers and the ratios ranking/forward (target <= 2.5) and reference/ranking (target >= 4).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch


def _images(n: int, size: int = 224) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def _best(fn: object, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t)
    return min(times)


def bench_model(name: str, batch: int, ref_images: int, repeats: int) -> dict[str, float]:
    from isplit_export.models import load_model
    from isplit_export.ranking.graph import trace
    from isplit_export.ranking.importance import grad_batch, reference_cui, score_parts

    model = load_model(name, "none").module
    traced = trace(model, (3, 224, 224))
    capture = traced.capture_module()
    x = _images(batch)
    labels = torch.full((batch,), -1)

    def forward() -> None:
        with torch.no_grad():
            model(x)

    step = grad_batch(traced, batch)  # the parts compute_importance scores a batch in

    def ranking() -> None:
        for _ in score_parts(capture, x, labels, "top", step):
            pass

    # warm up both (oneDNN primitive caches, allocator), then interleave the timed runs so that
    # machine noise hits both alike; keep the best run of each
    for _ in range(2):
        forward()
        ranking()
    t_fwd = t_rank = float("inf")
    for _ in range(repeats):
        t_fwd = min(t_fwd, _best(forward, 1) / batch)
        t_rank = min(t_rank, _best(ranking, 1) / batch)
    xr = x[:ref_images]
    t = time.perf_counter()
    reference_cui(traced, xr)
    t_ref = (time.perf_counter() - t) / ref_images
    return {
        "cuts": len(traced.cuts),
        "forward_s_per_image": t_fwd,
        "ranking_s_per_image": t_rank,
        "reference_s_per_image": t_ref,
        "ranking_over_forward": t_rank / t_fwd,
        "reference_over_ranking": t_ref / t_rank,
    }


def peak_rss_child(name: str, n_images: int, batch: int) -> float:
    """Peak RSS (MiB) of a fresh process that ranks ``n_images`` streamed images."""
    code = f"""
import resource, torch
from isplit_export.ranking.graph import trace
from isplit_export.ranking.importance import Importance, grad_batch, score_parts
from isplit_export.models import load_model
m = load_model({name!r}, "none").module
t = trace(m, (3, 224, 224)); cap = t.capture_module(); imp = Importance(len(t.cuts))
g = torch.Generator().manual_seed(0)
step = grad_batch(t, {batch})
for i in range(0, {n_images}, {batch}):
    x = torch.randn({batch}, 3, 224, 224, generator=g)
    for _, s, k in score_parts(cap, x, torch.full(({batch},), -1), "top", step):
        imp.add(k, s)
# VmHWM: this process's own peak (ru_maxrss keeps the parent's across fork and exec: a child of a
# 2 GB benchmark process would report at least 2 GB)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")]
print(int(hwm[0].split()[1]) / 1024 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["vgg16", "resnet50"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--ref-images", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--mem-images", type=int, default=16, help="N for the memory check (also runs 4N)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, 224x224, CPU")
    results = {}
    for name in args.models:
        r = bench_model(name, args.batch, args.ref_images, args.repeats)
        r["peak_rss_mib_n"] = peak_rss_child(name, args.mem_images, args.batch)
        r["peak_rss_mib_4n"] = peak_rss_child(name, 4 * args.mem_images, args.batch)
        results[name] = r
        print(
            f"{name:10} cuts={r['cuts']:3d}  forward {r['forward_s_per_image']:.3f} s/img  "
            f"ranking {r['ranking_s_per_image']:.3f} s/img  reference {r['reference_s_per_image']:.2f} s/img  "
            f"ranking/forward {r['ranking_over_forward']:.2f}x  reference/ranking {r['reference_over_ranking']:.1f}x  "
            f"peak RSS {r['peak_rss_mib_n']:.0f} MiB @ {args.mem_images} img, "
            f"{r['peak_rss_mib_4n']:.0f} MiB @ {4 * args.mem_images} img"
        )
    print(f"self peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
