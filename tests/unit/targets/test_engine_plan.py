"""TensorRT build plan: trtexec flags per target, build_engines.sh / engine_plan.json, and the TensorRT backend.

Everything here runs without a GPU except the tests marked ``tensorrt``, which skip (never fake) when
the TensorRT runtime is not installed. The shell script is exercised end to end with a stand-in
``trtexec`` that only writes files: that checks the script's plumbing (paths, exit codes, build.json),
not TensorRT.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from isplit_export.errors import EXIT_NOT_RUN, BadInputError, GateFailedError, NotRunError
from isplit_export.jobs.build_engines import build_bundle_engines
from isplit_export.targets import trt_backend
from isplit_export.targets.engine_build import (
    ENGINE_BUILD_FILE,
    ENGINE_PLAN_SCHEMA,
    RECORD_NAME,
    SCRIPT_NAME,
    build_recipe,
    default_head_dla_core,
    read_engine_build,
    trtexec_command,
    write_engine_build,
)
from isplit_export.targets.profiles import TargetProfile, list_targets, load_target

INPUT = (1, 3, 224, 224)
BOUNDARY = (1, 40, 28, 28)
TRT_TARGETS = [t.name for t in list_targets() if t.uses_tensorrt]
needs_tensorrt = pytest.mark.skipif(
    not trt_backend.tensorrt_available(),
    reason="TensorRT runtime not installed here (tensorrt-stubs only): runs on the device, see docs/jetson.md",
)


def _cmd(target: str, precision: str, dla_core: int | None = None, **kw: object) -> list[str]:
    return trtexec_command(
        "head.onnx",
        "engines/head.engine",
        precision=precision,
        profile=load_target(target),
        input_name="input",
        input_shape=INPUT,
        dla_core=dla_core,
        timing_cache="engines/timing.cache",
        **kw,  # type: ignore[arg-type]
    )


def _write(
    split_dir: Path, target: str = "jetson-orin-agx", precision: str = "fp16", **kw: object
) -> list[Path]:
    int8 = precision == "int8"
    head = split_dir / ("head.int8.onnx" if int8 else "head.onnx")
    if not head.exists():  # the plan checks the head's layers against the DLA rules: give it a real one
        split_dir.mkdir(parents=True, exist_ok=True)
        _tiny_onnx(head)
    return write_engine_build(
        split_dir,
        load_target(target),
        precision=precision,
        head_onnx="head.int8.onnx" if int8 else "head.onnx",
        tail_onnx="tail.int8.onnx" if int8 else "tail.onnx",
        input_shape=INPUT,
        boundary_shape=BOUNDARY,
        **kw,  # type: ignore[arg-type]
    )


# --------------------------------------------------------------------------------------------------
# trtexec commands


def test_fp16_gpu_command_has_the_tensorrt10_flags() -> None:
    cmd = _cmd("jetson-orin-nano", "fp16")
    assert cmd[0] == "trtexec"
    assert cmd[1:3] == ["--onnx=head.onnx", "--saveEngine=engines/head.engine"]
    assert "--fp16" in cmd and "--int8" not in cmd
    assert "--minShapes=input:1x3x224x224" in cmd
    assert "--optShapes=input:1x3x224x224" in cmd
    assert "--maxShapes=input:8x3x224x224" in cmd  # dynamic batch on the GPU: 1 / 1 / max_batch
    assert "--memPoolSize=workspace:1024M" in cmd
    assert "--timingCacheFile=engines/timing.cache" in cmd
    assert "--skipInference" in cmd
    assert not any(
        a.startswith(("--useDLACore", "--allowGPUFallback", "--workspace", "--verbose")) for a in cmd
    )


def test_precision_flags() -> None:
    assert not {"--fp16", "--int8"} & set(_cmd("x86-tensorrt", "fp32"))
    int8 = _cmd("x86-tensorrt", "int8")
    assert "--int8" in int8 and "--fp16" in int8  # explicit quantization + fp16 for the layers outside Q/DQ


def test_max_batch_sets_the_max_shape() -> None:
    assert "--maxShapes=input:4x3x224x224" in _cmd("x86-tensorrt", "fp16", max_batch=4)


def test_dla_command_is_static_with_gpu_fallback() -> None:
    cmd = _cmd("jetson-orin-agx", "int8", dla_core=1)
    assert "--useDLACore=1" in cmd and "--allowGPUFallback" in cmd
    for flag in ("--minShapes", "--optShapes", "--maxShapes"):
        assert f"{flag}=input:1x3x224x224" in cmd  # DLA takes static shapes only


def test_tensorrt8_workspace_is_a_bare_mib_number() -> None:
    assert "--memPoolSize=workspace:1024" in _cmd("jetson-xavier-nx", "fp16")


@pytest.mark.parametrize(
    ("target", "precision", "dla_core", "fix"),
    [
        ("jetson-orin-nano", "fp16", 0, "has no DLA"),
        ("x86-tensorrt", "fp16", 0, "has no DLA"),
        ("jetson-orin-agx", "fp32", 0, "fp16/int8 only"),
        ("jetson-orin-nx", "fp16", 1, "does not exist"),
        ("jetson-orin-agx", "bf16", None, "not available"),
        ("cpu", "fp32", None, "not TensorRT"),
        ("onnx", "fp32", None, "not TensorRT"),
    ],
)
def test_impossible_commands_are_refused(target: str, precision: str, dla_core: int | None, fix: str) -> None:
    with pytest.raises(BadInputError, match=fix):
        _cmd(target, precision, dla_core)


def test_bad_shapes_and_names_are_refused() -> None:
    with pytest.raises(BadInputError, match="max_batch"):
        _cmd("x86-tensorrt", "fp16", max_batch=0)
    with pytest.raises(BadInputError, match="tensor name"):
        trtexec_command(
            "a.onnx",
            "a.engine",
            precision="fp16",
            profile=load_target("x86-tensorrt"),
            input_name="in:put",
            input_shape=INPUT,
            dla_core=None,
            timing_cache="t.cache",
        )


@pytest.mark.parametrize("target", TRT_TARGETS)
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_dla_flags_only_where_there_is_dla_and_never_for_fp32(target: str, precision: str) -> None:
    profile = load_target(target)
    plan = build_recipe(
        profile,
        precision=precision,
        head_onnx="head.onnx",
        tail_onnx="tail.onnx",
        input_shape=INPUT,
        boundary_shape=BOUNDARY,
    )
    head, tail = plan["engines"]["head"], plan["engines"]["tail"]
    on_dla = profile.has_dla and precision != "fp32"
    assert default_head_dla_core(profile, precision) == (0 if on_dla else None)
    assert head["dla_core"] == (0 if on_dla else None)
    assert head["device"] == ("dla" if on_dla else "gpu")
    assert ("--useDLACore=0" in head["trtexec"]) == on_dla
    assert ("--allowGPUFallback" in head["trtexec"]) == on_dla
    assert tail["dla_core"] is None and not any("DLA" in a for a in tail["trtexec"])
    assert head["input"]["max"][0] == (1 if on_dla else 8)
    assert tail["input"]["max"][0] == 8


# --------------------------------------------------------------------------------------------------
# build_engines.sh and engine_plan.json


def test_write_build_plan_files(tmp_path: Path) -> None:
    script, plan_path = _write(tmp_path / "splits" / "01-layer2")
    assert (script.name, plan_path.name) == (SCRIPT_NAME, ENGINE_BUILD_FILE)
    assert script.stat().st_mode & stat.S_IXUSR
    text = script.read_text(encoding="utf-8")
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text and 'cd "$(dirname "$0")"' in text
    assert "/usr/src/tensorrt/bin/trtexec" in text
    assert "engines/head.fp16.engine" in text and "engines/tail.fp16.engine" in text
    assert (
        "--useDLACore=0" in text
        and "nvidia-smi --query-gpu=name" in text
        and "/proc/device-tree/model" in text
    )
    assert RECORD_NAME in text
    assert not re.search(r"\d{4}-\d\d-\d\dT", text)  # no timestamps


def test_build_engines_sh_passes_bash_n(tmp_path: Path) -> None:
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed here")
    for target in TRT_TARGETS:
        for precision in load_target(target).precisions:
            script, _ = _write(tmp_path / target / precision, target, precision)
            result = subprocess.run([bash, "-n", str(script)], capture_output=True, text=True)
            assert result.returncode == 0, f"{target}/{precision}: {result.stderr}"


def test_plan_files_are_byte_identical_across_writes(tmp_path: Path) -> None:
    first = [p.read_bytes() for p in _write(tmp_path / "a", "jetson-orin-nx", "int8")]
    second = [p.read_bytes() for p in _write(tmp_path / "b", "jetson-orin-nx", "int8")]
    again = [p.read_bytes() for p in _write(tmp_path / "a", "jetson-orin-nx", "int8")]
    assert first == second == again


def test_engine_plan_json_content(tmp_path: Path) -> None:
    _, plan_path = _write(tmp_path, "jetson-orin-nx", "int8")
    plan = json.loads(plan_path.read_text(encoding="utf-8"))
    assert plan["schema"] == ENGINE_PLAN_SCHEMA
    assert plan["target"] == "jetson-orin-nx"
    assert plan["tensorrt_version"] == "10.3" and plan["jetpack"] == "6.2"
    assert plan["precision"] == "int8" and plan["workspace_mib"] == 2048 and plan["max_batch"] == 8
    assert plan["timing_cache"] == "engines/timing.cache" and plan["record"] == RECORD_NAME
    head, tail = plan["engines"]["head"], plan["engines"]["tail"]
    assert head["onnx"] == "head.int8.onnx" and head["engine"] == "engines/head.int8.engine"
    assert head["input"] == {
        "name": "input",
        "min": [1, 3, 224, 224],
        "opt": [1, 3, 224, 224],
        "max": [1, 3, 224, 224],
    }
    assert head["output"] == "boundary" and head["dla_core"] == 0
    assert tail["onnx"] == "tail.int8.onnx" and tail["output"] == "logits"
    assert tail["input"] == {
        "name": "boundary",
        "min": [1, 40, 28, 28],
        "opt": [1, 40, 28, 28],
        "max": [8, 40, 28, 28],
    }
    assert head["trtexec"][:3] == [
        "trtexec",
        "--onnx=head.int8.onnx",
        "--saveEngine=engines/head.int8.engine",
    ]
    assert read_engine_build(tmp_path).to_json() == plan


def test_use_dla_false_keeps_the_head_on_the_gpu(tmp_path: Path) -> None:
    _, plan_path = _write(tmp_path, "jetson-orin-agx", "fp16", use_dla=False)
    plan = json.loads(plan_path.read_text(encoding="utf-8"))
    assert plan["engines"]["head"]["dla_core"] is None
    assert "--useDLACore=0" not in (tmp_path / SCRIPT_NAME).read_text(encoding="utf-8")


def test_write_build_plan_refuses_odd_paths_and_cpu_targets(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="plain file name"):
        write_engine_build(
            tmp_path,
            load_target("x86-tensorrt"),
            precision="fp16",
            head_onnx="../head.onnx",
            tail_onnx="tail.onnx",
            input_shape=INPUT,
            boundary_shape=BOUNDARY,
        )
    with pytest.raises(BadInputError, match="not TensorRT"):
        _write(tmp_path, "cpu", "fp32")
    assert not (tmp_path / SCRIPT_NAME).exists()


def test_read_plan_refuses_missing_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="has no TensorRT plan"):
        read_engine_build(tmp_path)
    (tmp_path / ENGINE_BUILD_FILE).write_text('{"schema": "other"}', encoding="utf-8")
    with pytest.raises(BadInputError, match=r"not an isplit\.engine_plan/1 plan"):
        read_engine_build(tmp_path)


STAND_IN_TRTEXEC = """#!/usr/bin/env bash
# Stand-in for trtexec: prints a TensorRT-style banner and writes --saveEngine's file. Not TensorRT.
echo "&&&& RUNNING TensorRT.trtexec [TensorRT v{code}] # trtexec $*"
for a in "$@"; do
  case "$a" in
    --saveEngine=*) printf 'engine for %s' "$*" > "${{a#--saveEngine=}}" ;;
    --onnx=tail*) [ -n "${{FAIL_TAIL:-}}" ] && {{ echo "[E] stand-in failure"; exit 1; }} ;;
  esac
