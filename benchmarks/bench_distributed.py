"""Scale-out throughput: DataLoader decoding workers and torch.distributed processes (CPU, 1 thread each).

    .venv/bin/python benchmarks/bench_distributed.py [--digits-images 1797] [--effnet-images 48]

Prints images/s of ``isplit_export.rank`` (the whole call: model load, trace, process-group set-up,
decoding, forward+backward, reduction) for
  * the trained digits CNN on the scikit-learn digits written as PNGs (an ImageFolder), and
  * efficientnet_lite0 at 224x224 on the skimage photographs written as JPEGs (repeated to N files),
each with 0 and 2 decoding workers and with 1 and 2 processes (``torchrun --standalone``), every
process limited to one thread (OMP_NUM_THREADS=1). Each configuration is a fresh process tree and
is timed inside process 0, from just before ``rank`` to its return (after the process group is set
up and every process has reached that point). Ratios are against
(1 process, 0 workers). The digits-CNN study (``isplit-export study --cuts all``, 0 workers)
is timed with 1 and 2 processes too (target: >= 1.6x from 2 processes).
With ``--gpu`` (and a CUDA GPU) it adds ResNet-50 ranking images/s on one GPU against a plain
forward+backward (parameter gradients) of the same batch.
Timings on a shared machine are noisy: re-run on a quiet one before quoting.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()


def child(args: argparse.Namespace) -> None:
    """One timed job (run as a plain process or as each process of a torchrun job)."""
    import torch

    torch.set_num_threads(1)
    from isplit_export.distributed import job, requested

    with job(requested()) as current:  # under torchrun: set up the process group, and start together
        current.checkpoint()
        _timed_child(args)


def _timed_child(args: argparse.Namespace) -> None:
    from isplit_export.distributed import is_primary

    t = time.perf_counter()
    if args.child == "rank":
        from isplit_export import rank
        from isplit_export.options import RankOptions

        opts = RankOptions(
            model=args.model,
            weights=args.weights,
            data=Path(args.data),
            batch_size=args.batch,
            workers=args.workers,
            input_size=args.input_size,
        )
        result = rank(opts)
        images = result.ranking.images
    else:
        from isplit_export.jobs.study import study
        from isplit_export.options import StudyOptions

        sopts = StudyOptions(
            model=args.model,
            weights=args.weights,
            data=Path(args.data),
            cuts="all",
            workers=args.workers,
            out=Path(args.out),
        )
        images = len(study(sopts).results)  # cuts, here
    seconds = time.perf_counter() - t
    if is_primary():
        print(json.dumps({"images": images, "seconds": seconds}))


def launch(processes: int, child_args: list[str]) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if processes == 1:
        cmd = [sys.executable, str(HERE), *child_args]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={processes}",
            str(HERE),
            *child_args,
        ]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if run.returncode != 0:
        raise SystemExit(f"benchmark job failed: {' '.join(cmd)}\n{run.stderr[-3000:]}")
    line = [ln for ln in run.stdout.splitlines() if ln.startswith("{")][-1]
    result: dict[str, Any] = json.loads(line)
    return result


def prepare(root: Path, digits_images: int, effnet_images: int) -> dict[str, Path]:
    import numpy as np
    import torch
    from PIL import Image

    from isplit_export.data import _skimage_items
    from isplit_export.zoo import train_digits_cnn, write_digits_imagefolder

    model, _ = train_digits_cnn(seed=0)
    weights = root / "digits.pt"
    torch.save(model.state_dict(), weights)
    digits = write_digits_imagefolder(root / "digits", start=0, count=digits_images)
    photos = root / "photos"
    photos.mkdir()
    items = _skimage_items()
    for i in range(effnet_images):
        img = items[i % len(items)].opener().convert("RGB")
        Image.fromarray(np.asarray(img)).save(photos / f"{i:04d}.jpg", quality=90)
    return {"weights": weights, "digits": digits, "photos": photos}


def bench_rank(name: str, base: list[str]) -> list[dict[str, Any]]:
    rows = []
    for processes in (1, 2):
        for workers in (0, 2):
            r = launch(processes, [*base, "--workers", str(workers)])
            rows.append(
                {
                    "model": name,
                    "processes": processes,
                    "workers": workers,
                    **r,
                    "images_per_s": r["images"] / r["seconds"],
                }
            )
    ref = rows[0]["images_per_s"]
    for row in rows:
        row["speedup"] = row["images_per_s"] / ref
        print(
            f"{name:22} processes={row['processes']} workers={row['workers']}  {row['images']:5d} images "
            f"{row['seconds']:7.2f} s  {row['images_per_s']:8.1f} images/s  x{row['speedup']:.2f}"
        )
    return rows


def bench_gpu(batch: int = 64, repeats: int = 10) -> dict[str, float]:
    """ResNet-50 on one GPU: the ranking's forward+backward (one batch) against a plain training step."""
    import torch

    from isplit_export.models import load_model
    from isplit_export.ranking.graph import trace
    from isplit_export.ranking.importance import batch_scores

    model = load_model("resnet50", "none").module.cuda().eval()
    capture = trace(model, (3, 224, 224)).capture_module().cuda()
    x = torch.randn(batch, 3, 224, 224, device="cuda")
    labels = torch.full((batch,), -1)

    def ranking() -> None:
        batch_scores(capture, x, labels, "top")

    plain = load_model("resnet50", "none").module.cuda().eval()
    for p in plain.parameters():
        p.requires_grad_(True)

    def forward_backward() -> None:
        plain.zero_grad(set_to_none=True)
        plain(x).logsumexp(1).sum().backward()

    out = {}
    for label, fn in (("ranking", ranking), ("forward_backward", forward_backward)):
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(repeats):
            fn()
        torch.cuda.synchronize()
        out[f"{label}_images_per_s"] = batch * repeats / (time.perf_counter() - t)
    out["ranking_over_forward_backward_time"] = (
        out["forward_backward_images_per_s"] / out["ranking_images_per_s"]
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", choices=["rank", "study"])
    ap.add_argument("--model")
    ap.add_argument("--weights", default="default")
    ap.add_argument("--data")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--input-size", type=int)
    ap.add_argument("--out")
    ap.add_argument("--digits-images", type=int, default=1797)
    ap.add_argument("--effnet-images", type=int, default=48)
    ap.add_argument("--gpu", action="store_true")
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        paths = prepare(Path(tmp), args.digits_images, args.effnet_images)
        results: dict[str, Any] = {}
        results["digits_cnn"] = bench_rank(
            "digits_cnn",
            [
                "--child",
                "rank",
                "--model",
                "isplit_export.zoo:digits_cnn",
                "--weights",
                str(paths["weights"]),
                "--data",
                str(paths["digits"]),
            ],
        )
        study_rows = []
        for processes in (1, 2):
            r = launch(
                processes,
                [
                    "--child",
                    "study",
                    "--model",
                    "isplit_export.zoo:digits_cnn",
                    "--weights",
                    str(paths["weights"]),
                    "--data",
                    str(paths["digits"]),
                    "--out",
                    tmp + "/study",
                ],
            )
            study_rows.append({"processes": processes, "cuts": r["images"], "seconds": r["seconds"]})
        for row in study_rows:
            row["speedup"] = study_rows[0]["seconds"] / row["seconds"]
            print(
                f"digits_cnn study, all {row['cuts']} cuts: processes={row['processes']}  {row['seconds']:7.2f} s  "
                f"x{row['speedup']:.2f} (target >= 1.6 with 2)"
            )
        results["digits_cnn_study"] = study_rows
        results["efficientnet_lite0"] = bench_rank(
            "efficientnet_lite0@224",
            [
                "--child",
                "rank",
                "--model",
                "efficientnet_lite0",
                "--data",
                str(paths["photos"]),
                "--batch",
                "8",
            ],
        )
        if args.gpu:
            results["gpu_resnet50"] = bench_gpu()
            print(json.dumps(results["gpu_resnet50"]))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
