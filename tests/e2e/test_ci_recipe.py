"""docs/ci.md is run, not just written: its workflow's steps, exactly as documented, for the digits entry.

The test reads the GitHub Actions YAML in ``docs/ci.md``, takes the ``digits`` entry of its matrix and
the job's ``env`` mapping, and runs the ``prepare``, ``build`` and ``gate report`` steps' ``run`` scripts
with bash in a fresh directory (``install``, ``checkout`` and ``upload`` are GitHub's business). The
``python`` and ``isplit-export`` on PATH are this environment's. Then it checks what ``upload`` would
publish: the bundle and the summary.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from isplit_export.bundle.summary import SUMMARY_SCHEMA
from isplit_export.jobs.verify import verify_bundle

pytestmark = pytest.mark.e2e  # every test here runs whole pipelines (export, CLI, bash)

CI_MD = Path(__file__).resolve().parents[2] / "docs" / "ci.md"


def _workflow() -> list[str]:
    text = CI_MD.read_text(encoding="utf-8")
    match = re.search(r"```yaml\n(.*?)```", text, re.S)
    assert match, "docs/ci.md has no ```yaml block"
    return match.group(1).splitlines()


def _step_script(lines: list[str], name: str) -> str:
    """The ``run: |`` block of the step ``- name: <name>``, dedented."""
    start = next(i for i, line in enumerate(lines) if line.strip() == f"- name: {name}")
    run = next(i for i in range(start + 1, len(lines)) if lines[i].strip().startswith("run:"))
    assert lines[run].strip() == "run: |", lines[run]
    indent = len(lines[run]) - len(lines[run].lstrip()) + 2
    body = []
    for line in lines[run + 1 :]:
        if line.strip() and len(line) - len(line.lstrip()) < indent:
            break
        body.append(line[indent:])
    return "\n".join(body).strip() + "\n"


def _matrix_entry(lines: list[str], name: str) -> dict[str, str]:
    line = next(line for line in lines if line.strip().startswith(f"- {{name: {name},"))
    pairs = re.findall(r'(\w+): ("[^"]*"|[^,}]*)', line.strip()[3:-1])
    return {k: v.strip().strip('"') for k, v in pairs}


def _job_env(lines: list[str], matrix: dict[str, str]) -> dict[str, str]:
    start = next(i for i, line in enumerate(lines) if line.strip() == "env:" and line.startswith("    env:"))
    env = {}
    for line in lines[start + 1 :]:
        if not line.startswith("      "):
            break
        key, value = (part.strip() for part in line.split(":", 1))
        ref = re.fullmatch(r"\$\{\{ matrix\.(\w+) \}\}", value)
        env[key] = matrix[ref.group(1)] if ref else value.strip('"')
    return env


def _run(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-e", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


@pytest.mark.skipif(sys.platform == "win32", reason="the workflow's steps are bash")
def test_documented_workflow_builds_gates_and_leaves_what_upload_publishes(tmp_path: Path) -> None:
    lines = _workflow()
    for key in ("strategy:", "matrix:", "uses: actions/upload-artifact@v4", "if: always()"):
        assert any(key in line for line in lines), key
    matrix = _matrix_entry(lines, "digits")
    env = {**os.environ, **_job_env(lines, matrix)}
    assert env["MODEL"] == "isplit_export.zoo:digits_cnn" and env["NAME"] == "digits"
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])

    prepare = _run(_step_script(lines, "prepare"), tmp_path, env)
    assert prepare.returncode == 0, prepare.stderr
    build = _run(_step_script(lines, "build"), tmp_path, env)
    assert build.returncode == 0, build.stdout + build.stderr
    pinned = _run(_step_script(lines, "publish sha256"), tmp_path, env)
    assert pinned.returncode == 0, pinned.stdout + pinned.stderr
    assert "matches --expect-sha256" in pinned.stdout
    report = _run(_step_script(lines, "gate report"), tmp_path, env)
    assert report.returncode == 0, report.stderr
    assert report.stdout.startswith("passed ")

    summary = json.loads((tmp_path / "summary-digits.json").read_text())  # what upload publishes
    bundle = tmp_path / "bundle-digits"
    assert summary["schema"] == SUMMARY_SCHEMA and summary["passed"] and summary["gate_failures"] == []
    assert summary["target"] == "jetson-orin-nx" and summary["weights_layout"] == "shared"
    assert [s["rank"] for s in summary["splits"]] == list(range(1, len(summary["splits"]) + 1))
    assert all("int8-qdq" in s["checks"] and s["passed"] for s in summary["splits"])
    total = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    assert summary["sizes"]["bundle_bytes"] == total
    assert summary["sizes"]["weights_bytes"] == sum(p.stat().st_size for p in (bundle / "weights").iterdir())
    # on disk each inode counts once: triton/ hard-links the packs, so it adds only its small files
    inodes = {p.stat().st_ino: p.stat().st_size for p in bundle.rglob("*") if p.is_file()}
    outside = {
        p.stat().st_ino: p.stat().st_size
        for p in bundle.rglob("*")
        if p.is_file() and p.relative_to(bundle).parts[0] != "triton"
    }
    assert summary["sizes"]["disk_bytes"] == sum(inodes.values()) < total
    assert summary["sizes"]["disk_bytes_without_triton"] == sum(outside.values())
    assert summary["sizes"]["disk_bytes"] - sum(outside.values()) < 64 * 1024  # configs and model.onnx only
    assert verify_bundle(bundle, write=False).passed

    # poisoned in transit and re-hashed: plain verify still passes, the pinned step of the recipe fails
    poisoned = tmp_path / "poisoned"
    shutil.copytree(bundle, poisoned)
    manifest = json.loads((poisoned / "manifest.json").read_text())
    golden = manifest["splits"][0]["files"]["golden"]
    with np.load(poisoned / golden) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["labels"] = (arrays["labels"] + 1) % 10
    np.savez(poisoned / golden, **arrays)
    data = (poisoned / golden).read_bytes()
    manifest["files"][golden] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (poisoned / "manifest.json").write_text(json.dumps(manifest, indent=2))
    assert verify_bundle(poisoned, write=False).passed  # "passed" = self-consistent, nothing more
    shutil.rmtree(bundle)
    poisoned.rename(bundle)
    again = _run(_step_script(lines, "publish sha256"), tmp_path, env)
    assert again.returncode == 1, again.stdout + again.stderr
    assert "not the bundle CI published" in again.stderr
