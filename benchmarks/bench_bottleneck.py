"""Bottleneck cost and the digits study: seconds per split, bytes on the wire, Spearman of CUI and CDE.

    .venv/bin/python benchmarks/bench_bottleneck.py [--models efficientnet_lite0:default resnet50:none]
        [--splits 3] [--size 1/16] [--digits-data DIR] [--skip-models] [--skip-digits]

1. For each MODEL:WEIGHTS at its default input size (224) on the CPU with the default training budget
   (BottleneckOptions()): rank on the default images (skimage photos), split them train/held-out,
   and at --splits cuts (the top CUI candidates) train the bottleneck, export head+encoder and
   decoder+tail to ONNX, run them with onnxruntime on the held-out images and check them against
   PyTorch (tier 1) and the full model (tier 2). Prints seconds per split (train, export+verify,
   total; target <= 180 s on 2 cores), and code bytes vs fp32 boundary bytes vs input bytes.
2. The full digits-CNN study over all cuts, once with a ratio (1/8) and once with a fixed size
   (64B): seconds, and Spearman of CUI and of CDE with held-out accuracy, whatever they are.
Timings are noisy on a shared machine; run on a quiet one for the record.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def bench_model(spec: str, splits: int, size: str) -> None:
    from isplit_export.bottleneck import core as bn
    from isplit_export.bottleneck.holdout import split_holdout
    from isplit_export.exporting.encoding import decode_tail, encode_array, encode_head
    from isplit_export.exporting.onnx_export import to_onnx
    from isplit_export.exporting.onnx_utils import save_model
    from isplit_export.jobs.rank import rank
    from isplit_export.verification.checks import check_code_pair
    from isplit_export.verification.runners import OnnxrtRunner, run_pair

    name, weights = spec.split(":") if ":" in spec else (spec, "default")
    opts = bn.BottleneckOptions(size=size)
    t0 = time.perf_counter()
    ranked = rank(name, weights=weights)
    t_rank = time.perf_counter() - t0
    x, _, names = ranked.images.tensor()
    tr, ho = split_holdout(names, opts.holdout, 0)
    x_train, x_held = x[tr], x[ho]
    c, h, w = ranked.model.preprocessing.input_shape
    input_bytes = 4 * c * h * w
    with torch.no_grad():
        y_full = ranked.model.module(x_held).numpy()
    print(
        f"\n{name} ({weights}) {h}x{w}: {len(ranked.traced.cuts)} cuts, rank {t_rank:.1f} s on {len(x)} images; "
        f"train {len(tr)} / held out {len(ho)}; budget {opts.train_steps} steps x {opts.train_batch} images"
    )
    print(
        f"{'cut':>4} {'node':24} {'steps':>5} {'train s':>8} {'verify s':>8} {'total s':>8} "
        f"{'code B':>8} {'fp32 B':>9} {'input B':>8} {'code/fp32':>9} {'code/input':>10} {'max_abs_rel':>11} agreement"
    )
    totals = []
    for cut in ranked.ranking.ranked(splits):
        head, tail = ranked.traced.split(cut)
        t1 = time.perf_counter()
        trained = bn.train(cut, head, tail, x_train, opts, seed=0)
        t2 = time.perf_counter()
        with tempfile.TemporaryDirectory() as d:
            hp, tp = Path(d) / "head.onnx", Path(d) / "tail.onnx"
            code = torch.from_numpy(trained.code(x_held[:1]))
            save_model(
                encode_head(to_onnx(trained.head, x_held[:1], "input", "boundary"), trained.encoding), hp
            )
            save_model(decode_tail(to_onnx(trained.tail, code, "boundary", "logits"), trained.encoding), tp)
            sent, logits = run_pair(OnnxrtRunner(hp), OnnxrtRunner(tp), x_held.numpy())
            check = check_code_pair(
                trained.logits_from_code(sent),
                logits,
                encode_array(trained.code(x_held), trained.encoding),
                sent,
                y_full,
                np.full(len(x_held), -1),
            )
        t3 = time.perf_counter()
        totals.append(t3 - t1)
        p = trained.shape
        print(
            f"{cut.index:>4} {cut.node[:24]:24} {trained.summary['steps']:>5} {t2 - t1:>8.1f} {t3 - t2:>8.1f} "
            f"{t3 - t1:>8.1f} {p.code_bytes:>8} {cut.boundary_bytes:>9} {input_bytes:>8} "
            f"{p.code_bytes / cut.boundary_bytes:>9.4f} {p.code_bytes / input_bytes:>10.4f} "
            f"{check['metrics']['max_abs_rel']:>11.2e} {check['task']['value']:.1%} "
            f"[{check['task']['ci95'][0]:.0%}, {check['task']['ci95'][1]:.0%}] {'PASS' if check['gate']['passed'] else 'FAIL'}"
        )
    print(
        f"seconds per split: mean {np.mean(totals):.1f}, max {np.max(totals):.1f} (target <= 180 on 2 cores); "
        f"ratio max/180 = {np.max(totals) / 180:.2f}"
    )


def bench_digits(data: Path | None) -> None:
    from isplit_export.jobs.study import study
    from isplit_export.zoo import train_digits_cnn, write_digits_imagefolder

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        model, acc = train_digits_cnn(seed=0)
        weights = root / "digits.pt"
        torch.save(model.state_dict(), weights)
        if data is None:  # the digits the CNN never trained on (its last 25 %)
            data = write_digits_imagefolder(root / "digits", start=1348)
        print(f"\ndigits CNN (held-out accuracy {acc:.1%} from its own training), study data {data}")
        for size in ("1/8", "64B"):
            t0 = time.perf_counter()
            res = study(
                "isplit_export.zoo:digits_cnn",
                weights=str(weights),
                data=data,
                cuts="all",
                bottleneck=size,
                out=root / f"study-{size.replace('/', '_')}",
            )
            secs = time.perf_counter() - t0
            s = res.data["summary"]
            pc, pd = s["predictors"]["cui"], s["predictors"]["cde"]
            print(
                f"study --bottleneck {size}: {len(res.results)} cuts in {secs:.1f} s "
                f"({secs / len(res.results):.1f} s/cut); held-out {res.data['images']['held_out']} images"
            )
            for r in res.results:
                m = r.measured
                print(
                    f"  cut {r.index} {r.node:12} code {r.code_bytes:>4} B / fp32 {r.boundary_bytes:>6} B: "
                    f"{m['metric']} {m['value']:.1%} [{m['ci95'][0]:.1%}, {m['ci95'][1]:.1%}]"
                )
            print(
                f"  Spearman CUI {pc['spearman']} CI {pc['spearman_ci95']}, CDE {pd['spearman']} CI {pd['spearman_ci95']}; "
                f"Kendall CUI {pc['kendall']}, CDE {pd['kendall']}; regret {s['regret']}; CUI beats CDE: {s['cui_beats_cde']}"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=["efficientnet_lite0:default", "resnet50:none"])
    ap.add_argument("--splits", type=int, default=3)
    ap.add_argument("--size", default="1/16")
    ap.add_argument("--digits-data", type=Path, default=None)
    ap.add_argument("--skip-models", action="store_true")
    ap.add_argument("--skip-digits", action="store_true")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if not args.skip_digits:
        bench_digits(args.digits_data)
    if not args.skip_models:
        for spec in args.models:
            bench_model(spec, args.splits, args.size)


if __name__ == "__main__":
    main()
