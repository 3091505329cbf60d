"""Statistics of the study, the bundle report and the probe: rank correlations, bootstrap intervals, Wilson.

numpy only (torch-free, like :mod:`isplit_export.verification.metrics`), float64 throughout, seeded.

* :func:`spearman`, :func:`kendall_tau`: rank correlations with ties handled as scipy does;
* :func:`bootstrap_ci`: percentile bootstrap over *paired* points (cuts); :func:`percentile_ci` (one
  statistic) and :func:`percentile_ci_columns` (one interval per column of ``[B, cuts]`` replicates,
  the ranking's CUI bootstrap) are the one home of percentile intervals;
* :func:`two_level_replicates`: the study's two-level bootstrap. Per cut ``c``, repeat (training seed)
  ``r`` and held-out image ``i`` the study has an outcome ``m[c, r, i]`` (1 when the pair got the image
  right). One replicate draws the images with replacement (the same draw for every cut: the images are
  shared), and for each cut its repeats with replacement (trainings are independent per cut); the cut's
  value is the mean of ``m`` over the drawn repeats and images. Training noise and image sampling both
  enter the interval;
* :func:`replicate_ci`, :func:`difference_ci`: the CI of a statistic, and of the difference of two
  predictors' statistics, over the *same* replicates (paired, so shared noise cancels);
* :func:`proportion_ci`: Wilson score interval of a proportion.

:data:`MIN_TO_CONCLUDE` is the one "too few to conclude" count used by the study and the bundle.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

MIN_TO_CONCLUDE = 5
"""Below this many measured cuts (splits) a rank correlation says nothing (3 points have only 6 orders)."""

CI_LEVEL = 0.95
"""Two-sided level of every interval here."""


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


def _pair(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, name: str
) -> tuple[np.ndarray, np.ndarray]:
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


def percentile_ci(
    values: Sequence[float | None] | np.ndarray, level: float = CI_LEVEL
) -> tuple[float, float] | None:
    """Percentile interval of bootstrap ``values``; undefined ones (None/NaN) are left out.

    None when fewer than half of the values are defined (the statistic is then not estimable)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals or len(vals) < max(1, len(values) // 2):
        return None
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(np.array(vals), [tail, 100.0 - tail])
    return float(lo), float(hi)


def percentile_ci_columns(replicates: np.ndarray, level: float = CI_LEVEL) -> np.ndarray:
    """The percentile interval ``[cuts, 2]`` of each column of replicate values ``[B, cuts]``.

    Rows with any NaN are left out (a replicate that left a cut undefined); all NaN when none is left."""
    valid = replicates[~np.isnan(replicates).any(axis=1)]
    if valid.shape[0] == 0:
        return np.full((replicates.shape[1], 2), np.nan)
    tail = 100.0 * (1.0 - level) / 2.0
    return np.percentile(valid, [tail, 100.0 - tail], axis=0).T


def two_level_replicates(outcomes: np.ndarray, reps: int = 1000, seed: int = 0) -> np.ndarray:
    """``[reps, cuts]`` bootstrap replicates of the per-cut mean of ``outcomes`` ``[cuts, repeats, images]``.

    Images are drawn with replacement once per replicate (shared by the cuts); each cut's repeats are
    drawn with replacement independently. ``numpy.random.default_rng(seed)``: same seed, same replicates.
    """
    m = np.asarray(outcomes, dtype=np.float64)
    if m.ndim != 3 or 0 in m.shape:
        raise ValueError(f"outcomes must be [cuts, repeats, images] and non-empty, got shape {m.shape}")
    c, r, n = m.shape
    rng = np.random.default_rng(seed)
    out = np.empty((reps, c), dtype=np.float64)
    rows = np.arange(c)[:, None]
    for b in range(reps):
        img = rng.integers(0, n, size=n)
        per_rep = m[:, :, img].mean(axis=2)  # [cuts, repeats]
        rep = rng.integers(0, r, size=(c, r))
        out[b] = per_rep[rows, rep].mean(axis=1)
    return out


def replicate_ci(
    stat_fn: Callable[[np.ndarray, np.ndarray], float | None],
    pred: Sequence[float] | np.ndarray,
    replicates: np.ndarray,
    level: float = CI_LEVEL,
) -> tuple[float, float] | None:
    """CI of ``stat_fn(pred, values)`` over replicate ``values`` (rows of :func:`two_level_replicates`)."""
    p = np.asarray(pred, dtype=np.float64)
    return percentile_ci([stat_fn(p, row) for row in np.asarray(replicates)], level)


def difference_ci(
    stat_fn: Callable[[np.ndarray, np.ndarray], float | None],
    pred_a: Sequence[float] | np.ndarray,
    pred_b: Sequence[float] | np.ndarray,
    replicates: np.ndarray,
    level: float = CI_LEVEL,
) -> tuple[float, float] | None:
    """CI of ``stat_fn(a, values) - stat_fn(b, values)`` over the same replicates (paired).

    ``replicates`` is ``[reps, points]``: the measured values resampled (:func:`two_level_replicates`)."""
    a, b = np.asarray(pred_a, dtype=np.float64), np.asarray(pred_b, dtype=np.float64)
    diffs: list[float | None] = []
    for row in np.asarray(replicates):
        sa, sb = stat_fn(a, row), stat_fn(b, row)
        diffs.append(None if sa is None or sb is None else sa - sb)
    return percentile_ci(diffs, level)


def separated_pairs(replicates: np.ndarray, level: float = CI_LEVEL) -> list[tuple[int, int]]:
    """The pairs ``(i, j)``, ``i < j``, of points whose difference ``values[i] - values[j]`` has a percentile
    CI over the (paired) ``replicates`` ``[reps, points]`` that excludes 0: the differences the data show.

    One interval per pair, not corrected for the number of pairs."""
    r = np.asarray(replicates, dtype=np.float64)
    n = r.shape[1] if r.ndim == 2 else 0
    return [
        (i, j)
        for i in range(n)
        for j in range(i + 1, n)
        if excludes_zero(percentile_ci(r[:, i] - r[:, j], level))
    ]


def pair_order(
    pred: Sequence[float] | np.ndarray, values: Sequence[float] | np.ndarray, pairs: Sequence[tuple[int, int]]
) -> dict[str, int]:
    """How ``pred`` orders the ``pairs`` of ``values``: ``right`` (same sign), ``wrong`` (opposite) or ``tied``
    (``pred`` equal, or ``values`` equal)."""
    p, v = _pair(pred, values, "pred")
    signs = [np.sign(p[i] - p[j]) * np.sign(v[i] - v[j]) for i, j in pairs]
    return {
        "right": sum(1 for s in signs if s > 0),
        "wrong": sum(1 for s in signs if s < 0),
        "tied": sum(1 for s in signs if s == 0),
    }


def excludes_zero(ci: tuple[float, float] | Sequence[float | None] | None) -> bool:
    """True when the interval exists and lies entirely above or entirely below 0."""
    if ci is None or ci[0] is None or ci[1] is None:
        return False
    lo, hi = float(ci[0]), float(ci[1])
    return lo > 0.0 or hi < 0.0
