"""Ranking uncertainty: a streaming Poisson bootstrap of the CUI, and what it says about the ranking.

With few images (19 skimage photos by default) neighbouring local maxima of the CUI curve are often
within noise of each other. The Poisson bootstrap (Hanley & MacGibbon 2006; Chamandy et al. 2012,
"Estimating uncertainty for massive data streams") resamples a stream without storing it: each image
gets, in each of B replicates, an independent Poisson(1) weight ``w``, and replicate ``b`` keeps only

    S_b[c] = sum_i w_bi * s(x_i, c)        N_b = sum_i w_bi          CUI*_b[c] = S_b[c] / N_b

per class key, so memory is ``keys x B x cuts`` whatever the number of images, and a class subset's
replicate is the ratio of its keys' sums, like the CUI itself.

Determinism. The weight of image ``i`` in replicate ``b`` is a pure function of ``(seed, i, b)``
(:func:`poisson_weights`: a SplitMix64 hash, then the Poisson(1) inverse CDF), never of a random
stream's position: batch sizes 1, 7 or 40, or processes that each read a shard of the images, give
every image the same weights. The sums are held as double-double numbers (``hi + lo``, error-free
TwoSum; each product ``w * s`` is split so that it is exact), so they equal the exact sum to about
2**-106 relative and do not depend on the order of the additions or of :meth:`BootstrapSums.merge`.

What :func:`summarize_uncertainty` derives (all from the same paired replicates, so the strong correlation of
the CUI at neighbouring cuts, which share the images, is accounted for):

* ``cui_ci``: the 95 % percentile interval of CUI*_b per cut;
* ``rank_stability``: per candidate (a local maximum of the point-estimate curve), the fraction of
  replicates in which it keeps its rank among the candidates (the candidate set is held fixed);
* ``ties``: two candidates cannot be told apart when their order flips in more than
  :data:`FLIP_THRESHOLD` (5 %) of the replicates, i.e. the one-sided 95 % bootstrap interval of their
  CUI difference contains 0. Overlapping per-cut CIs are *not* used: they ignore the pairing and
  call almost every pair of neighbouring cuts a tie.

Replicates in which a class subset gets total weight 0 (probability exp(-n) for n images) are
undefined and left out; ``valid_replicates`` says how many remain.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from isplit_export.numbers import rounded
from isplit_export.stats import percentile_ci_columns

FLIP_THRESHOLD = 0.05
"""Two candidates are a tie when their order flips in more than this fraction of the replicates."""
METHOD = (
    "Poisson(1) bootstrap over images (weights a pure function of seed and image index); "
    "percentile 95 % CI of CUI per cut; rank_stability = fraction of replicates in which a candidate "
    "keeps its rank among the candidates; a pair is a tie when its order flips in more than 5 % of replicates"
)

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_E_INV = 0.36787944117144233  # exp(-1) as the nearest float64, written out so no libm enters the table


def _poisson1_cdf() -> np.ndarray:
    """P(X <= k) for X ~ Poisson(1), k = 0, 1, ... until the tail is below float64 resolution."""
    p, cdf, k = _E_INV, [], 0
    total = 0.0
    while True:
        total += p
        cdf.append(total)
        k += 1
        p /= k
        if p < 2.0**-60:
            break
    cdf[-1] = 1.0  # the remaining tail (< 1e-18) goes to the last value
    return np.array(cdf, dtype=np.float64)


_CDF = _poisson1_cdf()
MAX_WEIGHT = len(_CDF) - 1
"""The largest weight :func:`poisson_weights` can return (the Poisson tail beyond is < 2**-60)."""


def _mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on a uint64 array (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def poisson_weights(seed: int, indices: Sequence[int] | np.ndarray, replicates: int) -> np.ndarray:
    """Poisson(1) weights ``[len(indices), replicates]`` (int64) of the images with these global indices.

    ``w[i, b] = F^-1(u)`` with ``u`` the top 53 bits of ``mix(mix(seed + G + (index+1) * G) + (b+1) * G)``
    (SplitMix64, ``G`` the golden-ratio increment) and ``F`` the Poisson(1) CDF: a pure function of
    ``(seed, index, b)``, the same on every platform, in any batch and in any process.
    """
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if (idx < 0).any():
        raise ValueError("image indices must be non-negative")
    base = np.uint64((seed + _GOLDEN) & _MASK)
    with np.errstate(over="ignore"):
        keys = _mix64(
            _mix64(np.full(idx.shape, base) + (idx.astype(np.uint64) + np.uint64(1)) * np.uint64(_GOLDEN))
        )
        steps = (np.arange(1, replicates + 1, dtype=np.uint64) * np.uint64(_GOLDEN))[None, :]
        bits = _mix64(keys[:, None] + steps)
    u = (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return np.searchsorted(_CDF, u, side="right").astype(np.int64)


def _two_sum(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Knuth's TwoSum: ``s + e == a + b`` exactly, ``s = fl(a + b)``."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _exact_parts(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``s = s1 + s2`` with at most 24 and 29 significant bits, so ``w * s1`` and ``w * s2`` are exact
    for weights below 2**24 (float32 scores, the usual case, have ``s2 == 0``)."""
    s1 = s.astype(np.float32).astype(np.float64)
    return s1, s - s1


