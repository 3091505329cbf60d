"""The CUI and CDE plots of a real ranking are byte-deterministic."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from isplit_export.plots_cde import plot_cde
from isplit_export.plots_cui import plot_cui
from tests.unit.test_plots import CUI, make_ranking


@pytest.fixture
def ranking() -> dict[str, Any]:
    """The unit tier's hand-made ranking (tests/unit/test_plots.py)."""
    return make_ranking(CUI)


@pytest.mark.e2e
def test_pngs_are_byte_deterministic(tmp_path: Path, ranking: dict[str, Any]) -> None:
    plot_cui(ranking, tmp_path / "a.png")
    plot_cui(ranking, tmp_path / "b.png")
    plot_cde(ranking, tmp_path / "c.png")
    plot_cde(ranking, tmp_path / "d.png")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert (tmp_path / "c.png").read_bytes() == (tmp_path / "d.png").read_bytes()
    data = (tmp_path / "a.png").read_bytes()
    assert b"Software" not in data and b"matplotlib" not in data.lower()
    # a fresh interpreter (empty font and text caches) writes the same bytes, without importing pyplot
    (tmp_path / "r.json").write_text(json.dumps(ranking))
    code = (
        "import json, sys; from pathlib import Path; "
        "from isplit_export.plots_cui import plot_cui; from isplit_export.plots_cde import plot_cde; "
        f"r = json.loads(Path({str(tmp_path / 'r.json')!r}).read_text()); "
        f"plot_cui(r, Path({str(tmp_path / 'e.png')!r})); plot_cde(r, Path({str(tmp_path / 'f.png')!r})); "
        "print('matplotlib.pyplot' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"
    assert (tmp_path / "e.png").read_bytes() == data
    assert (tmp_path / "f.png").read_bytes() == (tmp_path / "c.png").read_bytes()
