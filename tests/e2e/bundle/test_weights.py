"""The shared weights layout: each weight stored once per precision, in content-addressed files under weights/.

A two-split Jetson bundle of the trained digits CNN (fp32 heads/tails, their INT8 twins and the
codec-free ``*.trt.onnx`` copies, next to ``full.onnx``), exported by the real CLI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from isplit_export.bundle.weights import ALIGNMENT, MIN_EXTERNAL_BYTES
from isplit_export.cli import main
from isplit_export.exporting.onnx_utils import make_session
from isplit_export.files import sha256_file
from isplit_export.jobs.build_engines import build_bundle_engines
from isplit_export.jobs.verify import verify_bundle
from isplit_export.targets import trt_backend
from isplit_export.targets.engine_build import read_engine_build
from tests.support.helpers import DIGITS

pytestmark = pytest.mark.e2e  # every test here runs whole pipelines (export, CLI, bash)


def _export(out: Path, weights: Path, data: Path, *extra: str) -> None:
    code = main(
        [
            DIGITS,
            "--weights",
            str(weights),
            "--data",
            str(data),
            "--images",
            "60",
            "--top",
            "2",
            "--target",
            "jetson",
            "--out",
            str(out),
            "--latency-runs",
            "2",
            *extra,
        ]
    )
    assert code == 0


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, digits_weights: Path, digits_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("shared") / "bundle"
    _export(out, digits_weights, digits_dir)
    return out


def _onnx_files(bundle: Path) -> list[Path]:
    """The bundle's ONNX files, outside ``triton/`` (Triton models keep their tensors in their own folders)."""
    return sorted(p for p in bundle.rglob("*.onnx") if p.relative_to(bundle).parts[0] != "triton")


def _external(model: onnx.ModelProto) -> list[dict[str, str]]:
    return [
        {e.key: e.value for e in t.external_data}
        for t in model.graph.initializer
        if t.data_location == onnx.TensorProto.EXTERNAL
    ]


def test_every_weight_is_stored_once_per_precision(
    shared: Path, digits_weights: Path, tmp_path: Path
) -> None:
    m = json.loads((shared / "manifest.json").read_text())
    assert m["options"]["weights_layout"] == "shared" and m["weights"]["layout"] == "shared"
    packs = m["weights"]["files"]
    assert sorted(v["dtype"] for v in packs.values()) == ["float32", "int8"]
    for rel, info in packs.items():  # content-addressed, hashed by the manifest like any file
        assert rel.startswith("weights/") and m["files"][rel]["sha256"] == sha256_file(shared / rel)
        assert (
            rel.endswith(f"-{m['files'][rel]['sha256'][:16]}.bin")
            and info["bytes"] == (shared / rel).stat().st_size
        )
    onnx_files = _onnx_files(shared)
    assert [p.parent for p in onnx_files] == [shared] * len(onnx_files)  # all next to weights/
    assert len(onnx_files) == 1 + 2 * 6  # full + per split: head/tail, their int8 twins, the trt copies
    for split in m["splits"]:
        for key in ("head", "tail", "head_int8", "tail_int8", "head_trt", "tail_trt"):
            assert (shared / split["files"][key]).parent == shared, key
    # the onnx checker refuses hard-linked external data (triton/ links the packs): check a plain copy
    copy = tmp_path / "copy"
    shutil.copytree(shared, copy)
    for path in onnx_files:
        onnx.checker.check_model(str(copy / path.name), full_check=True)  # reads the external data
        model = onnx.load(str(path), load_external_data=False)
        refs = _external(model)
        assert all(r["location"] in packs and int(r["offset"]) % ALIGNMENT == 0 for r in refs)
        assert refs or path.name.startswith("02-")  # split 2's head is one tiny conv (576 B of weights)
        inline = [t for t in model.graph.initializer if t.data_location != onnx.TensorProto.EXTERNAL]
        assert all(len(t.raw_data) < MIN_EXTERNAL_BYTES for t in inline)
    # dedup: the bundle's weight-bearing bytes are the model's fp32 weights + its int8 weights + small files
    params = sum(v.numel() for v in torch.load(digits_weights, weights_only=True).values())
    tensors = sum(v["tensors"] for v in packs.values())
    model_bytes = sum((shared / rel).stat().st_size for rel in packs) + sum(
        p.stat().st_size for p in onnx_files
    )
    small = 16 * 1024 * len(onnx_files) + ALIGNMENT * tensors  # graphs, scales, biases; page alignment
    print(
        f"fp32 {4 * params} B + int8 {params} B; bundle ONNX + weights {model_bytes} B in {len(onnx_files)} files"
    )
    assert model_bytes <= 4 * params + params + small
    assert (
        m["weights"]["files"][next(r for r in packs if "float32" in r)]["bytes"]
        <= 4 * params + ALIGNMENT * tensors
    )


