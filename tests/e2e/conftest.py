"""Every test under ``tests/e2e/`` is end-to-end: marked ``e2e``, so ``make test-fast`` leaves it out."""

from __future__ import annotations

from pathlib import Path

import pytest

from isplit_export.cli import main
from tests.support.helpers import digits_onnx_args

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def int8_bundle(tmp_path_factory: pytest.TempPathFactory, digits_weights: Path, digits_dir: Path) -> Path:
    """A digits bundle with an int8 boundary and a Triton repository (--triton on the onnx target); read-only
    by convention: a test that changes a bundle copies it first (test_serving, test_serving_trust)."""
    out = tmp_path_factory.mktemp("serve") / "bundle"
    assert (
        main(
            [
                *digits_onnx_args(digits_weights, digits_dir),
                "--boundary",
                "int8",
                "--triton",
                "--out",
                str(out),
                "--latency-runs",
                "2",
            ]
        )
        == 0
    )
    return out
