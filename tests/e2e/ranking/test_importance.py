"""CUI on the digits images and on torchvision nets against the straightforward algorithm, end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torchvision
from torch import nn

from isplit_export.data import load_images
from isplit_export.ranking.graph import trace
from isplit_export.ranking.importance import (
    compute_importance,
)
from isplit_export.zoo import DIGITS_PREPROCESSING
from tests.support.cui import assert_cui_matches_reference


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small"])
def test_cui_matches_reference_algorithm_on_torchvision_nets(arch: str) -> None:
    assert_cui_matches_reference(torchvision.models.get_model(arch).eval(), (3, 32, 32))


@pytest.mark.e2e
def test_batch_size_does_not_change_cui(digits_model: tuple[nn.Module, float], digits_dir: Path) -> None:
    traced = trace(digits_model[0], (1, 16, 16))
    images = load_images(digits_dir, DIGITS_PREPROCESSING, class_names=[str(i) for i in range(10)], limit=40)
    cuis = [compute_importance(traced, images, batch_size=b).cui() for b in (1, 7, 40)]
    np.testing.assert_allclose(cuis[0], cuis[1], rtol=1e-5)
    np.testing.assert_allclose(cuis[0], cuis[2], rtol=1e-5)


@pytest.mark.e2e
def test_label_score_and_class_subsets(digits_model: tuple[nn.Module, float], digits_dir: Path) -> None:
    traced = trace(digits_model[0], (1, 16, 16))
    images = load_images(digits_dir, DIGITS_PREPROCESSING, class_names=[str(i) for i in range(10)])
    imp = compute_importance(traced, images, score="label")
    assert imp.images == 200 and sorted(imp.counts) == list(range(10))
    all_cui = imp.cui()
    # the overall CUI is the count-weighted mean of the per-class CUIs
    weighted = sum(imp.counts[k] * imp.cui([k]) for k in imp.counts) / imp.images
    np.testing.assert_allclose(all_cui, weighted, rtol=1e-10)
    curves = np.stack([imp.cui([k]) for k in range(10)])
    # class-specific curves really differ (the paper's point): >10 % spread at some cut
    spread = (curves.max(0) - curves.min(0)) / curves.mean(0)
    assert spread.max() > 0.1
