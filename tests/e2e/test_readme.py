"""The README's Python example runs as written (in a fresh folder, in a child process)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.e2e
def test_readme_python_example_runs_as_written(tmp_path: Path) -> None:
    blocks = _python_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) == 1, "the README has one Python example"
    (tmp_path / "example.py").write_text(blocks[0], encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert "passed" in lines  # verify_bundle(...).outcome
    assert any(line.startswith("objective cui; link wifi") for line in lines)  # the plan's table
    assert (tmp_path / "digits-bundle" / "manifest.json").is_file()