done
exit 0
"""


def _stand_in(tmp_path: Path, code: int) -> Path:
    tool = tmp_path / f"trtexec-{code}"
    tool.write_text(STAND_IN_TRTEXEC.format(code=code), encoding="utf-8")
    tool.chmod(0o755)
    return tool


def _run_script(script: Path, trtexec: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "TRTEXEC": str(trtexec), **env}
    return subprocess.run(["bash", str(script)], capture_output=True, text=True, env=full_env, timeout=60)


@pytest.mark.skipif(
    shutil.which("bash") is None or shutil.which("sha256sum") is None, reason="needs bash + coreutils"
)
@pytest.mark.parametrize(
    ("target", "code", "version"),
    [("jetson-orin-agx", 100300, "10.3.0"), ("jetson-xavier-nx", 8502, "8.5.2")],
)
def test_build_engines_sh_runs_and_records_the_build(
    tmp_path: Path, target: str, code: int, version: str
) -> None:
    split = tmp_path / "split"
    script, _ = _write(split, target, "fp16")
    result = _run_script(script, _stand_in(tmp_path, code))
    assert result.returncode == 0, result.stderr
    record = json.loads((split / RECORD_NAME).read_text(encoding="utf-8"))
    if not trt_backend.tensorrt_available():  # the script prefers the Python bindings' version when present
        assert record["tensorrt_version"] == version
    assert record["schema"] == "isplit.engines/1" and record["builder"] == "trtexec"
    assert record["target"] == target and record["precision"] == "fp16"
    assert isinstance(record["gpu"], str) and record["gpu"]
    head, tail = record["engines"]["head"], record["engines"]["tail"]
    assert head["dla_core"] == 0 and tail["dla_core"] is None
    assert head["dla_fallback_log_lines"] == 0
    for info in (head, tail):
        engine = split / info["file"]
        assert hashlib.sha256(engine.read_bytes()).hexdigest() == info["sha256"]
    assert (split / "engines" / "head.fp16.engine.log").is_file()


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_build_engines_sh_failure_exit_codes(tmp_path: Path) -> None:
    script, _ = _write(tmp_path / "split")
    failed = _run_script(script, _stand_in(tmp_path, 100300), FAIL_TAIL="1")
    assert failed.returncode == 3
    assert "tail build failed" in failed.stderr and "stand-in failure" in failed.stderr
    assert not (tmp_path / "split" / RECORD_NAME).exists()
    missing = _run_script(script, tmp_path / "no-such-trtexec")
    assert missing.returncode == 4 and "trtexec not found" in missing.stderr


# --------------------------------------------------------------------------------------------------
# TensorRT backend without TensorRT: "not run", never a fake result


@pytest.mark.skipif(trt_backend.tensorrt_available(), reason="TensorRT is installed here")
def test_backend_reports_not_run_without_tensorrt(tmp_path: Path) -> None:
    calls = [
        lambda: build_bundle_engines(tmp_path),
        lambda: trt_backend.check_engine_record(tmp_path),
        lambda: trt_backend.Engine(tmp_path / "x.engine"),
        lambda: trt_backend.tensorrt_version(),
        lambda: trt_backend.build_engine(
            tmp_path / "a.onnx",
            tmp_path / "a.engine",
            precision="fp16",
            workspace_mib=64,
            dla_core=None,
            timing_cache=None,
            input_name="input",
            min_shape=INPUT,
            opt_shape=INPUT,
            max_shape=INPUT,
        ),
    ]
    for call in calls:
        with pytest.raises(NotRunError) as err:
            call()
        assert str(err.value) == trt_backend.NOT_INSTALLED
        assert err.value.exit_code == EXIT_NOT_RUN


def test_same_release_compares_major_minor_patch() -> None:
    assert trt_backend._same_release("10.3.0", "10.3.0.30")
    assert not trt_backend._same_release("10.3.0", "10.7.0.23")
    assert not trt_backend._same_release("8.5.2", "10.3.0.30")


def _record(split: Path, version: str, gpu: str) -> None:
    engines = split / "engines"
    engines.mkdir(parents=True)
    (engines / "head.fp16.engine").write_bytes(b"head")
    (engines / "tail.fp16.engine").write_bytes(b"tail")
    record = {
        "schema": "isplit.engines/1",
        "tensorrt_version": version,
        "gpu": gpu,
        "precision": "fp16",
        "engines": {
            p: {"file": f"engines/{p}.fp16.engine", "sha256": hashlib.sha256(p.encode()).hexdigest()}
            for p in ("head", "tail")
        },
    }
    (split / RECORD_NAME).write_text(json.dumps(record), encoding="utf-8")


@pytest.fixture
def this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pin what check_engine_record sees as "this machine" to test its comparison logic alone."""
    monkeypatch.setattr(trt_backend, "require_tensorrt", lambda: None)
    monkeypatch.setattr(trt_backend, "tensorrt_version", lambda: "10.3.0.30")
    monkeypatch.setattr(trt_backend, "current_gpu_name", lambda: "NVIDIA Jetson AGX Orin Developer Kit")


