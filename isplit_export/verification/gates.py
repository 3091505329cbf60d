"""Verification gates: per boundary encoding / precision tolerances, kept as data.

A gate bounds three metrics of :func:`isplit_export.verification.metrics.compare_logits` on the golden images:
top-1 agreement with the full PyTorch model, the worst absolute logit error relative to the
largest absolute reference logit (``max_abs_rel``, scale-free so one number fits every model),
and the worst per-image cosine similarity. The values below are starting points chosen from the
arithmetic of each encoding (see each entry); measured numbers on real models may tighten them.

Golden sets are small (tens of images), so ``min_top1_agreement`` moves in steps of ``1/N``:
0.95 tolerates no flip below 20 images, one flip from 20 on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Gate:
    """Tolerances one verified pair must meet; ``name`` is the key in :data:`GATES`."""

    name: str
    min_top1_agreement: float
    max_abs_rel: float
    min_cosine: float

    def check(self, metrics: Mapping[str, float]) -> tuple[bool, list[str]]:
        """Return ``(passed, reasons)``; each reason names the metric, its value and the limit.

        A missing or non-finite metric fails (``nan`` compares false, so it can never pass).
        """
        reasons: list[str] = []
        limits = (
            ("top1_agreement", ">=", self.min_top1_agreement),
            ("max_abs_rel", "<=", self.max_abs_rel),
            ("cosine", ">=", self.min_cosine),
        )
        for key, op, limit in limits:
            if key not in metrics:
                reasons.append(f"{key} missing (gate {self.name} needs {op} {limit:g})")
                continue
            value = float(metrics[key])
            ok = value >= limit if op == ">=" else value <= limit
            if not ok or not math.isfinite(value):
                reasons.append(f"{key} {value:.6g} not {op} {limit:g} (gate {self.name})")
        return (not reasons, reasons)

    def to_json(self) -> dict[str, float | str]:
        """The gate as written to manifest.json / verify.json."""
        return asdict(self)


GATES: dict[str, Gate] = {
    # fp32 boundary, onnxruntime fp32 head+tail against PyTorch fp32: only kernel reordering
    # differs (errors ~1e-6 relative), so this is an equivalence check. 1e-4 x max|logit| leaves
    # two orders of margin; the cosine bound is implied by it (for K=1000 classes it means
    # cos >= 1 - 5e-6) and is only a safety net.
    "fp32": Gate("fp32", min_top1_agreement=1.0, max_abs_rel=1e-4, min_cosine=0.9999),
    # fp16 boundary: one rounding of the activation to 11 significant bits (relative error
    # <= 2^-11 ~ 5e-4 per element), then an fp32 tail; logit errors land around 1e-3 relative.
    # 1e-2 gives ~10x margin; a top-1 flip needs two logits within ~1e-3, rare but possible.
    "fp16": Gate("fp16", min_top1_agreement=0.95, max_abs_rel=1e-2, min_cosine=0.999),
    # int8 boundary: per-tensor affine uint8 (256 levels), error <= scale/2 per element, i.e.
    # ~0.2 % of the activation range; the tail amplifies it to a few % of the largest logit.
    "int8": Gate("int8", min_top1_agreement=0.90, max_abs_rel=1e-1, min_cosine=0.99),
    # INT8 QDQ head and tail (onnxruntime static quantization, every conv/matmul in int8):
    # quantization error accumulates over the whole network; what matters is the decision, so the
    # logit bound is loose and top-1 agreement / cosine carry the gate.
    "int8-qdq": Gate("int8-qdq", min_top1_agreement=0.80, max_abs_rel=3e-1, min_cosine=0.95),
    # The INT8 QDQ pair replayed on the golden images against the logits it produced at export time
    # (golden.npz "logits_int8", Polygraphy-style golden outputs): the same quantized model on another
    # machine, so only kernel differences remain. Accuracy against the full model was gated at export,
    # on every verification image, by "int8-qdq"; the few golden images cannot re-measure it (one
    # near-tie flip of 4 is 0.75 agreement). The tolerance comes from how far the results move between
    # the kernel sets we can run (benchmarks/bench_int8_kernels.py, docs/int8.md "One answer on every
    # CPU"; AMD EPYC with AVX512-VNNI, natively and under qemu-x86_64 -cpu Haswell, onnxruntime 1.32.0):
    # - exact integer mode (make_session), VNNI vs Haswell AVX2: bit-identical (max_abs_rel 0);
    # - float simulation of the same QDQ graph (ORT_DISABLE_ALL, other roundings, as a device with
    #   other fusions would round): max_abs_rel 0.024 / cosine >= 0.9978 (efficientnet_lite0, 3 splits),
    #   0.013 / 0.99994 (digits CNN);
    # - PyTorch references under ATEN_CPU_CAPABILITY default/avx2/avx512, ONEDNN_MAX_CPU_ISA=AVX2: <= 4.3e-7;
    # - the saturating AVX2 kernels (exact mode off, Haswell): 0.064 / 0.987 (lite0), 0.105 / 0.998 (digits).
    # So: max_abs_rel 5e-2 and cosine 0.995, twice the simulation's distance (error and deficit), which
    # every correct kernel set lies within; the saturating kernels fail max_abs_rel on both models.
    "int8-qdq-replay": Gate("int8-qdq-replay", min_top1_agreement=0.75, max_abs_rel=5e-2, min_cosine=0.995),
    # TensorRT on device, fp32 engines: TensorRT enables TF32 for convolutions/matmuls on Ampere+
    # (Orin) by default, 10-bit mantissa inputs with fp32 accumulation: fp16-boundary-like error.
    "trt-fp32": Gate("trt-fp32", min_top1_agreement=0.95, max_abs_rel=1e-2, min_cosine=0.999),
    # TensorRT fp16 engines: every layer may run in fp16 (activations and weights rounded at each
    # layer, not once at the boundary), so errors compound with depth: 5x the fp16 boundary bound.
    "trt-fp16": Gate("trt-fp16", min_top1_agreement=0.90, max_abs_rel=5e-2, min_cosine=0.995),
    # TensorRT int8 engines from the QDQ models: same scales as "int8-qdq", but TensorRT fuses
    # and reorders differently from onnxruntime; starts equal to the QDQ gate, to tune on device.
    "trt-int8": Gate("trt-int8", min_top1_agreement=0.80, max_abs_rel=3e-1, min_cosine=0.95),
}
"""Every gate by name: boundary encodings (onnxruntime), the QDQ pair, TensorRT precisions."""


def loosest(a: Gate, b: Gate) -> Gate:
    """A gate that admits what either admits: both error sources are present at once."""
    return Gate(
        name=f"{a.name}+{b.name}",
        min_top1_agreement=min(a.min_top1_agreement, b.min_top1_agreement),
        max_abs_rel=max(a.max_abs_rel, b.max_abs_rel),
        min_cosine=min(a.min_cosine, b.min_cosine),
    )
