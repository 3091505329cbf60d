"""The device installs what CI publishes: the wheel, with the ``device`` extra, in a fresh virtual environment.

One test, in the order a device goes through it:

1. the wheel is built from a copy of the package's sources (``pip wheel --no-deps``, docs/ci.md's ``wheel``
   step), so a file missing from the package (the profiles, the calibration tables: package data) shows up here;
2. a fresh venv gets the wheel alone (the core): ``run`` says in one line which install it needs (exit 2),
   and that install works (pip takes the installed isplit-export, which no index has);
3. Dockerfile.jetson's install step, taken from the Dockerfile and run as written (with this venv's
   ``python3`` and the wheel where the image copies it), adds numpy 1.26.4 and the ``device`` extra, and runs
   its own checks (CLI, client, pillow; no torch, no MLServer);
4. from that venv: ``verify --expect-sha256`` and ``plan`` on a jetson bundle of the digits CNN (built with
   the main environment), and ``run`` of the head against a real MLServer tail (``isplit-export serve`` from
   the main environment on 127.0.0.1);
5. torch and MLServer are not in the venv.

Needs PyPI through pip (installs only; pip's cache makes reruns fast); skipped, saying so, when pip cannot
reach the index. Not covered here: the Jetson's aarch64 wheels and Python 3.10 (this runs on this machine's
x86-64 and Python), the L4T base image, apt, and TensorRT (the image's own steps: docs/jetson.md).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from isplit_export.cli import main
from tests.support.helpers import DIGITS
from tests.support.serving_helpers import Server, free_port

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "isplit_export")
"""What the wheel is built from (pyproject's package-dir), copied so that the build writes nothing in the tree."""
_OFFLINE = re.compile(
    r"NewConnectionError|Failed to establish a new connection|Temporary failure in name resolution"
    r"|Network is unreachable|No route to host|ProxyError"
)


def _pip(python: Path | str, *args: str, env: dict[str, str] | None = None) -> None:
    """``python -m pip ARGS`` quietly; skip the test when the index cannot be reached, fail on anything else."""
    p = subprocess.run(
        [str(python), "-m", "pip", *args, "--quiet", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=600,
    )
    if p.returncode != 0 and _OFFLINE.search(p.stdout + p.stderr):
        pytest.skip(f"pip cannot reach the package index: {(p.stdout + p.stderr).strip().splitlines()[-1]}")
    assert p.returncode == 0, p.stdout + p.stderr


def _dockerfile_install_step() -> str:
    """The RUN step of Dockerfile.jetson that installs the wheel, as one shell script (continuations joined)."""
    text = (ROOT / "Dockerfile.jetson").read_text(encoding="utf-8").replace("\\\n", " ")
    steps = [
        line[len("RUN ") :] for line in text.splitlines() if line.startswith("RUN ") and "[device]" in line
    ]
    assert len(steps) == 1, steps
    return steps[0]


def _venv_env(venv: Path) -> dict[str, str]:
    """The venv's bin first on PATH, and no PYTHONPATH (the worktree must not leak into the venv)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PIP_NO_CACHE_DIR")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def _device(venv: Path, *args: object) -> subprocess.CompletedProcess[str]:
    """``isplit-export ARGS`` from the venv's console script, as on the device."""
    cmd = [str(venv / "bin" / "isplit-export"), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, check=False, env=_venv_env(venv), timeout=600)


@pytest.fixture(scope="module")
def jetson_bundle(
    tmp_path_factory: pytest.TempPathFactory, digits_weights: Path, digits_dir: Path
) -> tuple[Path, str]:
    """A jetson bundle of the digits CNN (1 split: fp16 boundary, int8 pair, engine plans, Triton repository)
    and its manifest sha256, as CI publishes them."""
    where = tmp_path_factory.mktemp("device")
    out, summary = where / "bundle", where / "summary.json"
    assert (
        main(
            [
                DIGITS,
                "--weights",
                str(digits_weights),
                "--data",
                str(digits_dir),
                "--target",
                "jetson",
                "--top",
                "1",
                "--latency-runs",
                "2",
                "--out",
                str(out),
                "--summary-json",
                str(summary),
            ]
        )
        == 0
    )
    return out, json.loads(summary.read_text())["manifest_sha256"]


def test_wheel_with_device_extra_runs_verify_plan_and_run_in_a_fresh_venv(
    jetson_bundle: tuple[Path, str], tmp_path: Path
) -> None:
    bundle, sha = jetson_bundle
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, src / name)
    _pip(sys.executable, "wheel", "--no-deps", "-w", str(tmp_path / "dist"), str(src))
    (wheel,) = (tmp_path / "dist").glob("isplit_export-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    _pip(venv / "bin" / "python", "install", str(wheel), env=_venv_env(venv))

    # the core alone: run names the install, in one line, exit 2, before touching the bundle or the network
    p = _device(venv, "run", bundle, "--url", f"127.0.0.1:{free_port()}", "--wait", "1")
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2, p.stdout + p.stderr
    assert len(lines) == 1 and "tritonclient" in lines[0], lines
    assert "pip install 'isplit-export[device]'" in lines[0] and f"'{wheel.name}[device]'" in lines[0]
    # and the line's first advice works with no index that has isplit-export: pip takes the installed one
    _pip(venv / "bin" / "python", "install", "isplit-export[device]", env=_venv_env(venv))
    probe = "import tritonclient.grpc, PIL.Image"
    subprocess.run([str(venv / "bin" / "python"), "-c", probe], check=True, env=_venv_env(venv), timeout=120)

    # Dockerfile.jetson's install step, as written, with this venv's python3 and the wheel where the image has it
    wheels, entry = tmp_path / "wheels", tmp_path / "entrypoint"
    wheels.mkdir()
    shutil.copy2(wheel, wheels / wheel.name)
    shutil.copy2(ROOT / "docker" / "jetson-entrypoint.sh", entry)
    script = _dockerfile_install_step().replace("/tmp/wheels", str(wheels))
    script = script.replace("/usr/local/bin/isplit-export-entrypoint", str(entry))
    step = subprocess.run(
        ["sh", "-c", script],
        capture_output=True,
        text=True,
        check=False,
        env={**_venv_env(venv), "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        timeout=600,
    )
    if step.returncode != 0 and _OFFLINE.search(step.stdout + step.stderr):
        pytest.skip("pip cannot reach the package index (Dockerfile.jetson's install step)")
    assert step.returncode == 0, step.stdout + step.stderr
    assert not wheels.exists()  # the step removes what it copied

    p = _device(venv, "verify", bundle, "--expect-sha256", sha, "--no-write")
    assert p.returncode == 0, p.stdout + p.stderr
    p = _device(venv, "plan", bundle, "--link", "lte")
    assert p.returncode == 0, p.stdout + p.stderr
    split = sorted(d.name for d in (bundle / "splits").iterdir())[0]  # 01-<node>: the Triton model's name
    exported = [line for line in p.stdout.splitlines() if line.startswith("#1*")]  # the exported split's row
    assert len(exported) == 1 and split.split("-", 1)[1] in exported[0].split(), p.stdout
    assert (bundle / "plan.json").is_file()

    # the tail: MLServer (isplit-export serve) from the main environment, on 127.0.0.1
    server = Server(bundle, log=tmp_path / "serve.log").start()
    try:
        server.wait_ready(split)
        p = _device(
            venv, "run", bundle, "--url", server.address, "--requests", "8", "--out", tmp_path / "run.json"
        )
    finally:
        server.stop()
    assert p.returncode == 0, p.stdout + p.stderr
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["manifest_sha256"] == sha
    (record,) = run["runs"].values()
    assert record["images"]["ok"] == 8 and record["images"]["failed"] == record["images"]["skipped"] == 0

    probe = "import importlib.util as u, numpy; print(u.find_spec('torch'), u.find_spec('mlserver'), numpy.__version__)"
    p = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        env=_venv_env(venv),
    )
    assert p.stdout.split() == ["None", "None", "1.26.4"]