@pytest.mark.usefixtures("this_machine")
def test_check_engine_record_accepts_engines_from_this_machine(tmp_path: Path) -> None:
    _record(tmp_path, "10.3.0", "NVIDIA Jetson AGX Orin Developer Kit")
    checked = trt_backend.check_engine_record(tmp_path)["checked"]
    assert checked["version_compared"] and checked["gpu_compared"]


@pytest.mark.usefixtures("this_machine")
def test_check_engine_record_refuses_another_tensorrt_or_gpu(tmp_path: Path) -> None:
    _record(tmp_path / "v", "10.7.0", "NVIDIA Jetson AGX Orin Developer Kit")
    with pytest.raises(BadInputError) as err:
        trt_backend.check_engine_record(tmp_path / "v")
    assert str(err.value) == (
        "engines were built with TensorRT 10.7.0 on GPU 'NVIDIA Jetson AGX Orin Developer Kit'; this machine has "
        "TensorRT 10.3.0.30 on 'NVIDIA Jetson AGX Orin Developer Kit': rebuild them with build_engines.sh"
    )
    _record(tmp_path / "g", "10.3.0", "NVIDIA Jetson Orin NX Engineering Reference Developer Kit")
    with pytest.raises(BadInputError, match=r"rebuild them with build_engines\.sh"):
        trt_backend.check_engine_record(tmp_path / "g")


