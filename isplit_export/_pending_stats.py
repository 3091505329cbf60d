"""TEMPORARY stand-ins for the statistics helpers coming to :mod:`isplit_export.metrics` (branch ``bootstrap``).

Same names and signatures as agreed (``kendall_tau``, ``bootstrap_ci``, ``proportion_ci``); deleted
once that branch is merged. Import them as ``from .stats import ...`` (see :mod:`isplit_export.stats`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np


def kendall_tau(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float | None:
    """Kendall's tau-b of ``a`` and ``b`` (ties handled); None when undefined (n < 2 or a constant vector)."""
    x = np.asarray(a, dtype=np.float64).reshape(-1)
    y = np.asarray(b, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"kendall_tau needs equal lengths, got {x.size} and {y.size}")
    if x.size < 2 or np.isnan(x).any() or np.isnan(y).any():
        return None
    i, j = np.triu_indices(x.size, k=1)
    dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    n0 = float(len(i))
    n1, n2 = float(np.sum(dx == 0)), float(np.sum(dy == 0))
    den = math.sqrt((n0 - n1) * (n0 - n2))
    if den == 0.0:
        return None
    return float(np.clip(np.sum(dx * dy) / den, -1.0, 1.0))


def bootstrap_ci(
    stat_fn: Callable[[np.ndarray, np.ndarray], float | None],
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    reps: int = 1000,
    seed: int = 0,
) -> tuple[float, float] | None:
    """95 % percentile bootstrap CI of ``stat_fn(a, b)`` resampling the (a_i, b_i) pairs; None if undefined."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(reps):
        idx = rng.integers(0, len(x), len(x))
        v = stat_fn(x[idx], y[idx])
        if v is not None and math.isfinite(v):
            vals.append(v)
    if not vals:
        return None
    lo, hi = np.percentile(np.asarray(vals), [2.5, 97.5])
    return float(lo), float(hi)


def proportion_ci(k: int, n: int) -> tuple[float, float]:
    """Wilson score 95 % interval of a proportion ``k / n``."""
    if n <= 0:
        return 0.0, 1.0
    z = 1.959963984540054
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)
