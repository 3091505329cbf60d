"""Split overhead in onnxruntime: (head + tail) / full latency at batch 1, and boundary bytes per encoding.

    .venv/bin/python benchmarks/bench_latency.py [--models resnet50 efficientnet_lite0] [--runs 50]

For each model, the top-3 I-Split splits (ranked on 4 skimage photos) are exported as fp32 ONNX
head/tail pairs; head, tail and full model run interleaved at batch 1 on the CPU execution provider
(1 intra-op thread, median of --runs). Target: ratio <= 1.05. Bytes per image are those the head
really emits for each boundary encoding (fp32 / fp16 / int8).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from isplit_export.api import rank
from isplit_export.encoding import calibrate_encoding, decode_tail, encode_head
from isplit_export.onnx_export import export_file, to_onnx
from isplit_export.onnx_utils import save_model
from isplit_export.verify import measure_latency, run_pair_onnx


def bench(name: str, runs: int, tmp: Path) -> list[dict[str, object]]:
    weights = "default" if name == "efficientnet_lite0" else "none"
    ranked = rank(name, weights=weights, images=4, top=3, batch_size=4)
    x, _, _ = ranked.images.tensor()
    full = export_file(ranked.model.module, x[:1], tmp / f"{name}-full.onnx", "input", "logits")
    rows = []
    for cut in ranked.ranking.ranked(3):
        head_gm, tail_gm = ranked.traced.split(cut)
        with torch.no_grad():
            b = head_gm(x)
        head_p, tail_p = tmp / f"{name}-{cut.node}-head.onnx", tmp / f"{name}-{cut.node}-tail.onnx"
        head, tail = to_onnx(head_gm, x[:1], "input", "boundary"), to_onnx(tail_gm, b[:1], "boundary", "logits")
        save_model(head, head_p)
        save_model(tail, tail_p)
        lat = measure_latency({"head": head_p, "tail": tail_p, "full": full}, x[:1].numpy(), runs=runs)
        sizes = {}
        for enc_name in ("fp32", "fp16", "int8"):
            enc = calibrate_encoding(enc_name, b.numpy())
            hp, tp = tmp / "h.onnx", tmp / "t.onnx"
            save_model(encode_head(head, enc), hp)
            save_model(decode_tail(tail, enc), tp)
            boundary, _ = run_pair_onnx(hp, tp, x[:1].numpy())
            sizes[enc_name] = int(boundary[0].nbytes)
        row = {"model": name, "cut": cut.node, "shape": list(cut.shape), **lat, "bytes_per_image": sizes,
               "input_bytes": int(np.prod(x.shape[1:])) * 4}  # fmt: skip
        rows.append(row)
        print(
            f"{name:18} {cut.node:24} head {lat['head_ms']:7.2f} ms  tail {lat['tail_ms']:7.2f} ms  "
            f"full {lat['full_ms']:7.2f} ms  (head+tail)/full {lat['ratio']:.3f}  "
            f"bytes/img fp32 {sizes['fp32']}  fp16 {sizes['fp16']}  int8 {sizes['int8']}  (input {row['input_bytes']})"
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["resnet50", "efficientnet_lite0"])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name in args.models:
            rows += bench(name, args.runs, Path(d))
    ratios = [float(r["ratio"]) for r in rows]  # type: ignore[arg-type]
    print(f"(head+tail)/full: min {min(ratios):.3f}, median {float(np.median(ratios)):.3f}, max {max(ratios):.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
