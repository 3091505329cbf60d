"""Shared fixtures (registered by tests/conftest.py): a real CNN trained on scikit-learn's digits and its data."""

from __future__ import annotations

import os
from collections.abc import Iterator
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
def digits_weights(
    digits_model: tuple[torch.nn.Module, float], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    path = tmp_path_factory.mktemp("weights") / "digits.pt"
    torch.save(digits_model[0].state_dict(), path)
    return path


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 held-out digits (not used for training) as an ImageFolder of PNGs."""
    return write_digits_imagefolder(tmp_path_factory.mktemp("digits"), start=1500, count=200)


@pytest.fixture(scope="session", autouse=True)
def private_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``$XDG_STATE_HOME`` of the test session (and of the CLI processes it starts): build-engines records
    the engines it built there (:mod:`isplit_export.targets.engine_trust`), never in the user's own."""
    old = os.environ.get("XDG_STATE_HOME")
    state = tmp_path_factory.mktemp("xdg-state")
    os.environ["XDG_STATE_HOME"] = str(state)
    yield state
    if old is None:
        os.environ.pop("XDG_STATE_HOME", None)
    else:
        os.environ["XDG_STATE_HOME"] = old
