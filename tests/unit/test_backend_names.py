"""The backend names, spelt once (backend_names): the Literal types the CLI lists equal the constants' tuples."""

from typing import get_args

from isplit_export.backend_names import RUN_BACKENDS, RUNTIMES, RunBackend, Runtime
from isplit_export.verification.backends import BACKENDS


def test_the_choice_types_are_the_names_spelt_once() -> None:
    assert set(get_args(Runtime)) == set(RUNTIMES) == set(BACKENDS)
    assert get_args(RunBackend) == RUN_BACKENDS