def test_a_moved_copy_loads_and_verifies(shared: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(shared, copy)
    moved = tmp_path / "elsewhere" / "deeper" / "bundle"
    moved.parent.mkdir(parents=True)
    shutil.move(str(copy), str(moved))
    for path in _onnx_files(moved):
        session = make_session(path)  # onnxruntime resolves weights/ next to the model file
        inp = session.get_inputs()[0]
        if inp.name == "input":
            x = np.load(moved / "calibration" / "inputs.npz")["input"][:2]
            assert session.run(None, {"input": x})[0].shape[0] == 2
        assert all(
            not Path(r["location"]).is_absolute()
            for r in _external(onnx.load(str(path), load_external_data=False))
        )
    assert verify_bundle(moved, write=False).passed


def test_a_flipped_byte_in_a_weight_file_fails_verify_naming_it(
    shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(shared, broken)
    pack = next((broken / "weights").glob("int8-*.bin"))
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 0x01
    pack.write_bytes(bytes(data))
    assert main(["verify", str(broken)]) == 1
    err = capsys.readouterr().err
    assert f"weights/{pack.name}" in err and "was modified" in err


def test_engine_plans_point_at_the_shared_models(shared: Path, tmp_path: Path) -> None:
    """build_engines.sh and the Python builder reach the moved models (``../../NN-x.*.onnx``) and their
    weights; trtexec itself is a stand-in here (no GPU): it checks the paths the script hands it."""
    m = json.loads((shared / "manifest.json").read_text())
    trtexec = tmp_path / "trtexec"
    trtexec.write_text(
        "#!/usr/bin/env bash\n# stand-in: checks --onnx and the weights/ next to it, writes --saveEngine\n"
        'echo "&&&& RUNNING TensorRT.trtexec [TensorRT v100300]"\n'
        'for a in "$@"; do case "$a" in\n'
        '  --onnx=*) f="${a#--onnx=}"; test -f "$f" && test -d "$(dirname "$f")/weights" || exit 7 ;;\n'
        '  --saveEngine=*) echo engine > "${a#--saveEngine=}" ;;\n'
        "esac; done\n",
        encoding="utf-8",
    )
    trtexec.chmod(0o755)
    copy = tmp_path / "bundle"
    shutil.copytree(shared, copy)
    for split in m["splits"]:
        split_dir = copy / split["dir"]
        plan = read_engine_build(split_dir).to_json()
        for part in ("head", "tail"):
            spec = plan["engines"][part]
            target = (split_dir / spec["onnx"]).resolve()  # what build_bundle_engines parses
            assert (
                spec["onnx"].startswith("../../")
                and target == (copy / split["files"][f"{part}_trt"]).resolve()
            )
            assert f"--onnx={spec['onnx']}" in spec["trtexec"]
        if shutil.which("bash") and shutil.which("sha256sum"):
            env = {**os.environ, "TRTEXEC": str(trtexec)}
            proc = subprocess.run(
                ["bash", str(split_dir / "build_engines.sh")],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert proc.returncode == 0, proc.stderr
            assert (split_dir / "engines" / "head.fp16.engine").is_file()


def test_inline_layout_keeps_self_contained_files(
    tmp_path: Path, digits_weights: Path, digits_dir: Path
) -> None:
    out = tmp_path / "inline"
    assert (
        main(
            [
                DIGITS,
                "--weights",
                str(digits_weights),
                "--data",
                str(digits_dir),
                "--images",
                "30",
                "--top",
                "1",
                "--target",
                "onnx",
                "--weights-layout",
                "inline",
                "--out",
                str(out),
                "--latency-runs",
                "2",
            ]
        )
        == 0
    )
    m = json.loads((out / "manifest.json").read_text())
    assert m["weights"] == {"layout": "inline"} and not (out / "weights").exists()
    assert (out / m["splits"][0]["files"]["head"]).parent == out / m["splits"][0]["dir"]
    for path in _onnx_files(out):
        assert not _external(onnx.load(str(path), load_external_data=False))
    assert main([DIGITS, "--weights-layout", "packed", "--out", str(tmp_path / "x")]) == 2


def test_same_command_gives_byte_identical_shared_bundle(
    shared: Path, tmp_path: Path, digits_weights: Path, digits_dir: Path
) -> None:
    again = tmp_path / "again"
    _export(again, digits_weights, digits_dir)
    a, b = (
        json.loads((shared / "manifest.json").read_text()),
        json.loads((again / "manifest.json").read_text()),
    )
    a.pop("run")
    b.pop("run")
    assert a == b
    for rel in a["files"]:
        assert (shared / rel).read_bytes() == (again / rel).read_bytes(), rel
    assert sorted(p.name for p in (shared / "weights").iterdir()) == sorted(
        p.name for p in (again / "weights").iterdir()
    )


@pytest.mark.tensorrt
@pytest.mark.skipif(
    not trt_backend.tensorrt_available(), reason="TensorRT runtime not installed here (tensorrt-stubs only)"
)
def test_python_builder_parses_the_shared_models(
    shared: Path, tmp_path: Path
) -> None:  # pragma: no cover - device
    copy = tmp_path / "bundle"
    shutil.copytree(shared, copy)
    records = build_bundle_engines(copy, 1)
    assert records and records[0]["engines"]["head"]["bytes"] > 0
