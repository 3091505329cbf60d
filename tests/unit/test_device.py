"""The device side's packaging: Dockerfile.jetson, its entrypoint, the ``device`` extra, and ``run`` without
the client.

No Docker engine runs here, so the Dockerfile is parsed and each step checked for its intent; its RUN
steps are checked as shell (``sh -n``), and its install step runs for real in
``tests/e2e/test_device_install.py``. The entrypoint runs for real with stand-in ``tensorrt`` modules on
PYTHONPATH: one that fails to import the way JetPack's does in a container started without
``--runtime nvidia`` (``libnvdla_compiler.so`` missing), one that imports.
"""

from __future__ import annotations

import fnmatch
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.helpers import run_cli_without

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "docker" / "jetson-entrypoint.sh"


def _instructions(path: Path) -> list[tuple[str, str]]:
    """A Dockerfile as (INSTRUCTION, arguments): comment lines dropped, backslash continuations joined."""
    steps: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        steps.append((keyword.upper(), args.strip()))
        pending = ""
    assert not pending, "a continuation runs off the end of the file"
    return steps


def _let_through(ignore: Path, source: str) -> bool:
    """Whether .dockerignore sends ``source`` (a file, or a folder's files) to the daemon; last match wins."""
    verdict = True
    for pattern in (p.strip() for p in ignore.read_text(encoding="utf-8").splitlines()):
        if not pattern or pattern.startswith("#"):
            continue
        keep = pattern.startswith("!")
        glob = pattern.lstrip("!")
        probe = source.rstrip("/") + ("/x.whl" if source.endswith("/") else "")
        if fnmatch.fnmatch(probe, glob):
            verdict = keep
    return verdict


def test_dockerfile_jetson_builds_without_tensorrt() -> None:
    """Every step of a plain ``docker build`` must run without the NVIDIA runtime: no step imports TensorRT or
    runs trtexec; the rest is ordinary shell, the wheel with the device extra, and the entrypoint."""
    steps = _instructions(ROOT / "Dockerfile.jetson")
    kinds = [k for k, _ in steps]
    assert kinds[:2] == ["ARG", "FROM"] and steps[1][1] == "${BASE_IMAGE}"
    base = steps[0][1].split("=", 1)[1]
    assert base.startswith("nvcr.io/nvidia/l4t-") and ":r36." in base  # JetPack 6 (L4T r36): Python 3.10
    runs = [args for k, args in steps if k == "RUN"]
    assert runs
    for script in runs:
        # TensorRT's libraries are mounted only when a container runs: no build step may need them
        assert "tensorrt" not in script.lower() and "trtexec" not in script
        check = subprocess.run(["sh", "-n", "-c", script], capture_output=True, text=True, check=False)
        assert check.returncode == 0, f"{script}\n{check.stderr}"
    (install,) = [c for s in runs for c in s.split("&&") if "pip install" in c]
    # the one wheel with the device extra; numpy 1.x for TensorRT 10.3's bindings
    assert install.split()[-2:] == ['"numpy==1.26.4"', '"$1[device]"']
    copies = [args.split() for k, args in steps if k == "COPY"]
    assert [c[0] for c in copies] == ["dist/", "docker/jetson-entrypoint.sh"]
    for source, _ in copies:
        assert _let_through(ROOT / ".dockerignore", source), source
    # the build context is the wheel and the entrypoint, not the tree
    assert not _let_through(ROOT / ".dockerignore", ".venv/bin/python")
    assert ENTRYPOINT.is_file() and os.access(ENTRYPOINT, os.X_OK)
    (entry,) = [args for k, args in steps if k == "ENTRYPOINT"]
    assert entry == f'["{copies[1][1]}"]'  # exec form: signals reach isplit-export (exec in the script)


