"""The study's statistics helpers (Kendall tau-b, Spearman, paired bootstrap CI, Wilson interval):
hand-computed values on tiny inputs, and scipy where it is installed."""

from __future__ import annotations

import math

import numpy as np
import pytest

from isplit_export.stats import (
    bootstrap_ci,
    kendall_tau,
    pair_order,
    proportion_ci,
    separated_pairs,
    spearman,
)


def test_kendall_tau_hand_computed() -> None:
    # 6 pairs; only (2, 3) is discordant: (5 - 1) / 6
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    # ties: a = [1, 2, 2, 3], b = [1, 2, 3, 3]. Pairs (i<j): (0,1) +, (0,2) +, (0,3) +, (1,2) tied in a,
    # (1,3) +, (2,3) tied in b. Concordant 4, discordant 0; untied in a: 5, untied in b: 5 -> 4 / sqrt(5*5)
    assert kendall_tau([1, 2, 2, 3], [1, 2, 3, 3]) == pytest.approx(0.8)
    # tau-a would be 4/6; tau-b corrects for the ties
    assert kendall_tau([3, 2, 1], [1, 2, 3]) == pytest.approx(-1.0)
    assert kendall_tau([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    # a pair tied in both: counts in neither. a = [1, 1, 2], b = [5, 5, 9]: pairs (0,1) tied, (0,2) +, (1,2) +
    assert kendall_tau([1, 1, 2], [5, 5, 9]) == pytest.approx(1.0)


def test_kendall_tau_undefined() -> None:
    assert kendall_tau([1.0], [2.0]) is None
    assert kendall_tau([1, 1, 1], [1, 2, 3]) is None  # constant
    assert kendall_tau([1, math.nan, 3], [1, 2, 3]) is None
    with pytest.raises(ValueError):
        kendall_tau([1, 2], [1, 2, 3])


def test_spearman_hand_computed() -> None:
    # ranks a = [1,2,3,4], b = [1,3,2,4]: d^2 = 0+1+1+0 = 2 -> 1 - 6*2 / (4*15) = 0.8
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)


def test_against_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for n in (5, 12, 30):
        a = rng.integers(0, 6, n).astype(float)  # many ties
        b = a + rng.integers(-2, 3, n)
        assert kendall_tau(a, b) == pytest.approx(stats.kendalltau(a, b).statistic, abs=1e-12)
        assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
    for k, n in ((0, 10), (5, 10), (19, 19), (37, 50), (1, 1000)):
        ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert proportion_ci(k, n) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_proportion_ci_hand_computed() -> None:
    z2 = 1.959963984540054**2
    # k = 5, n = 10: p = 0.5, centre 0.5, half = z sqrt(0.025 + z^2/400) / (1 + z^2/10)
    half = math.sqrt(z2) * math.sqrt(0.025 + z2 / 400) / (1 + z2 / 10)
    assert proportion_ci(5, 10) == pytest.approx((0.5 - half, 0.5 + half))
    assert proportion_ci(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    # all correct on 50 images: lower bound 1 / (1 + z^2/50) = 0.9287, not 1 (the Wald interval's [1, 1])
    lo, hi = proportion_ci(50, 50)
    assert lo == pytest.approx(1 / (1 + z2 / 50)) and hi == 1.0
    assert proportion_ci(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        proportion_ci(3, 2)


def test_bootstrap_ci() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal(40)
    y = x + 0.5 * rng.standard_normal(40)
    ci = bootstrap_ci(spearman, x, y, reps=500, seed=3)
    assert ci is not None
    lo, hi = ci
    rho = spearman(x, y)
    assert rho is not None and lo < rho < hi <= 1.0
    assert bootstrap_ci(spearman, x, y, reps=500, seed=3) == ci  # seeded: reproducible
    assert bootstrap_ci(spearman, x, y, reps=500, seed=4) != ci
    # a perfectly monotone relation: every defined resample has Spearman and Kendall 1
    assert bootstrap_ci(kendall_tau, [1, 2, 3, 4, 5], [2, 4, 6, 8, 10], reps=200) == (1.0, 1.0)
    # more pairs, narrower interval
    wide = bootstrap_ci(spearman, x[:12], y[:12], reps=500, seed=3)
    assert wide is not None and wide[1] - wide[0] > hi - lo
    assert bootstrap_ci(spearman, [1.0], [2.0]) is None
    assert bootstrap_ci(spearman, [1, 1, 1], [1, 2, 3]) is None  # never defined


def test_two_level_bootstrap_resamples_images_and_repeats() -> None:
    from isplit_export.stats import two_level_replicates

    # cut 0: every repeat identical (no training noise); cut 1: repeats disagree completely
    m = np.zeros((2, 4, 10))
    m[0, :, :5] = 1.0
    m[1, :2, :] = 1.0
    reps = two_level_replicates(m, reps=400, seed=1)
    assert reps.shape == (400, 2)
    assert np.array_equal(reps, two_level_replicates(m, reps=400, seed=1))  # seeded
    # cut 1's mean varies only through the repeats drawn (its images all agree within a repeat)
    assert set(np.round(reps[:, 1] * 4).astype(int).tolist()) <= set(range(5)) and reps[:, 1].std() > 0.1
    # cut 0 varies only through the images drawn, and the same image draw applies to both cuts
    assert 0.0 < reps[:, 0].std() < 0.25 and abs(reps[:, 0].mean() - 0.5) < 0.05
    with pytest.raises(ValueError):
        two_level_replicates(np.zeros((2, 3)))


def test_difference_ci_is_paired_and_excludes_zero_only_for_a_real_difference() -> None:
    from isplit_export.stats import difference_ci, excludes_zero, replicate_ci

    rng = np.random.default_rng(0)
    truth = np.arange(8, dtype=float)
    replicates = truth + rng.normal(0, 0.3, size=(300, 8))  # measured values, a little noise
    good, reversed_ = truth, truth[::-1]
    ci = difference_ci(spearman, good, reversed_, replicates)
    assert ci is not None and ci[0] > 1.5 and excludes_zero(ci)
    same = difference_ci(spearman, good, good, replicates)
    assert same == (0.0, 0.0) and not excludes_zero(same)
    lo, hi = replicate_ci(spearman, good, replicates) or (0.0, 0.0)
    assert 0.8 < lo <= hi <= 1.0
    assert not excludes_zero(None) and not excludes_zero([None, 0.5]) and excludes_zero([-0.4, -0.1])


def test_separated_pairs_and_how_a_predictor_orders_them() -> None:
    # 3 points over 4 replicates: 0 - 1 is always > 0, 0 - 2 straddles 0, 1 - 2 is always < 0
    reps = np.array([[0.9, 0.5, 0.8], [0.8, 0.4, 0.9], [0.85, 0.5, 0.7], [0.9, 0.45, 1.0]])
    assert separated_pairs(reps) == [(0, 1), (1, 2)]
    values = [0.86, 0.46, 0.85]
    assert pair_order([3, 1, 2], values, [(0, 1), (1, 2)]) == {"right": 2, "wrong": 0, "tied": 0}
    assert pair_order([1, 3, 2], values, [(0, 1), (1, 2)]) == {"right": 0, "wrong": 2, "tied": 0}
    assert pair_order([2, 2, 1], values, [(0, 1), (1, 2)]) == {"right": 0, "wrong": 1, "tied": 1}
    assert (
        separated_pairs(np.array([[0.5, 0.5], [0.6, 0.6]])) == []
    )  # equal in every replicate: no difference