@dataclass
class BootstrapSums:
    """B Poisson-bootstrap replicate sums per class key: ``hi + lo`` (double-double) ``[B, cuts]`` of the
    weighted scores and ``n`` ``[B]`` of the weights. Mergeable: :meth:`merge`."""

    replicates: int
    num_cuts: int
    seed: int = 0
    hi: dict[int, np.ndarray] = field(default_factory=dict)
    lo: dict[int, np.ndarray] = field(default_factory=dict)
    n: dict[int, np.ndarray] = field(default_factory=dict)
    seen: int = 0
    """Images added so far: the default global index of the next image (single process, in order)."""

    def _slot(self, key: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if key not in self.hi:
            self.hi[key] = np.zeros((self.replicates, self.num_cuts))
            self.lo[key] = np.zeros((self.replicates, self.num_cuts))
            self.n[key] = np.zeros(self.replicates, dtype=np.int64)
        return self.hi[key], self.lo[key], self.n[key]

    def add(
        self, keys: Sequence[int], scores: np.ndarray, indices: Sequence[int] | np.ndarray | None = None
    ) -> None:
        """Add images with class ``keys`` [n], ``scores`` [n, cuts] and global ``indices`` [n]
        (default: the next ``n`` positions after the images added so far)."""
        s = np.asarray(scores, dtype=np.float64)
        if s.ndim != 2 or s.shape != (len(keys), self.num_cuts):
            raise ValueError(f"scores must be [{len(keys)}, {self.num_cuts}], got {s.shape}")
        if indices is None:
            indices = np.arange(self.seen, self.seen + len(keys))
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.shape[0] != len(keys):
            raise ValueError(f"{len(keys)} keys but {idx.shape[0]} indices")
        self.seen += len(keys)
        if self.replicates == 0 or len(keys) == 0:
            return
        w = poisson_weights(self.seed, idx, self.replicates).astype(np.float64)
        s1, s2 = _exact_parts(s)
        exact_split = bool(s2.any())
        for i, key in enumerate(keys):
            hi, lo, n = self._slot(int(key))
            wi = w[i][:, None]
            hi[...], err = _two_sum(hi, wi * s1[i][None, :])
            lo += err
            if exact_split:
                hi[...], err = _two_sum(hi, wi * s2[i][None, :])
                lo += err
            n += w[i].astype(np.int64)

    def merge(self, other: BootstrapSums) -> None:
        """Add ``other``'s sums (another shard of the images, same seed and B) into these."""
        if (other.replicates, other.num_cuts, other.seed) != (self.replicates, self.num_cuts, self.seed):
            raise ValueError("cannot merge bootstrap sums with different replicates, cuts or seed")
        for key in sorted(other.hi):
            hi, lo, n = self._slot(key)
            hi[...], err = _two_sum(hi, other.hi[key])
            lo += err + other.lo[key]
            n += other.n[key]
        self.seen += other.seen

    @property
    def nbytes(self) -> int:
        """Bytes held by the replicate arrays (``keys x B x (2 cuts + 1) x 8``; independent of N)."""
        return sum(a.nbytes for d in (self.hi, self.lo, self.n) for a in d.values())

    def replicate_cui(self, classes: Iterable[int] | None = None) -> np.ndarray:
        """CUI*_b per replicate and cut ``[B, cuts]`` over all keys or over ``classes``; NaN rows where
        the subset got total weight 0 in that replicate."""
        keys = sorted(self.hi) if classes is None else sorted({int(k) for k in classes if int(k) in self.hi})
        hi = np.zeros((self.replicates, self.num_cuts))
        lo = np.zeros((self.replicates, self.num_cuts))
        n = np.zeros(self.replicates, dtype=np.int64)
        for k in keys:
            hi, err = _two_sum(hi, self.hi[k])
            lo = lo + err + self.lo[k]
            n = n + self.n[k]
        total = hi + lo
        with np.errstate(invalid="ignore", divide="ignore"):
            cui = total / n[:, None].astype(np.float64)
        cui[n == 0] = np.nan
        return cui


def _ranks_of(values: np.ndarray, members: Sequence[int]) -> np.ndarray:
    """Per row of ``values`` [R, cuts]: the 1-based rank of each of ``members`` among ``members`` by value,
    highest first, ties to the earlier cut (as :attr:`isplit_export.ranking.candidates.Ranking.ranks`)."""
    sub = values[:, list(members)]  # [R, M]; members are in cut order, so a stable sort breaks ties by cut
    order = np.argsort(-sub, axis=1, kind="stable")
    ranks = np.empty_like(order)
    rows = np.arange(sub.shape[0])[:, None]
    ranks[rows, order] = np.arange(1, sub.shape[1] + 1)[None, :]
    return ranks


def summarize_uncertainty(
    cui: np.ndarray, replicates: np.ndarray, ranks: Sequence[int | None]
) -> dict[str, Any]:
    """What the replicates ``[B, cuts]`` say about the point-estimate ``cui`` and its ``ranks``.

    Returns ``cui_ci`` (per cut ``[lo, hi]`` or None), ``rank_stability`` and ``ties`` (per cut; None /
    empty for cuts that are not ranked), ``pairs`` (every pair of candidates that cannot be told apart:
    cuts, ranks and the flip fraction), ``valid_replicates``.
    """
    valid = replicates[~np.isnan(replicates).any(axis=1)]
    ci = percentile_ci_columns(replicates)
    members = [i for i, r in enumerate(ranks) if r is not None]
    n_cuts = len(ranks)
    stability: list[float | None] = [None] * n_cuts
    ties: list[list[int]] = [[] for _ in range(n_cuts)]
    pairs: list[dict[str, Any]] = []
    if members and valid.shape[0] > 0:
        rep_ranks = _ranks_of(valid, members)  # [R, M]
        point = np.array([ranks[i] for i in members])
        for j, i in enumerate(members):
            stability[i] = rounded(float(np.mean(rep_ranks[:, j] == point[j])), 6, decimals=True)
        for a in range(len(members)):
            for b in range(a + 1, len(members)):
                flip = float(np.mean((rep_ranks[:, a] < rep_ranks[:, b]) != (point[a] < point[b])))
                if flip > FLIP_THRESHOLD:
                    i, k = members[a], members[b]
                    ties[i].append(k)
                    ties[k].append(i)
                    lo_r, hi_r = sorted((int(point[a]), int(point[b])))
                    first, second = (i, k) if point[a] < point[b] else (k, i)
                    pairs.append(
                        {
                            "cuts": [first, second],
                            "ranks": [lo_r, hi_r],
                            "flip": rounded(flip, 6, decimals=True),
                        }
                    )
    pairs.sort(key=lambda p: (p["ranks"][0], p["ranks"][1]))
    return {
        "cui_ci": [None if np.isnan(row).any() else [float(row[0]), float(row[1])] for row in ci],
        "rank_stability": stability,
        "ties": [sorted(t, key=lambda k: ranks[k] or 0) for t in ties],
        "pairs": pairs,
        "valid_replicates": int(valid.shape[0]),
    }
