"""The main command end to end: verified, reproducible, atomic bundles; gates that catch a broken split."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from isplit_export.cli import main
from isplit_export.exporting.onnx_utils import make_session
from isplit_export.files import sha256_file, write_json
from isplit_export.jobs import export as export_job
from isplit_export.jobs.verify import verify_bundle
from isplit_export.verification.runners import OnnxrtRunner, run_pair
from tests.support.helpers import DIGITS, digits_onnx_args, run_cli, run_cli_without_torch
from tests.support.int8 import assert_kernels_agree, pair_logits

pytestmark = pytest.mark.e2e  # every test here runs whole pipelines (export, CLI, bash)

FAST = ("--latency-runs", "2")


def _digits_export(
    capsys: pytest.CaptureFixture[str], out: Path, weights: Path, data: Path, *extra: object
) -> int:
    code, _, err = run_cli(
        capsys, DIGITS, "--weights", weights, "--data", data, "--top", "2", "--out", out, *FAST, *extra
    )
    assert code in (0, 1), err
    return code


@pytest.fixture(scope="module")
def digits_bundle(tmp_path_factory: pytest.TempPathFactory, digits_weights: Path, digits_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("b") / "bundle"
    assert (
        main(
            [
                *digits_onnx_args(digits_weights, digits_dir),
                "--out",
                str(out),
                *FAST,
            ]
        )
        == 0
    )
    return out


def test_bundle_layout_manifest_and_equivalence(digits_bundle: Path) -> None:
    m = json.loads((digits_bundle / "manifest.json").read_text())
    assert m["schema"] == "isplit.bundle/1" and m["opset"] == 17 and m["boundary_encoding"] == "fp32"
    assert m["model"]["weights_sha256"] and m["preprocessing"]["crop"] == 16
    assert m["options"]["top"] == 2 and m["options"]["target"] == "onnx" and "out" not in m["options"]
    for name in ("full.onnx", "ranking.json", "cui.png", "cde.png"):
        assert name in m["files"]
    for rel, meta in m["files"].items():
        assert sha256_file(digits_bundle / rel) == meta["sha256"], rel
    assert m["run"]["report_sha256"] == sha256_file(digits_bundle / "report.md")
    assert len(m["splits"]) == 2 and m["verification"]["passed"]
    for split in m["splits"]:
        head = onnx.load(digits_bundle / split["files"]["head"])
        onnx.checker.check_model(head, full_check=True)
        assert [o.name for o in head.graph.output] == ["boundary"]
        assert head.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
        check = split["verification"]["checks"]["fp32"]
        assert check["metrics"]["top1_agreement"] == 1.0 and check["metrics"]["max_abs_rel"] <= 1e-4
        # labelled digits: accuracy is measured, and the split loses nothing against the full model
        assert (
            check["task"]["metric"] == "accuracy"
            and check["task"]["value"] > 0.9
            and check["task"]["drop"] == 0
        )
        assert split["boundary"]["bytes_per_image"] == split["boundary"]["fp32_bytes_per_image"]
    report = (digits_bundle / "report.md").read_text()
    assert "Does the CUI order hold?" in report and "![CUI](cui.png)" in report and "| `top` | 2 |" in report
    lat = m["run"]["latency_ms"]
    assert all(v["head_ms"] > 0 and v["ratio"] > 0 for v in lat.values())
    # the full model is timed once (with the first split); every split's ratio divides by that figure
    first, *others = lat.values()
    assert list(first) == ["head_ms", "tail_ms", "full_ms", "ratio"] and others
    for v in others:
        assert list(v) == list(first) and v["full_ms"] == first["full_ms"]
        assert v["ratio"] == pytest.approx((v["head_ms"] + v["tail_ms"]) / first["full_ms"])
    assert verify_bundle(digits_bundle, write=False).passed


def test_same_command_gives_byte_identical_bundle(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    digits_bundle: Path,
    digits_weights: Path,
    digits_dir: Path,
) -> None:
    again = tmp_path / "again"
    assert _digits_export(capsys, again, digits_weights, digits_dir) == 0
    a, b = (
        json.loads((digits_bundle / "manifest.json").read_text()),
        json.loads((again / "manifest.json").read_text()),
    )
    assert a.pop("run")["created"] and b.pop("run")
    assert a == b
    for rel in a["files"]:
        assert (digits_bundle / rel).read_bytes() == (again / rel).read_bytes(), rel


def test_out_is_refused_unless_force_and_never_half_written(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    digits_weights: Path,
    digits_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    code, _, err = run_cli(capsys, DIGITS, "--weights", digits_weights, "--data", digits_dir, "--out", out)
    assert code == 2 and "already exists" in err and "--force" in err
    assert (out / "keep.txt").read_text() == "precious"
    # --force replaces only an empty folder or a bundle of this tool (issue 17: it deleted a .tex file)
    code, _, err = run_cli(
        capsys, DIGITS, "--weights", digits_weights, "--data", digits_dir, "--out", out, "--force"
    )
    assert code == 2 and "--force replaces only" in err
    assert (out / "keep.txt").read_text() == "precious"
    empty = tmp_path / "empty"
    empty.mkdir()

    def boom(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(export_job, "export_split", boom)
    code, _, err = run_cli(
        capsys, DIGITS, "--weights", digits_weights, "--data", digits_dir, "--out", empty, "--force"
    )
    assert code == 130 and "interrupted" in err
    assert list(empty.iterdir()) == []  # the old (empty) folder survived
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "empty",
        "out",
    ]  # no temporary directory or lock left
    code, _, err = run_cli(
        capsys, DIGITS, "--weights", digits_weights, "--data", digits_dir, "--out", tmp_path / "new"
    )
    assert code == 130 and not (tmp_path / "new").exists()

    monkeypatch.undo()
    assert _digits_export(capsys, empty, digits_weights, digits_dir, "--force") == 0
    assert (empty / "manifest.json").is_file()
    assert (
        _digits_export(capsys, empty, digits_weights, digits_dir, "--force") == 0
    )  # a bundle of ours: replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "out"]


def test_int8_boundary_is_really_8_bit_and_within_gate(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, digits_weights: Path, digits_dir: Path
) -> None:
    out = tmp_path / "int8"
    assert _digits_export(capsys, out, digits_weights, digits_dir, "--boundary", "int8") == 0
    m = json.loads((out / "manifest.json").read_text())
    for split in m["splits"]:
        b = split["boundary"]
        assert b["dtype"] == "uint8" and b["bytes_per_image"] * 4 == b["fp32_bytes_per_image"]
        head = onnx.load(out / split["files"]["head"])
        assert head.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
        x = np.load(out / split["files"]["golden"])["input"]
        (boundary,) = make_session(out / split["files"]["head"]).run(None, {"input": x})
        assert boundary.dtype == np.uint8
        check = split["verification"]["checks"]["int8"]
        assert check["gate"]["passed"] and check["task"]["drop"] <= 0.02
    assert (
        m["verification"]["cui_vs_task_spearman"] is None
        or -1 <= m["verification"]["cui_vs_task_spearman"] <= 1
    )
    assert "Spearman" in m["verification"]["note"] or "same task value" in m["verification"]["note"]


def test_verify_catches_a_broken_tail(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, digits_bundle: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(digits_bundle, broken)
    m = json.loads((broken / "manifest.json").read_text())
    rel = m["splits"][0]["files"]["tail"]
    tail = onnx.load(broken / rel)
    init = tail.graph.initializer[0]
    arr = numpy_helper.to_array(init).copy()
    arr *= -1.0  # a wrong tail: same graph, wrong weights
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    onnx.save(tail, broken / rel)
    # a tampered file is caught by the hash check first...
    code, _, err = run_cli(capsys, "verify", broken)
    assert code == 1 and rel in err
    # ...and even with the manifest updated to match, the golden comparison fails the gate
    m["files"][rel]["sha256"] = sha256_file(broken / rel)
    write_json(broken / "manifest.json", m)
    code, out, _ = run_cli(capsys, "verify", broken, "--split", "1")
    assert code == 1 and "FAIL" in out
    assert json.loads((broken / "verify.json").read_text())["outcome"] == "gate-failed"


@pytest.mark.parametrize(
    ("arch", "size"),
    [(DIGITS, "16"), ("resnet18", "64"), ("mobilenet_v3_small", "64"), ("efficientnet_lite0", "224")],
    ids=["vgg-style", "resnet", "mobilenet", "efficientnet-lite"],
)
def test_equivalence_on_cnn_families(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, arch: str, size: str
) -> None:
    out = tmp_path / "bundle"
    code, _, err = run_cli(
        capsys,
        arch,
        "--weights",
        "none",
        "--input-size",
        size,
        "--images",
        "3",
        "--top",
        "2",
        "--target",
        "onnx",
        "--out",
        out,
        *FAST,
    )
    assert code == 0, err
    m = json.loads((out / "manifest.json").read_text())
    assert m["verification"]["passed"] and len(m["splits"]) >= 1
    assert all(s["verification"]["checks"]["fp32"]["metrics"]["top1_agreement"] == 1.0 for s in m["splits"])
    assert verify_bundle(out, write=False).passed


def test_cpu_and_jetson_targets(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, digits_weights: Path, digits_dir: Path
) -> None:
    cpu = tmp_path / "cpu"
    assert _digits_export(capsys, cpu, digits_weights, digits_dir, "--target", "cpu") == 0
    m = json.loads((cpu / "manifest.json").read_text())
    for split in m["splits"]:
        head = onnx.load(cpu / split["files"]["head_int8"])
        ops = {n.op_type for n in head.graph.node}
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
        assert split["verification"]["checks"]["int8-qdq"]["gate"]["passed"]
    assert (cpu / "calibration" / "inputs.npz").is_file()

    jetson = tmp_path / "jetson"
    assert _digits_export(capsys, jetson, digits_weights, digits_dir, "--target", "jetson") == 0
    m = json.loads((jetson / "manifest.json").read_text())
    assert m["target"]["name"] == "jetson-orin-nx"
    split_dir = jetson / m["splits"][0]["dir"]
    script = (split_dir / "build_engines.sh").read_text()
    assert "--saveEngine" in script and "--useDLACore=0" in script
    assert verify_bundle(jetson, write=False).passed
    code, _, err = run_cli(capsys, "verify", jetson, "--backend", "tensorrt")
    assert code == 4 and "TensorRT" in err  # not run here: no TensorRT, never faked


def test_bad_export_inputs(capsys: pytest.CaptureFixture[str], tmp_path: Path, digits_bundle: Path) -> None:
    code, _, err = run_cli(capsys, DIGITS, "--target", "tpu", "--out", tmp_path / "x")
    assert code == 2 and "unknown --target 'tpu'" in err and "jetson" in err
    code, _, err = run_cli(capsys, DIGITS, "--weights", "none", "--boundary", "int4", "--out", tmp_path / "x")
    assert code == 2 and "int4" in err
    code, _, err = run_cli(capsys, "verify", digits_bundle, "--split", "9")
    assert code == 2 and "out of range" in err
    code, _, err = run_cli(capsys, "verify", tmp_path / "nope")
    assert code == 2 and "not found" in err
    assert not (tmp_path / "x").exists()


def test_verify_runs_without_torch(digits_bundle: Path) -> None:
    """The device container has no PyTorch: `isplit-export verify` must not import it."""
    proc = run_cli_without_torch("verify", digits_bundle)
    assert proc.returncode == 0, proc.stderr
    assert "onnxruntime: passed" in proc.stdout


def test_python_api_mirrors_the_cli(tmp_path: Path, digits_weights: Path, digits_dir: Path) -> None:
    from isplit_export import export, rank, verify_bundle

    r = rank(DIGITS, weights=str(digits_weights), data=digits_dir, top=2, images=50)
    assert r.ranking.images == 50 and len(r.ranking.ranked()) <= 2
    result = export(
        DIGITS,
        out=tmp_path / "api",
        weights=str(digits_weights),
        data=digits_dir,
        top=1,
        images=50,
        latency_runs=2,
    )
    assert result.passed and result.manifest.splits[0].node == r.ranking.ranked(1)[0].node
    assert verify_bundle(tmp_path / "api").outcome == "passed"


def test_int8_qdq_pair_on_pretrained_efficientnet_lite0(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The offline default model with its real ImageNet weights on the 19 real skimage photographs.

    Asserts what holds on any CPU (``tests/support/int8.py``): the pair's integer kernels agree with
    the float simulation of the same QDQ graph within the quantization's own error, and with the same
    top-1 agreement; not a cosine that one CPU's kernels happen to reach.
    """
    out = tmp_path / "lite0"
    code, _, err = run_cli(capsys, "--top", "1", "--target", "cpu", "--out", out, *FAST)
    assert code == 0, err
    m = json.loads((out / "manifest.json").read_text())
    assert m["model"]["name"] == "efficientnet_lite0" and m["calibration"]["count"] == 19
    split = m["splits"][0]
    assert split["verification"]["checks"]["int8-qdq"]["gate"]["passed"], split["verification"]
    files = {k: out / v for k, v in split["files"].items()}
    x = np.load(out / m["calibration"]["file"])["input"]
    integer = pair_logits(files["head_int8"], files["tail_int8"], x)
    simulated = pair_logits(files["head_int8"], files["tail_int8"], x, simulate=True)
    _, fp32 = run_pair(OnnxrtRunner(files["head"]), OnnxrtRunner(files["tail"]), x)
    assert_kernels_agree(integer, simulated, fp32)
    # the device-side check replays the goldens: the fresh bundle passes it too
    result = verify_bundle(out, write=False)
    assert result.passed and {r.check for r in result.rows} == {"onnx", "onnx-int8-qdq"}
