"""fp32 vs INT8 in onnxruntime, split overhead, boundary bytes, and bundle sizes per weights layout.

    .venv/bin/python benchmarks/bench_latency.py [--models resnet50 efficientnet_lite0] [--runs 50]
        [--bundles]      also build three reference bundles and print their sizes (minutes; vgg16 ~10 min)

For each model, the top-3 I-Split splits (ranked on the 19 skimage photos; resnet50 with random
weights, ``--weights none``, as no download happens here) are exported as fp32 ONNX head/tail pairs and
quantized to INT8 QDQ pairs (:func:`isplit_export.exporting.quantize.build_int8_pair`, calibrated on the same
photos). fp32 head, fp32 tail, full model, INT8 head and INT8 tail run interleaved at batch 1 on the CPU
execution provider (1 intra-op thread, median of --runs). Printed per split: fp32 and INT8 latency side
by side with the speed-up, file sizes with the INT8/fp32 ratio, (head + tail) / full, and the bytes per
image the head emits for each boundary encoding. Targets: resnet50 INT8 head and tail >= 1.4x
faster and <= 0.3x the size; efficientnet_lite0 INT8 at least as fast as fp32; (head+tail)/full <= 1.05.

``--bundles`` builds, with the CLI defaults (shared weights layout), ``resnet50 --weights none --top 3
--target jetson`` (target <= 300 MB), ``efficientnet_lite0 --top 3 --target jetson`` (<= 60 MB) and
``vgg16 --weights none --top 3 --target onnx`` (<= 800 MB), and the same with ``--weights-layout inline``
for comparison, and prints each bundle's total size.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from isplit_export.exporting.encoding import calibrate_encoding, decode_tail, encode_head
from isplit_export.exporting.onnx_export import export_file, to_onnx
from isplit_export.exporting.onnx_utils import save_model
from isplit_export.exporting.quantize import build_int8_pair
from isplit_export.jobs.rank import rank
from isplit_export.verification.runners import LATENCY_THREADS, OnnxrtRunner, measure_latency, run_pair

BUNDLES = [
    ("resnet50", ("--weights", "none", "--top", "3", "--target", "jetson"), 300),
    ("efficientnet_lite0", ("--top", "3", "--target", "jetson"), 60),
    ("vgg16", ("--weights", "none", "--top", "3", "--target", "onnx"), 800),
]


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def bench(name: str, runs: int, tmp: Path) -> list[dict[str, object]]:
    weights = "default" if name == "efficientnet_lite0" else "none"
    ranked = rank(name, weights=weights, top=3, batch_size=4)
    x, _, _ = ranked.images.tensor()
    xn = x.numpy()
    full = export_file(ranked.model.module, x[:1], tmp / f"{name}-full.onnx", "input", "logits")
    rows = []
    for cut in ranked.ranking.ranked(3):
        head_gm, tail_gm = ranked.traced.split(cut)
        with torch.no_grad():
            b = head_gm(x)
        stem = tmp / f"{name}-{cut.node}"
        head_p, tail_p = Path(f"{stem}-head.onnx"), Path(f"{stem}-tail.onnx")
        head, tail = (
            to_onnx(head_gm, x[:1], "input", "boundary"),
            to_onnx(tail_gm, b[:1], "boundary", "logits"),
        )
        save_model(head, head_p)
        save_model(tail, tail_p)
        qhead_p, qtail_p = Path(f"{stem}-head.int8.onnx"), Path(f"{stem}-tail.int8.onnx")
        build_int8_pair(head_p, tail_p, xn, qhead_p, qtail_p, calibrate_encoding("fp32", b.numpy()))
        timed = {"head": head_p, "tail": tail_p, "full": full, "head_int8": qhead_p, "tail_int8": qtail_p}
        lat = measure_latency(
            {k: OnnxrtRunner(p, threads=LATENCY_THREADS) for k, p in timed.items()}, xn[:1], runs=runs
        )
        sizes = {
            k: p.stat().st_size
            for k, p in (("head", head_p), ("tail", tail_p), ("head_int8", qhead_p), ("tail_int8", qtail_p))
        }
        boundary_bytes = {}
        for enc_name in ("fp32", "fp16", "int8"):
            enc = calibrate_encoding(enc_name, b.numpy())
            hp, tp = tmp / "h.onnx", tmp / "t.onnx"
            save_model(encode_head(head, enc), hp)
            save_model(decode_tail(tail, enc), tp)
            boundary, _ = run_pair(OnnxrtRunner(hp), OnnxrtRunner(tp), xn[:1])
            boundary_bytes[enc_name] = int(boundary[0].nbytes)
        row = {
            "model": name,
            "cut": cut.node,
            "shape": list(cut.shape),
            **lat,
            "bytes": sizes,
            "bytes_per_image": boundary_bytes,
            "input_bytes": int(np.prod(x.shape[1:])) * 4,
        }
        rows.append(row)
        for part in ("head", "tail"):
            fp, q = lat[f"{part}_ms"], lat[f"{part}_int8_ms"]
            print(
                f"{name:18} {cut.node:18} {part}: fp32 {fp:8.2f} ms  int8 {q:8.2f} ms  ({fp / q:4.2f}x faster)  "
                f"fp32 {_mb(sizes[part]):>9}  int8 {_mb(sizes[part + '_int8']):>9}  "
                f"({sizes[part + '_int8'] / sizes[part]:.3f}x the size)"
            )
        print(
            f"{name:18} {cut.node:18} full {lat['full_ms']:.2f} ms, (head+tail)/full {lat['ratio']:.3f}; "
            f"boundary bytes/img fp32 {boundary_bytes['fp32']} fp16 {boundary_bytes['fp16']} "
            f"int8 {boundary_bytes['int8']} (input {row['input_bytes']})"
        )
    return rows


def bundle_sizes(tmp: Path) -> list[dict[str, object]]:
    """Build the reference bundles (module docstring) in both layouts and return their sizes."""
    from isplit_export.cli import main

    rows = []
    for model, args, limit in BUNDLES:
        for layout in ("shared", "inline"):
            out = tmp / f"{model}-{layout}"
            code = main([model, *args, "--weights-layout", layout, "--out", str(out), "--latency-runs", "3"])
            total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
            rows.append({"model": model, "args": list(args), "layout": layout, "bytes": total, "exit": code})
            note = f"(target <= {limit} MB)" if layout == "shared" else ""
            print(
                f"bundle {model} {' '.join(args)} --weights-layout {layout}: {_mb(total)} {note}", flush=True
            )
            if layout == "inline":
                import shutil

                shutil.rmtree(out)  # keep the disk footprint of the run small
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["resnet50", "efficientnet_lite0"])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--bundles", action="store_true", help="also build the bundles and print their sizes")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as d:
        for name in args.models:
            rows += bench(name, args.runs, Path(d))
        ratios = [float(r["ratio"]) for r in rows]  # type: ignore[arg-type]
        print(
            f"(head+tail)/full: min {min(ratios):.3f}, median {float(np.median(ratios)):.3f}, max {max(ratios):.3f}"
        )
        if args.bundles:
            rows += bundle_sizes(Path(d))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
