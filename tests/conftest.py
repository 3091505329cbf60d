"""Registers the shared fixtures of ``tests/support/fixtures.py`` for every test (unit and e2e)."""

from tests.support.fixtures import (
    digits_dir,
    digits_model,
    digits_weights,
    private_state_dir,
    quiet_progress,
)

__all__ = ["digits_dir", "digits_model", "digits_weights", "private_state_dir", "quiet_progress"]
