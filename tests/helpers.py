"""Shared helpers of the CLI tests."""

from __future__ import annotations

import pytest

from isplit_export.cli import main

DIGITS = "isplit_export.zoo:digits_cnn"
"""The trained digits CNN's factory, as the CLI takes it."""


def run_cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    """Run the CLI in-process; return its exit code, stdout and stderr."""
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err
