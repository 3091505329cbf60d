"""The fast tier: ``tests/unit/`` trains nothing and runs no whole pipeline (those tests live in tests/e2e/).

A test marked ``e2e`` here is a mistake that would slow ``make test-fast`` (which runs this folder): it
fails the collection with its name, so it is moved rather than forgotten.
"""

from __future__ import annotations

from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    misplaced = [
        item.nodeid
        for item in items
        if _HERE in Path(str(item.path)).resolve().parents and item.get_closest_marker("e2e") is not None
    ]
    if misplaced:
        raise pytest.UsageError(
            "end-to-end tests belong in tests/e2e/, not tests/unit/: " + ", ".join(misplaced)
        )
