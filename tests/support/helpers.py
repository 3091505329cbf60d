"""Shared helpers of the CLI tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from isplit_export.cli import main

if TYPE_CHECKING:
    import torch

DIGITS = "isplit_export.zoo:digits_cnn"
"""The trained digits CNN's factory, as the CLI takes it."""


def digits_onnx_args(weights: Path, data: Path) -> list[str]:
    """The start of the test bundles' export command line: the trained digits CNN (``weights``) on ``data``,
    its top 2 cuts, the onnx target; each caller appends its own options."""
    return [DIGITS, "--weights", str(weights), "--data", str(data), "--top", "2", "--target", "onnx"]


def run_cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    """Run the CLI in-process; return its exit code, stdout and stderr."""
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def run_cli_without_torch(*args: object) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a child process in which any ``import torch`` raises ImportError (the device container)."""
    return run_cli_without(["torch"], *args)


def run_cli_without(modules: list[str], *args: object) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a child process in which importing any of ``modules`` (or their submodules) raises
    ImportError, as on a machine where those packages are not installed."""
    code = (
        f"import sys; sys.modules.update(dict.fromkeys({modules!r}))\n"
        "from isplit_export.cli import main\n"
        f"sys.exit(main({[str(a) for a in args]!r}))\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)


def digits_cut(model: torch.nn.Module, index: int) -> tuple[object, torch.nn.Module, torch.nn.Module]:
    """Cut ``index`` of the traced digits CNN and its (head, tail), as the bottleneck tests train them."""
    from isplit_export.ranking.graph import trace
    from isplit_export.zoo import DIGITS_PREPROCESSING

    traced = trace(model, DIGITS_PREPROCESSING.input_shape)
    cut = traced.cuts[index]
    head, tail = traced.split(cut)
    return cut, head, tail
