"""The verdict travels with the bundle: ``verify`` reports the export's gates and both machines.

One real digits export to ``--target cpu`` whose INT8 gate cannot pass (``int8-qdq`` asks for cosine
1.0, which no int8 pair reaches): the export writes the bundle and exits 1, as it does when a real
gate fails; then the real ``verify`` CLI on it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from isplit_export.cli import main
from isplit_export.contract import Machine, read_manifest
from isplit_export.exporting.onnx_utils import this_machine
from isplit_export.verification.gates import GATES, Gate
from tests.support.helpers import DIGITS, run_cli


@pytest.fixture(scope="module")
def failed_bundle(tmp_path_factory: pytest.TempPathFactory, digits_weights: Path, digits_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("verdict") / "bundle"
    strict = Gate("int8-qdq", min_top1_agreement=0.8, max_abs_rel=0.3, min_cosine=1.0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(GATES, "int8-qdq", strict)
        args = [DIGITS, "--weights", digits_weights, "--data", digits_dir, "--top", "1", "--target", "cpu"]
        code = main([str(a) for a in [*args, "--out", out, "--latency-runs", "1"]])
    assert code == 1  # the gate failed, the bundle is written
    return out


def _with_machine(bundle: Path, dest: Path, machine: object) -> Path:
    """A copy of ``bundle`` whose manifest says its gates were measured on ``machine``."""
    shutil.copytree(bundle, dest)
    m = json.loads((dest / "manifest.json").read_text())
    m["machine"] = machine
    (dest / "manifest.json").write_text(json.dumps(m))
    return dest


def test_the_manifest_records_where_the_gates_were_measured(failed_bundle: Path) -> None:
    m = read_manifest(failed_bundle)
    recorded = Machine.from_json(m.data["machine"])
    assert recorded == this_machine() and recorded.exact_int8
    assert recorded.isa and set(recorded.isa) <= {
        "sse4_1",
        "avx2",
        "avx512f",
        "avx512bw",
        "avx512_vnni",
        "avx_vnni",
        "amx_int8",
        "neon",
        "asimd",
        "asimddp",
        "i8mm",
        "sve",
    }


def test_verify_of_a_bundle_whose_export_failed_is_not_passed(
    capsys: pytest.CaptureFixture[str], failed_bundle: Path, tmp_path: Path
) -> None:
    report = tmp_path / "verify.json"
    code, out, err = run_cli(capsys, "verify", failed_bundle, "--out", report)
    assert code == 1, err
    lines = out.splitlines()
    assert "onnxruntime: export-failed" in lines and "onnxruntime: passed" not in lines
    assert any(line.startswith("export gates 01") and "int8-qdq FAIL" in line for line in lines), out
    assert any("[export]: int8-qdq: cosine" in line and "not >= 1" in line for line in lines), out
    v = json.loads(report.read_text())
    assert v["outcome"] == "export-failed" and v["passed"] is False
    assert all(r["passed"] for r in v["rows"])  # the replay itself reproduces the export
    assert v["export"]["passed"] is False and v["export"]["splits"][0]["checks"]["int8-qdq"] is False
    assert v["export"]["machine"] == v["machine"] == this_machine().to_json()
    assert "export machine" not in out  # the same machine: printed once, in verify.json


def test_verify_prints_both_machines_when_they_differ(
    capsys: pytest.CaptureFixture[str], failed_bundle: Path, tmp_path: Path
) -> None:
    jetson = Machine(
        "ARMv8 Processor rev 1 (v8l)",
        "aarch64",
        ("neon", "asimd", "asimddp"),
        "1.23.2",
        ("CPUExecutionProvider",),
        0,
        6,
        True,
    )
    bundle = _with_machine(failed_bundle, tmp_path / "b", jetson.to_json())
    code, out, _ = run_cli(capsys, "verify", bundle, "--no-write")
    assert code == 1
    assert f"export machine: {jetson.describe()}" in out.splitlines()
    assert f"this machine:   {this_machine().describe()}" in out.splitlines()
    assert "the two run different INT8 kernels" in out


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("cpu", "x" * 5000, "machine.cpu"),
        ("isa", ["avx2"] * 1000, "machine.isa"),
        ("isa", ["avx2; rm -rf /"], "machine.isa"),
        ("threads", "4", "machine.threads"),
        ("exact_int8", "yes", "machine.exact_int8"),
    ],
)
def test_a_hostile_machine_block_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str],
    failed_bundle: Path,
    tmp_path: Path,
    field: str,
    value: object,
    needle: str,
) -> None:
    block = {**this_machine().to_json(), field: value}
    bundle = _with_machine(failed_bundle, tmp_path / "b", block)
    code, _, err = run_cli(capsys, "verify", bundle, "--no-write")
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err


def test_an_export_verdict_that_contradicts_its_checks_is_refused(
    capsys: pytest.CaptureFixture[str], failed_bundle: Path, tmp_path: Path
) -> None:
    """Flipping ``passed`` without the checks (a bundle edited to look good) is bad input, not a pass."""
    bundle = tmp_path / "b"
    shutil.copytree(failed_bundle, bundle)
    m = json.loads((bundle / "manifest.json").read_text())
    m["splits"][0]["verification"]["passed"] = True
    (bundle / "manifest.json").write_text(json.dumps(m))
    code, _, err = run_cli(capsys, "verify", bundle, "--no-write")
    assert code == 2 and "splits[0].verification.passed" in err, err
