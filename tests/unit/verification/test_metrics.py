"""Metrics against hand-computed values on tiny inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from isplit_export.stats import spearman
from isplit_export.verification.metrics import REL_FLOOR, accuracy, compare_logits


def test_compare_logits_hand_computed() -> None:
    ref = np.array([[1.0, 2.0, 3.0], [4.0, 0.0, -4.0]])
    got = np.array([[1.0, 2.0, 3.5], [4.0, 0.5, -4.0]])
    m = compare_logits(ref, got)
    assert m["max_abs"] == pytest.approx(0.5)
    assert m["max_abs_rel"] == pytest.approx(0.5 / 4.0)
    # the 0.5 error on the reference logit 0.0 is divided by the floor REL_FLOOR * 4, not by 0
    assert m["max_rel"] == pytest.approx(0.5 / (REL_FLOOR * 4.0))
    assert m["mean_abs"] == pytest.approx(1.0 / 6.0)
    cos_row0 = 15.5 / math.sqrt(14.0 * 17.25)
    cos_row1 = 32.0 / math.sqrt(32.0 * 32.25)
    assert m["cosine"] == pytest.approx(min(cos_row0, cos_row1))
    assert m["top1_agreement"] == 1.0


def test_compare_logits_top1_disagreement_and_identity() -> None:
    ref = np.array([[1.0, 2.0, 3.0], [4.0, 0.0, -4.0]], dtype=np.float32)
    got = np.array([[1.0, 2.0, 3.0], [4.0, 4.5, -4.0]], dtype=np.float32)
    assert compare_logits(ref, got)["top1_agreement"] == 0.5
    same = compare_logits(ref, ref.copy())
    assert same["max_abs"] == 0.0 and same["max_rel"] == 0.0 and same["mean_abs"] == 0.0
    assert same["cosine"] == pytest.approx(1.0) and same["top1_agreement"] == 1.0


def test_compare_logits_zero_rows_and_errors() -> None:
    zeros = np.zeros((2, 3))
    m = compare_logits(zeros, zeros)
    assert m["cosine"] == 1.0 and m["max_abs_rel"] == 0.0
    assert compare_logits(zeros, np.array([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))["cosine"] == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        compare_logits(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="no logits"):
        compare_logits(np.zeros((0, 3)), np.zeros((0, 3)))


def test_compare_logits_nan_propagates() -> None:
    ref = np.array([[1.0, 2.0]])
    m = compare_logits(ref, np.array([[np.nan, 2.0]]))
    assert math.isnan(m["cosine"]) and math.isnan(m["max_abs"])


def test_accuracy_skips_unknown_labels() -> None:
    logits = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    assert accuracy(logits, np.array([1, 1, -1])) == 0.5
    assert accuracy(logits, np.array([1, 0, 1])) == 1.0
    assert accuracy(logits, np.array([-1, -1, -1])) is None
    with pytest.raises(ValueError):
        accuracy(logits, np.array([1, 0]))


def test_spearman_hand_computed_with_ties() -> None:
    # ranks a = [1, 2.5, 2.5, 4], b = [1, 3, 2, 4]; centred: [-1.5, 0, 0, 1.5], [-1.5, .5, -.5, 1.5]
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5.0))
    assert spearman([0.1, 0.5, 0.3], [10, 30, 20]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_spearman_undefined_cases() -> None:
    assert spearman([1.0], [2.0]) is None
    assert spearman([], []) is None
    assert spearman([1, 1, 1], [1, 2, 3]) is None
    assert spearman([1, 2, 3], [float("nan"), 2, 3]) is None
    with pytest.raises(ValueError):
        spearman([1, 2], [1, 2, 3])


def test_spearman_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, size=30).astype(float)  # many ties
    b = a + rng.normal(size=30)
    assert spearman(a, b) == pytest.approx(float(stats.spearmanr(a, b).statistic))