def test_device_extra_is_what_the_device_runs() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+ (the tests' Python; the package takes 3.10)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    core = {d.split(">")[0].split("=")[0] for d in project["dependencies"]}
    assert core == {"numpy", "onnx", "onnxruntime", "typer"}  # the head runtime is core: verify needs it
    device = project["optional-dependencies"]["device"]
    assert sorted(d.split("=")[0].split(">")[0] for d in device) == ["pillow", "tritonclient[grpc]"]
    assert not any("mlserver" in d or "torch" in d for d in device)


def _entrypoint(
    tmp_path: Path, tensorrt: str | None, trtexec: bool, *args: str
) -> subprocess.CompletedProcess[str]:
    """The entrypoint with this environment's python3 and isplit-export; ``tensorrt`` is the stand-in module's
    source (None: none), ``trtexec`` whether a stand-in trtexec is on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    path = [str(Path(sys.executable).parent), os.environ.get("PATH", "")]
    if trtexec:
        (bin_dir / "trtexec").write_text("#!/bin/sh\nexit 0\n")
        (bin_dir / "trtexec").chmod(0o755)
        path.insert(0, str(bin_dir))
    pythonpath = [str(ROOT)]
    if tensorrt is not None:
        (tmp_path / "standin" / "tensorrt").mkdir(parents=True, exist_ok=True)
        (tmp_path / "standin" / "tensorrt" / "__init__.py").write_text(tensorrt)
        pythonpath.insert(0, str(tmp_path / "standin"))
    env = {**os.environ, "PATH": os.pathsep.join(path), "PYTHONPATH": os.pathsep.join(pythonpath)}
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *args], capture_output=True, text=True, check=False, env=env
    )


JETPACK_WITHOUT_RUNTIME = (
    'raise ImportError("libnvdla_compiler.so: cannot open shared object file: No such file or directory")\n'
)


def test_entrypoint_says_when_tensorrt_is_missing_and_goes_on(tmp_path: Path) -> None:
    p = _entrypoint(tmp_path, JETPACK_WITHOUT_RUNTIME, True, "--help")
    assert p.returncode == 0 and "Usage" in p.stdout
    (line,) = p.stderr.strip().splitlines()
    assert (
        "TensorRT does not import" in line and "libnvdla_compiler.so" in line and "--runtime nvidia" in line
    )
    # the command's own exit code comes through (bad input: 2), after the same one line
    p = _entrypoint(tmp_path, JETPACK_WITHOUT_RUNTIME, True, "verify", str(tmp_path / "no-bundle"))
    assert p.returncode == 2 and p.stderr.count("TensorRT does not import") == 1


@pytest.mark.parametrize("trtexec", [True, False])
def test_entrypoint_is_quiet_when_tensorrt_imports(tmp_path: Path, trtexec: bool) -> None:
    p = _entrypoint(tmp_path, '__version__ = "10.3.0.30"\n', trtexec, "--help")
    assert p.returncode == 0 and "Usage" in p.stdout
    if trtexec:
        assert p.stderr == ""
    else:
        (line,) = p.stderr.strip().splitlines()
        assert "trtexec is not on PATH" in line


@pytest.mark.parametrize(
    "blocked,extra,needle,fix",
    [
        (["tritonclient"], [], "tritonclient.grpc", "pip install 'isplit-export[device]'"),
        (["tritonclient"], ["--protocol", "http"], "tritonclient.http", "pip install 'tritonclient[http]"),
        (["PIL"], ["--data", "."], "PIL.Image", "pip install 'isplit-export[device]'"),
    ],
)
def test_run_without_the_client_names_the_install(
    tmp_path: Path, blocked: list[str], extra: list[str], needle: str, fix: str
) -> None:
    """A device installed with the core only: ``run`` stops before any work with one line naming the install
    (exit 2), not an internal failure (exit 3) at the first request."""
    p = run_cli_without(blocked, "run", tmp_path / "bundle", "--url", "127.0.0.1:1", *extra)
    assert p.returncode == 2, p.stderr
    (line,) = p.stderr.strip().splitlines()
    assert needle in line and fix in line and "internal failure" not in line
    assert "isplit_export-" in line or "tritonclient[http]" in line  # the wheel form, or the http client
    assert list(tmp_path.iterdir()) == []  # nothing written
