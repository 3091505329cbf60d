"""plan: a real digits bundle exported with --link / --objective, re-planned without torch, measured overrides."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from isplit_export.cli import main
from isplit_export.files import sha256_file, write_json
from isplit_export.jobs.verify import verify_bundle
from tests.support.helpers import DIGITS, digits_onnx_args, run_cli, run_cli_without_torch

pytestmark = pytest.mark.e2e  # every test here runs whole pipelines (export, CLI, bash)


@pytest.fixture(scope="module")
def cost_bundle(tmp_path_factory: pytest.TempPathFactory, digits_weights: Path, digits_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("plan") / "bundle"
    assert (
        main(
            [
                *digits_onnx_args(digits_weights, digits_dir),
                "--link",
                "lte",
                "--objective",
                "balanced",
                "--out",
                str(out),
                "--latency-runs",
                "2",
                "--images",
                "300",
                "--verify-images",
                "64",
            ]
        )
        == 0
    )
    return out


def test_export_writes_the_cost_columns_report_and_tradeoff(cost_bundle: Path) -> None:
    m = json.loads((cost_bundle / "manifest.json").read_text())
    r = json.loads((cost_bundle / "ranking.json").read_text())
    assert r["schema"] == "isplit.ranking/2" and r["total_flops"] > 0
    cost = r["cost"]
    assert (
        cost["objective"] == "balanced"
        and cost["link"]["name"] == "lte"
        and cost["device"]["target"] == "onnx"
    )
    assert m["options"]["link"] == "lte" and m["options"]["objective"] == "balanced"
    # the exported splits are the selection, in its order; balanced picks from the Pareto front first
    assert [s["index"] for s in m["splits"]] == cost["selected"][:2]
    ranks = {c["index"]: c["rank"] for c in r["candidates"]}
    assert [s["rank"] for s in m["splits"]] == [1, 2] and all(
        s["cui_rank"] == ranks[s["index"]] for s in m["splits"]
    )
    assert set(cost["selected"][: len(cost["pareto"])]) <= set(cost["pareto"]) or len(cost["pareto"]) < 2
    for c in r["candidates"]:
        pc = c["cost"]
        assert pc["total_ms"] == pytest.approx(pc["device_ms"] + pc["link_ms"] + pc["server_ms"], abs=1e-5)
        assert pc["head_flops"] == c["head_flops"] and pc["measured"] == {}
    assert "tradeoff.png" in m["files"] and (cost_bundle / "tradeoff.png").stat().st_size > 10_000
    report = (cost_bundle / "report.md").read_text()
    assert "## Cost: device, link and server" in report and "![CUI vs latency](tradeoff.png)" in report
    assert "all on device" in report and "all on server" in report and "| `objective` | balanced |" in report


def test_plan_gives_the_export_numbers_and_measured_latencies_override(cost_bundle: Path) -> None:
    from isplit_export import plan

    r = json.loads((cost_bundle / "ranking.json").read_text())
    m = json.loads((cost_bundle / "manifest.json").read_text())
    same = plan(cost_bundle, link="lte", objective="balanced", measured=False, write=False)
    assert [c["cost"] for c in same.ranking.to_json()["candidates"]] == [c["cost"] for c in r["candidates"]]
    assert (
        same.cost.to_json()["baselines"] == r["cost"]["baselines"]
        and same.cost.to_json()["selected"] == r["cost"]["selected"]
    )

    measured = plan(cost_bundle, link="lte", objective="balanced", write=False)
    by_index = {c["index"]: c["cost"] for c in measured.ranking.to_json()["candidates"]}
    for split in m["splits"]:  # onnx target: the build host's onnxruntime head latency is the device's
        lat = m["run"]["latency_ms"][split["dir"]]
        row = by_index[split["index"]]
        assert row["device_ms"] == pytest.approx(lat["head_ms"], abs=1e-6) and "device" in row["measured"]
        assert "server" not in row["measured"]  # the server is x86-tensorrt: its tail stays estimated
    others = [
        c
        for c in measured.ranking.to_json()["candidates"]
        if c["index"] not in {s["index"] for s in m["splits"]}
    ]
    assert others and all(c["cost"]["measured"] == {} for c in others)
    base = measured.cost.to_json()["baselines"]["device_only"]
    full = statistics.median(v["full_ms"] for v in m["run"]["latency_ms"].values())
    assert base["measured"] and base["device_ms"] == pytest.approx(full, abs=1e-6)
    assert "measured device" in measured.table()


def test_tensorrt_latency_from_verify_json_overrides_the_head(cost_bundle: Path, tmp_path: Path) -> None:
    """verify --backend tensorrt on the device may record latency_ms per row; plan prefers it for the head.

    TensorRT cannot run here: the row is written in the documented verify.json form, as the device would.
    """
    import shutil

    from isplit_export import plan

    b = tmp_path / "b"
    shutil.copytree(cost_bundle, b)
    split = json.loads((b / "manifest.json").read_text())["splits"][0]
    write_json(
        b / "verify.json",
        {
            "backend": "tensorrt",
            "manifest_sha256": sha256_file(b / "manifest.json"),
            "rows": [
                {
                    "dir": split["dir"],
                    "backend": "tensorrt",
                    "precision": "fp32",
                    "latency_ms": {"head_ms": 0.123},
                }
            ],
        },
    )
    row = next(
        c["cost"]
        for c in plan(b, link="lte", write=False).ranking.to_json()["candidates"]
        if c["index"] == split["index"]
    )
    assert (
        row["device_ms"] == 0.123 and row["measured"]["device"] == "tensorrt fp32 on the device (verify.json)"
    )


def test_plan_cli_runs_without_torch_and_writes_plan_json(cost_bundle: Path, tmp_path: Path) -> None:
    import shutil

    b = tmp_path / "b"
    shutil.copytree(cost_bundle, b)
    proc = run_cli_without_torch("plan", b, "--link", "ethernet", "--objective", "latency")
    assert proc.returncode == 0, proc.stderr
    assert "link ethernet (941.5 Mbit/s, RTT 0.2 ms)" in proc.stdout and "all on server" in proc.stdout
    data = json.loads((b / "plan.json").read_text())
    assert data["schema"] == "isplit.plan/1" and data["cost"]["objective"] == "latency"
    fastest = min((c for c in data["cuts"] if c["rank"] is not None), key=lambda c: c["cost"]["total_ms"])
    assert data["cost"]["selected"][0] == fastest["index"]
    assert verify_bundle(b, write=False).passed  # plan.json is an output, not part of the hashed bundle


def test_plan_says_in_one_line_when_splitting_does_not_pay(cost_bundle: Path, tmp_path: Path) -> None:
    """Over LTE the digits CNN is faster all on device than any split: plan says so, and by how much."""
    import shutil

    b = tmp_path / "b"
    shutil.copytree(cost_bundle, b)
    proc = run_cli_without_torch("plan", b, "--link", "lte")
    assert proc.returncode == 0, proc.stderr
    verdicts = [line for line in proc.stdout.splitlines() if line.startswith("splitting ")]
    data = json.loads((b / "plan.json").read_text())
    device_ms = data["cost"]["baselines"]["device_only"]["total_ms"]
    listed = [c for c in data["cuts"] if c["rank"] is not None or c["index"] in data["cost"]["selected"]]
    best = min(c["cost"]["total_ms"] for c in listed)
    assert device_ms < best
    assert verdicts == [
        f"splitting does not pay here: all on device {device_ms:.2f} ms beats the best split "
        f"({data['verdict']['best_split']['node']}, {best:.2f} ms over lte) by {best - device_ms:.2f} ms"
    ]
    assert data["verdict"]["splitting_pays"] is False and data["verdict"]["line"] == verdicts[0]


def test_bad_inputs_one_line_exit_2(
    capsys: pytest.CaptureFixture[str],
    cost_bundle: Path,
    tmp_path: Path,
    digits_weights: Path,
    digits_dir: Path,
) -> None:
    cases = [
        (
            ("plan", cost_bundle, "--link", "carrier-pigeon"),
            "unknown --link 'carrier-pigeon': choose wifi, lte, 5g",
        ),
        (("plan", cost_bundle, "--link", "0"), "bandwidth must be a positive number of Mbit/s"),
        (("plan", cost_bundle, "--link", "-3,20"), "bandwidth must be a positive number of Mbit/s"),
        (("plan", cost_bundle, "--link", "lte", "--objective", "fastest"), "unknown --objective 'fastest'"),
        (
            ("plan", cost_bundle, "--link", "lte", "--max-boundary-kib", "0.0001", "--max-latency-ms", "1e6"),
            "no candidate split: --max-boundary-kib 0.0001 is the tightest",
        ),
        (("plan", tmp_path / "nope", "--link", "lte"), "not found"),
        (
            (
                DIGITS,
                "--weights",
                digits_weights,
                "--data",
                digits_dir,
                "--objective",
                "latency",
                "--out",
                tmp_path / "x",
            ),
            "--objective latency needs a link: pass --link",
        ),
        (
            (
                DIGITS,
                "--weights",
                digits_weights,
                "--data",
                digits_dir,
                "--link",
                "0,5",
                "--out",
                tmp_path / "x",
            ),
            "bandwidth must be a positive",
        ),
        (
            (
                DIGITS,
                "--weights",
                digits_weights,
                "--data",
                digits_dir,
                "--objective",
                "speed",
                "--out",
                tmp_path / "x",
            ),
            "unknown --objective 'speed'",
        ),
    ]
    for args, msg in cases:
        code, _, err = run_cli(capsys, *args)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and msg in lines[0], (args, err)
    assert not (tmp_path / "x").exists() and not (cost_bundle / "plan.json").exists()


def test_plan_keeps_the_exports_constraints_unless_given(
    tmp_path: Path, digits_weights: Path, digits_dir: Path
) -> None:
    from isplit_export import Constraints, plan

    out = tmp_path / "b"
    assert (
        main(
            [
                DIGITS,
                "--weights",
                str(digits_weights),
                "--data",
                str(digits_dir),
                "--top",
                "1",
                "--target",
                "onnx",
                "--link",
                "lte",
                "--max-head-flops",
                "0.1",
                "--out",
                str(out),
                "--latency-runs",
                "1",
                "--images",
                "60",
                "--verify-images",
                "32",
            ]
        )
        == 0
    )
    share = {
        c["index"]: c["head_flops_share"]
        for c in json.loads((out / "ranking.json").read_text())["candidates"]
    }
    kept = plan(out, link="ethernet", write=False)
    assert kept.cost.to_json()["constraints"]["max_head_flops"] == 0.1
    assert all(share[i] <= 0.1 for i in kept.cost.to_json()["selected"])
    free = plan(out, link="ethernet", constraints=Constraints(), write=False)
    assert free.cost.to_json()["constraints"]["max_head_flops"] is None and any(
        share[i] > 0.1 for i in free.cost.to_json()["selected"]
    )
