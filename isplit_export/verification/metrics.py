"""Numerical comparison of logits, task accuracy and rank correlation (numpy only).

Torch-free on purpose: :mod:`isplit_export.verification.verify` uses these on a Jetson without PyTorch.
All arithmetic runs in float64 so the metric itself adds no error to what it measures.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

REL_FLOOR = 1e-3
"""Floor of the denominator of ``max_rel``, as a fraction of the largest absolute reference logit.

Plain elementwise relative error explodes on logits near zero (an error of 1e-6 on a logit of 1e-9
reads as 1000x). Dividing by ``max(|ref|, REL_FLOOR * max|ref|)`` keeps the metric relative for
the logits that matter and bounds it by ``max_abs_rel / REL_FLOOR`` for the tiny ones."""

_TINY = 1e-30  # guards divisions when the reference is all zeros


def _as_rows(x: np.ndarray) -> np.ndarray:
    """``x`` as a float64 ``[N, K]`` matrix (a 1-D vector is one row; extra dims are flattened)."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 0:
        return a.reshape(1, 1)
    if a.ndim == 1:
        return a.reshape(1, -1)
    return a.reshape(a.shape[0], -1)


def compare_logits(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """Compare ``got`` logits against reference logits ``ref`` (both ``[N, K]``).

    Returns:
        ``max_abs``: ``max |got - ref|``;
        ``max_abs_rel``: ``max_abs`` divided by the largest absolute reference logit (scale-free,
        the quantity the gates bound);
        ``max_rel``: ``max |got - ref| / max(|ref|, REL_FLOOR * max|ref|)`` elementwise (see
        :data:`REL_FLOOR`);
        ``mean_abs``: mean of ``|got - ref|``;
        ``cosine``: the *minimum* over rows of the cosine similarity of ``got[i]`` and ``ref[i]``
        (the worst image, not the average; two all-zero rows count as 1, one all-zero row as 0);
        ``top1_agreement``: fraction of rows whose argmax agrees.

    Non-finite values in ``got`` propagate as ``nan``/``inf``, which every gate rejects.

    Raises:
        ValueError: the shapes differ or there are no rows.
    """
    if np.shape(ref) != np.shape(got):
        raise ValueError(f"logit shapes differ: reference {np.shape(ref)} vs got {np.shape(got)}")
    if np.size(ref) == 0:
        raise ValueError("no logits to compare")
    r, g = _as_rows(ref), _as_rows(got)
    diff = np.abs(g - r)
    scale = float(np.max(np.abs(r)))
    max_abs = float(np.max(diff))
    floor = max(REL_FLOOR * scale, _TINY)
    rel = diff / np.maximum(np.abs(r), floor)

    nr, ng = np.linalg.norm(r, axis=1), np.linalg.norm(g, axis=1)
    dots = np.sum(r * g, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = dots / (nr * ng)
    both_zero = (nr == 0) & (ng == 0)
    one_zero = (nr == 0) ^ (ng == 0)
    cos = np.where(both_zero, 1.0, np.where(one_zero, 0.0, cos))
    cos = np.clip(cos, -1.0, 1.0)  # rounding can push |cos| a hair above 1

    return {
        "max_abs": max_abs,
        "max_abs_rel": max_abs / max(scale, _TINY),
        "max_rel": float(np.max(rel)),
        "mean_abs": float(np.mean(diff)),
        "cosine": float(np.min(cos)) if not np.isnan(cos).any() else float("nan"),
        "top1_agreement": float(np.mean(np.argmax(r, axis=1) == np.argmax(g, axis=1))),
    }


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float | None:
    """Top-1 accuracy of ``logits`` ``[N, K]`` over the rows whose label is known.

    Labels ``< 0`` mean "unknown" (the bundle stores -1 for unlabelled calibration photos) and are
    skipped. Returns ``None`` when no label is known, so callers fall back to agreement.
    """
    lab = np.asarray(labels).reshape(-1)
    rows = _as_rows(logits)
    if rows.shape[0] != lab.shape[0]:
        raise ValueError(f"{rows.shape[0]} logit rows but {lab.shape[0]} labels")
    known = lab >= 0
    if not known.any():
        return None
    pred = np.argmax(rows[known], axis=1)
    return float(np.mean(pred == lab[known]))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x``; tied values share the mean of the ranks they span."""
    order = np.argsort(x, kind="stable")
    sx = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sx[j + 1] == sx[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def spearman(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float | None:
    """Spearman rank correlation of ``a`` and ``b`` (Pearson correlation of average ranks).

    Ties get the average of the ranks they span (the usual "fractional ranking", as scipy does).
    Returns ``None`` when it is undefined: fewer than 2 points, or either vector is constant
    (or contains NaN). Used to ask whether the CUI order of the splits holds on the task metric.
    """
    x = np.asarray(a, dtype=np.float64).reshape(-1)
    y = np.asarray(b, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"spearman needs equal lengths, got {x.size} and {y.size}")
    if x.size < 2 or np.isnan(x).any() or np.isnan(y).any():
        return None
    rx, ry = _average_ranks(x), _average_ranks(y)
    dx, dy = rx - rx.mean(), ry - ry.mean()
    den = float(np.sqrt(np.sum(dx * dx) * np.sum(dy * dy)))
    if den == 0.0:
        return None
    return float(np.clip(np.sum(dx * dy) / den, -1.0, 1.0))


def _pair(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(a, dtype=np.float64).reshape(-1)
    y = np.asarray(b, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"{name} needs equal lengths, got {x.size} and {y.size}")
    return x, y


def kendall_tau(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float | None:
    """Kendall's tau-b of ``a`` and ``b``: concordant minus discordant pairs over the geometric mean of
    the pairs untied in ``a`` and untied in ``b``, i.e. ``sum sgn(da) sgn(db) / sqrt(sum sgn(da)^2 *
    sum sgn(db)^2)`` over all pairs ``i < j`` (ties handled as scipy's default ``variant="b"``).

    Returns ``None`` when it is undefined: fewer than 2 points, NaN, or either vector constant.
    O(n^2) pairs: meant for the handful of splits a study compares.
    """
    x, y = _pair(a, b, "kendall_tau")
    if x.size < 2 or np.isnan(x).any() or np.isnan(y).any():
        return None
    i, j = np.triu_indices(x.size, k=1)
    sx, sy = np.sign(x[j] - x[i]), np.sign(y[j] - y[i])
    den = float(np.sqrt(np.sum(sx * sx) * np.sum(sy * sy)))
    if den == 0.0:
        return None
    return float(np.clip(np.sum(sx * sy) / den, -1.0, 1.0))


def bootstrap_ci(
    stat_fn: Callable[[np.ndarray, np.ndarray], float | None],
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    reps: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float] | None:
    """Percentile bootstrap CI of ``stat_fn(a, b)`` over *paired* samples (e.g. a rank correlation).

    Each of ``reps`` replicates draws ``n`` indices with replacement (``numpy.random.default_rng(seed)``,
    so the same seed gives the same interval) and evaluates ``stat_fn(a[idx], b[idx])``. Replicates where
    the statistic is undefined (``None``/NaN, e.g. a resample whose values are all tied) are left out.
    Returns ``(lo, hi)``, or ``None`` when fewer than 2 points or under half the replicates are defined.
    """
    x, y = _pair(a, b, "bootstrap_ci")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if x.size < 2 or reps < 1:
        return None
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(reps, x.size))
    values = []
    for row in idx:
        v = stat_fn(x[row], y[row])
        if v is not None and math.isfinite(v):
            values.append(float(v))
    if len(values) < max(1, reps // 2):
        return None
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(np.array(values), [tail, 100.0 - tail])
    return float(lo), float(hi)


Z95 = 1.959963984540054
"""The standard normal quantile for a two-sided 95 % interval."""


def proportion_ci(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval (95 % by default) for a proportion of ``k`` successes in ``n`` trials.

    Wilson rather than the normal (Wald) interval: it stays inside [0, 1] and keeps its coverage near
    0 and 1 (an accuracy of 100 % on 50 images gives [0.929, 1], not [1, 1]). ``n = 0`` gives [0, 1].
    """
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)