@pytest.mark.usefixtures("this_machine")
def test_check_engine_record_unknown_gpu_is_not_compared(tmp_path: Path) -> None:
    _record(tmp_path, "10.3.0", "unknown")
    assert trt_backend.check_engine_record(tmp_path)["checked"]["gpu_compared"] is False


@pytest.mark.usefixtures("this_machine")
def test_check_engine_record_refuses_missing_or_modified_engines(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="build the engines first"):
        trt_backend.check_engine_record(tmp_path)
    _record(tmp_path, "10.3.0", "NVIDIA Jetson AGX Orin Developer Kit")
    (tmp_path / "engines" / "tail.fp16.engine").write_bytes(b"changed")
    with pytest.raises(GateFailedError, match="does not match its sha256"):
        trt_backend.check_engine_record(tmp_path)
    (tmp_path / "engines" / "tail.fp16.engine").unlink()
    with pytest.raises(BadInputError, match="is missing"):
        trt_backend.check_engine_record(tmp_path)


# --------------------------------------------------------------------------------------------------
# On the device (TensorRT installed): skipped elsewhere


def _tiny_onnx(path: Path) -> None:
    """Conv + Relu, dynamic batch: small enough to build in seconds on any TensorRT GPU."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["boundary"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("boundary", TensorProto.FLOAT, ["batch", 4, 8, 8])],
        [weight],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.mark.tensorrt
@needs_tensorrt
def test_build_and_run_engine_matches_onnxruntime(tmp_path: Path) -> None:
    import onnxruntime as ort

    onnx_path = tmp_path / "tiny.onnx"
    _tiny_onnx(onnx_path)
    engine = tmp_path / "engines" / "tiny.fp32.engine"
    report = trt_backend.build_engine(
        onnx_path,
        engine,
        precision="fp32",
        workspace_mib=256,
        dla_core=None,
        timing_cache=tmp_path / "engines" / "timing.cache",
        input_name="input",
        min_shape=(1, 3, 8, 8),
        opt_shape=(1, 3, 8, 8),
        max_shape=(4, 3, 8, 8),
    )
    assert engine.is_file() and report["device"] == "gpu" and report["network_layers"] >= 2
    assert (tmp_path / "engines" / "timing.cache").is_file()
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    with trt_backend.Engine(engine) as once:
        got = once({"input": x})["boundary"]
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"input": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-2)  # TF32 convolutions on Ampere and newer
    # one loaded engine, many calls: batch 1, then 4 (its buffers grow), then 2 again
    with trt_backend.Engine(engine) as loaded:
        for n in (1, 4, 2):
            xn = np.random.default_rng(n).standard_normal((n, 3, 8, 8)).astype(np.float32)
            out = loaded({"input": xn})["boundary"]
            np.testing.assert_allclose(out, sess.run(None, {"input": xn})[0], rtol=1e-2, atol=1e-2)


@pytest.mark.tensorrt
@needs_tensorrt
def test_check_engine_record_accepts_a_python_build(tmp_path: Path) -> None:
    split = tmp_path / "split"
    split.mkdir()
    _tiny_onnx(split / "head.onnx")
    _tiny_onnx(split / "tail.onnx")
    profile: TargetProfile = load_target("x86-tensorrt")
    write_engine_build(
        split,
        profile,
        precision="fp16",
        head_onnx="head.onnx",
        tail_onnx="tail.onnx",
        input_shape=(1, 3, 8, 8),
        boundary_shape=(1, 3, 8, 8),
        boundary_name="input",
    )
    manifest = {"splits": [{"dir": "split", "rank": 1}]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    records = build_bundle_engines(tmp_path, 1)
    assert records[0]["tensorrt_version"] == trt_backend.tensorrt_version()
    assert trt_backend.check_engine_record(split)["checked"]["version_compared"] is True


# --------------------------------------------------------------------------------------------------
# TensorRT 10 vs 11: golden plans, the version the plan was written for, and the refusal of a mismatch

GOLDEN_TAIL = [
    "--minShapes=boundary:1x40x28x28",
    "--optShapes=boundary:1x40x28x28",
    "--maxShapes=boundary:8x40x28x28",
    "--memPoolSize=workspace:4096M",
    "--timingCacheFile=engines/timing.cache",
    "--skipInference",
]


@pytest.mark.parametrize(
    ("target", "precision", "onnx", "flags"),
    [
        (
            "x86-tensorrt",
            "fp32",
            "tail.onnx",
            ["--stronglyTyped"],
        ),  # 10.x: the fp32 file carries its precision
        ("x86-tensorrt", "fp16", "tail.onnx", ["--fp16"]),  # 10.x: weak typing, today's flags
        ("x86-tensorrt", "int8", "tail.int8.onnx", ["--int8", "--fp16"]),
        ("x86-tensorrt-11", "fp16", "tail.fp16.onnx", []),  # 11.x: the file carries fp16, no flag
        ("x86-tensorrt-11", "int8", "tail.int8.onnx", []),  # 11.x: Q/DQ carries int8, no flag
    ],
)
def test_golden_tail_commands_for_tensorrt_10_and_11(
    target: str, precision: str, onnx: str, flags: list[str]
) -> None:
    plan = build_recipe(
        load_target(target),
        precision=precision,
        head_onnx="h.onnx",
        tail_onnx=onnx,
        input_shape=INPUT,
        boundary_shape=BOUNDARY,
    )
    assert plan["engines"]["tail"]["trtexec"] == [
        "trtexec",
        f"--onnx={onnx}",
        f"--saveEngine=engines/tail.{precision}.engine",
        *flags,
        *GOLDEN_TAIL,
    ]
    assert plan["tensorrt_version"] == load_target(target).tensorrt_version
    assert plan["typing"] == ("strong" if target.endswith("-11") or precision == "fp32" else "weak")


def test_tensorrt11_plans_never_carry_a_removed_flag(tmp_path: Path) -> None:
    from isplit_export.targets.engine_build import WEAK_TYPING_FLAGS

    for target in ("x86-tensorrt-11", "jetson-orin-agx-jp7"):
        for precision in ("fp16", "int8"):
            _write(tmp_path / target / precision, target, precision)
            plan = read_engine_build(tmp_path / target / precision).to_json()
            script = (tmp_path / target / precision / SCRIPT_NAME).read_text()
            for spec in plan["engines"].values():
                assert not set(spec["trtexec"]) & set(WEAK_TYPING_FLAGS), spec["trtexec"]
            assert not re.search(r"--(fp16|int8|best|bf16|fp8|int4)\b", script)
            assert plan["typing"] == "strong" and plan["tensorrt_major"] == 11


def test_tensorrt11_dla_head_without_fallback_reports_capability(tmp_path: Path) -> None:
    """AGX Orin on JetPack 7.2.2 / TensorRT 11.4.1: a head the check finds fully DLA-capable is built with
    --reportCapabilityDLA and without GPU fallback, so an unexpected fallback is a build error."""
    _write(tmp_path, "jetson-orin-agx-jp7", "fp16")
    head = read_engine_build(tmp_path).to_json()["engines"]["head"]
    assert head["device"] == "dla" and "--useDLACore=0" in head["trtexec"]
    assert "--reportCapabilityDLA" in head["trtexec"] and "--allowGPUFallback" not in head["trtexec"]
    _write(tmp_path / "t10", "jetson-orin-agx", "fp16")  # TensorRT 10.3 has no such parser flag
    head10 = read_engine_build(tmp_path / "t10").to_json()["engines"]["head"]
    assert "--allowGPUFallback" not in head10["trtexec"] and "--reportCapabilityDLA" not in head10["trtexec"]


def test_tensorrt11_profiles_refuse_dla_where_11_has_none() -> None:
    from isplit_export.targets.profiles import dla_unsupported

    assert dla_unsupported("10.3", "Orin") is None
    assert "10.7 was the last" in (dla_unsupported("10.13", "Orin") or "")
    assert "returned in 11.4.1" in (dla_unsupported("11.3", "Jetson AGX Orin") or "")
    assert "AGX Orin only" in (dla_unsupported("11.4.1", "Jetson Orin NX") or "")
    assert dla_unsupported("11.4.1", "Jetson AGX Orin (Ampere, sm_87)") is None


def test_check_tensorrt_version() -> None:
    from isplit_export.targets.engine_build import check_tensorrt_version

    check_tensorrt_version("10.3", "10.3.0.30")
    check_tensorrt_version("11.4.1", "11.4.1.2")
    for plan_version, installed in (("10.3", "10.7.0.23"), ("11.4", "10.3.0.30"), ("11.4.1", "11.4.0.1")):
        with pytest.raises(
            BadInputError, match=f"written for TensorRT {re.escape(plan_version)} but TensorRT"
        ):
            check_tensorrt_version(plan_version, installed)


def test_build_engines_refuses_a_version_mismatch(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stand-in ``tensorrt`` module (a version string and a Builder name, nothing else) stands for the
    installed TensorRT in the version check only: the refusal comes before any TensorRT call."""
    import types

    from isplit_export.contract import SCHEMA
    from isplit_export.files import sha256_file
    from tests.support.helpers import run_cli

    split = tmp_path / "split"
    _write(split, "x86-tensorrt-11", "fp16")
    if not (split / "tail.onnx").exists():
        (split / "tail.onnx").write_bytes((split / "head.onnx").read_bytes())
    files = {
        p.relative_to(tmp_path).as_posix(): {"sha256": sha256_file(p)}
        for p in sorted(tmp_path.rglob("*"))
        if p.is_file()
    }
    manifest = {"schema": SCHEMA, "files": files, "splits": [{"dir": "split", "rank": 1, "files": {}}]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")  # a valid, hashed bundle
    fake = types.ModuleType("tensorrt")
    fake.__version__ = "10.3.0.30"  # type: ignore[attr-defined]
    fake.Builder = object  # type: ignore[attr-defined]  # tensorrt_available() looks for it
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    code, out, err = run_cli(capsys, "build-engines", tmp_path)
    assert code == 2 and out == ""
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "written for TensorRT 11.4 but TensorRT 10.3.0.30 is installed" in lines[0]
    assert not (split / "engines").exists()  # nothing built, nothing written
