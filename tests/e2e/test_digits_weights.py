"""The committed digits CNN (tests/data/digits.pt) is what its script trains: the weights stay reproducible."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from tests.support.fixtures import DIGITS_WEIGHTS, load_digits_weights

ROOT = Path(__file__).resolve().parents[2]


def test_make_digits_trains_the_committed_weights(tmp_path: Path) -> None:
    """``benchmarks/make_digits.py --weights-only`` in a fresh process gives the committed state dict (same
    tensors; the same bytes where the floating-point kernels are the same as on the machine that made it)."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "make_digits.py"), str(tmp_path), "--weights-only"],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "digits").exists()
    made = torch.load(tmp_path / "digits.pt", weights_only=True)
    committed = load_digits_weights()
    assert made.keys() == committed.keys()
    for name, tensor in committed.items():
        torch.testing.assert_close(made[name], tensor, msg=f"{name} differs from {DIGITS_WEIGHTS}")
