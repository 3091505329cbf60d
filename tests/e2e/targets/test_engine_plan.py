"""The TensorRT backend type-checked by mypy against tensorrt-stubs."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from isplit_export.targets import trt_backend


@pytest.mark.e2e
def test_trt_backend_type_checks_against_tensorrt_stubs(tmp_path: Path) -> None:
    """mypy checks trt_backend.py against tensorrt-stubs 10.13, and a wrong call is caught (control).

    The project's mypy run sees ``tensorrt`` as Any: the stubs ship without py.typed and have syntax
    errors (parameters named ``in``) plus a module-level ``bool`` that shadows the builtin. Here a patched
    copy goes on MYPYPATH so the calls are really checked.
    """
    spec = importlib.util.find_spec("tensorrt_stubs")
    if spec is None or spec.origin is None or importlib.util.find_spec("mypy") is None:
        pytest.skip("tensorrt-stubs or mypy is not installed here (make install adds both)")
    site = Path(spec.origin).parent.parent
    stubs = tmp_path / "stubs"
    for package in ("tensorrt", "tensorrt_bindings"):
        shutil.copytree(site / package, stubs / package, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    for stub in stubs.rglob("*.pyi"):
        text = stub.read_text(encoding="utf-8")
        text = re.sub(r"([(,] ?)in: ", r"\1in_: ", text)
        text = text.replace(
            "power: Weights = None, channel_axis: int)", "power: Weights = None, channel_axis: int = ...)"
        )
        text = re.sub(r"^bool: .*\n", "", text, flags=re.M)
        stub.write_text(text, encoding="utf-8")
    config = tmp_path / "mypy.ini"
    config.write_text(
        "[mypy]\npython_version = 3.11\ndisallow_untyped_defs = True\ncheck_untyped_defs = True\n"
        "no_implicit_optional = True\nwarn_unused_ignores = True\nignore_missing_imports = True\n"
        "[mypy-tensorrt,tensorrt.*,tensorrt_bindings,tensorrt_bindings.*]\nignore_errors = True\n",
        encoding="utf-8",
    )
    control = tmp_path / "control.py"
    control.write_text(
        "def wrong() -> None:\n    import tensorrt as trt\n\n"
        "    trt.Builder(trt.Logger(trt.Logger.WARNING)).create_network('explicit')\n",
        encoding="utf-8",
    )
    backend = Path(trt_backend.__file__)
    base = [
        sys.executable,
        "-m",
        "mypy",
        "--config-file",
        str(config),
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    env = {**os.environ, "MYPYPATH": str(stubs)}
    ok = subprocess.run([*base, str(backend)], capture_output=True, text=True, env=env, timeout=300)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = subprocess.run([*base, str(control)], capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 1 and 'Argument 1 to "create_network" of "Builder"' in bad.stdout, bad.stdout
