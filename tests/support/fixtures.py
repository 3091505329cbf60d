"""Shared fixtures (registered by tests/conftest.py): a real CNN trained on scikit-learn's digits and its data.

The trained weights are committed (``tests/data/digits.pt``, 90 kB) so that no test session trains them:
``python benchmarks/make_digits.py tests/data --weights-only`` makes them again, byte for byte (2 torch
threads, seed 0), and ``tests/e2e/test_digits_weights.py`` checks that training still gives them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from isplit_export.zoo import DigitsCNN, digits_arrays, digits_tensor, write_digits_imagefolder

torch.set_num_threads(2)

DIGITS_WEIGHTS = Path(__file__).resolve().parents[1] / "data" / "digits.pt"
"""DigitsCNN trained on the first 75 % of the digits (``train_digits_cnn(seed=0)``, 2 torch threads)."""
DIGITS_WEIGHTS_SHA256 = "9eedfdbb7ada13c9ea0a319b7243d8d751b66fa039ddbbff14ee1f62eee2f1b5"
HOLDOUT = 0.25
"""The fraction of the digits the committed CNN never saw in training (the last quarter)."""


def load_digits_weights() -> dict[str, torch.Tensor]:
    """The committed state dict, after checking its sha256 (a changed file fails here, not in some test)."""
    digest = hashlib.sha256(DIGITS_WEIGHTS.read_bytes()).hexdigest()
    assert digest == DIGITS_WEIGHTS_SHA256, (
        f"{DIGITS_WEIGHTS} changed (sha256 {digest}): regenerate it, see above"
    )
    return dict(torch.load(DIGITS_WEIGHTS, weights_only=True))


@pytest.fixture(scope="session")
def digits_model() -> tuple[torch.nn.Module, float]:
    """DigitsCNN with the committed weights, in eval mode; (model, held-out accuracy)."""
    model = DigitsCNN()
    model.load_state_dict(load_digits_weights())
    model.eval()
    images, labels = digits_arrays()
    x, y = digits_tensor(images), torch.from_numpy(labels)
    n_train = int(len(x) * (1 - HOLDOUT))
    with torch.no_grad():
        acc = float((model(x[n_train:]).argmax(1) == y[n_train:]).float().mean())
    return model, acc


@pytest.fixture(scope="session")
def digits_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the committed weights (a test may not change the committed file)."""
    load_digits_weights()
    path = tmp_path_factory.mktemp("weights") / "digits.pt"
    shutil.copyfile(DIGITS_WEIGHTS, path)
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


@pytest.fixture(scope="session", autouse=True)
def quiet_progress() -> Iterator[None]:
    """``ISPLIT_QUIET=1`` for the session (and the CLI processes it starts): stderr holds only what a test
    checks (errors are one line). The progress tests unset it (tests/unit/test_progress.py,
    tests/e2e/test_guided_export.py)."""
    old = os.environ.get("ISPLIT_QUIET")
    os.environ["ISPLIT_QUIET"] = "1"
    yield
    if old is None:
        os.environ.pop("ISPLIT_QUIET", None)
    else:
        os.environ["ISPLIT_QUIET"] = old
