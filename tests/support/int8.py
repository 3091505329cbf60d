"""Properties of an INT8 pair that hold on every CPU, for the tests that used to pin one CPU's thresholds.

The integer kernels of the tool's sessions and the float simulation of the same QDQ graph
(``ORT_DISABLE_ALL``) are two roundings of the same real-valued computation: the same int8 weights,
the same scales. They differ only in the activation roundings they do differently: onnxruntime fuses
``Conv -> Q -> DQ -> Clip -> Q`` into one requantization (one rounding where the simulation has two),
quantizes the float biases to int32, and flips one output step at near-ties
(``tests/unit/exporting/test_int8_kernels.py``). Each of those is at most half an activation step, like
the roundings the quantization error itself is made of, and the simulation's error against the fp32
pair holds every activation rounding plus the weight rounding. So the noise energy between integer
and simulation is at most that of simulation vs fp32, and since the cosine deficit ``1 - cos`` of a
small perturbation is half its energy relative to the signal's: mean deficit(integer, simulation)
<= :data:`MAX_KERNEL_SHARE` (1.0) x mean deficit(simulation, fp32 pair). Measured on an AMD EPYC
(docs/int8.md): 0.14-0.15 on the digits pair, 0.65-0.66 on efficientnet_lite0's three default splits.
The int16 saturation of AVX2 kernels without VNNI is not a rounding: under ``qemu-x86_64 -cpu
Haswell`` with the exact mode off it measured 4.6x on efficientnet_lite0's split 01 and 66x on the
digits pairs.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnxruntime as ort

from isplit_export.exporting.onnx_utils import make_session, run_session

MAX_KERNEL_SHARE = 1.0
"""Largest mean cosine deficit of integer vs simulation, as a share of simulation vs the fp32 reference."""
Z = 3.0
"""Standard errors allowed between two top-1 agreements measured on the same images (about 1 in 700 by chance)."""


def pair_logits(head: Path, tail: Path, x: np.ndarray, *, simulate: bool = False) -> np.ndarray:
    """The pair's logits, one image at a time: the tool's sessions, or the float simulation of the graph."""
    level = (
        ort.GraphOptimizationLevel.ORT_DISABLE_ALL if simulate else ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    )
    hs, ts = make_session(head, optimization=level), make_session(tail, optimization=level)
    h_in, t_in = hs.get_inputs()[0].name, ts.get_inputs()[0].name
    out = [run_session(ts, {t_in: run_session(hs, {h_in: x[i : i + 1]})[0]})[0] for i in range(len(x))]
    return np.concatenate(out)


def mean_deficit(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over images of ``1 - cos(a_i, b_i)`` (float64)."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    cos = np.sum(a64 * b64, axis=1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))
    return float(np.mean(1.0 - cos))


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Top-1 agreement of two logit sets."""
    return float(np.mean(a.argmax(1) == b.argmax(1)))


def assert_kernels_agree(integer: np.ndarray, simulated: np.ndarray, reference: np.ndarray) -> None:
    """Integer kernels within :data:`MAX_KERNEL_SHARE` of the simulation's own deficit, and the same top-1
    agreement with ``reference`` to :data:`Z` standard errors of a difference of two proportions."""
    kernel, quant = mean_deficit(integer, simulated), mean_deficit(simulated, reference)
    print(f"cosine deficit: integer vs simulation {kernel:.3g}, simulation vs reference {quant:.3g}")
    assert kernel <= MAX_KERNEL_SHARE * quant, (kernel, quant)
    a_int, a_sim = agreement(integer, reference), agreement(simulated, reference)
    n = len(reference)
    p = max(min((a_int + a_sim) / 2, 1 - 1 / n), 1 / n)  # kept off 0 / 1 so one flip is always within reach
    margin = Z * math.sqrt(2 * p * (1 - p) / n)
    print(
        f"top-1 agreement with the reference: integer {a_int:.3f}, simulation {a_sim:.3f} (margin {margin:.3f})"
    )
    assert a_int >= a_sim - margin, (a_int, a_sim, margin)
