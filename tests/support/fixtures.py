"""Shared fixtures (registered by tests/conftest.py): a real CNN trained on scikit-learn's digits and its data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from isplit_export.zoo import train_digits_cnn, write_digits_imagefolder

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def digits_model() -> tuple[torch.nn.Module, float]:
    """DigitsCNN trained on 75 % of the digits (seeded); (model, held-out accuracy)."""
    return train_digits_cnn(seed=0)


@pytest.fixture(scope="session")
def digits_weights(digits_model: tuple[torch.nn.Module, float], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "digits.pt"
    torch.save(digits_model[0].state_dict(), path)
    return path


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 held-out digits (not used for training) as an ImageFolder of PNGs."""
    return write_digits_imagefolder(tmp_path_factory.mktemp("digits"), start=1500, count=200)
