"""Serving: the Triton model repository, ``isplit-export serve`` (a real MLServer on 127.0.0.1) and ``run``.

The fast tests check the repository writer on small real ONNX tails and the torch-free image
preprocessing; the e2e tests start and stop a real MLServer process on free loopback ports and send
real tritonclient requests (no mocks of either side).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from google.protobuf import text_format
from onnx import TensorProto, helper, numpy_helper

from isplit_export.cli import main
from isplit_export.contract import Split
from isplit_export.errors import BadInputError
from isplit_export.exporting.onnx_utils import make_session
from isplit_export.options_serving import RunOptions, ServeOptions
from tests.support.helpers import digits_onnx_args, run_cli
from tests.support.serving_helpers import LOOPBACK, Server, free_port

mc = pytest.importorskip("tritonclient.grpc.model_config_pb2")

ONNX_TO_TRITON = {
    TensorProto.UINT8: "TYPE_UINT8",
    TensorProto.FLOAT: "TYPE_FP32",
    TensorProto.FLOAT16: "TYPE_FP16",
}


def _parse(path: Path) -> Any:
    return text_format.Parse(path.read_text(encoding="utf-8"), mc.ModelConfig())


def _io(model_path: Path, *, output: bool) -> tuple[str, str, list[int]]:
    m = onnx.load(str(model_path), load_external_data=False)
    v = (m.graph.output if output else m.graph.input)[0]
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]
    return v.name, ONNX_TO_TRITON[v.type.tensor_type.elem_type], dims


def _assert_config_matches(config: Any, name: str, tail: Path) -> None:
    """The parsed config's name, input and output against the tail ONNX (batch axis -> max_batch_size)."""
    assert config.name == name
    for spec, tensors in ((_io(tail, output=False), config.input), (_io(tail, output=True), config.output)):
        assert len(tensors) == 1
        t = tensors[0]
        assert t.name == spec[0]
        assert mc.DataType.Name(t.data_type) == spec[1]
        assert spec[2][0] == -1 and config.max_batch_size > 0  # dynamic batch axis, batched config
        assert list(t.dims) == spec[2][1:]
    assert config.dynamic_batching.max_queue_delay_microseconds >= 0
    assert len(config.instance_group) == 1 and config.instance_group[0].count == 1


# --------------------------------------------------------------------------------------------------
# fast: the repository writer on small real tails


def _toy_bundle(root: Path) -> list[Split]:
    """A uint8-boundary tail with its weights in a shared pack (weights/...), and a float TensorRT twin."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((16, 32)).astype(np.float32), "w")
    scale = numpy_helper.from_array(np.array(0.05, np.float32), "scale")
    zp = numpy_helper.from_array(np.array(128, np.uint8), "zp")
    shape = helper.make_tensor_value_info("boundary", TensorProto.UINT8, ["N", 4, 2, 2])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 32])
    nodes = [
        helper.make_node("DequantizeLinear", ["boundary", "scale", "zp"], ["b"]),
        helper.make_node("Flatten", ["b"], ["f"]),
        helper.make_node("MatMul", ["f", "w"], ["logits"]),
    ]
    tail = helper.make_model(
        helper.make_graph(nodes, "tail", [shape], [logits], [w, scale, zp]),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    (root / "weights").mkdir(parents=True)
    onnx.save_model(
        tail,
        str(root / "01-conv.tail.onnx"),
        save_as_external_data=True,
        location="weights/float32-toy.bin",
        size_threshold=1024,
    )
    f_in = helper.make_tensor_value_info("boundary", TensorProto.FLOAT, ["N", 4, 2, 2])
    trt = helper.make_model(
        helper.make_graph(nodes[1:], "tail_trt", [f_in], [logits], [w]),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    trt.graph.node[0].input[0] = "boundary"
    onnx.save_model(trt, str(root / "01-conv.tail.trt.onnx"))
    sdir = root / "splits" / "01-conv"
    sdir.mkdir(parents=True)

    def part(name: str, onnx_rel: str, inp: str) -> dict[str, Any]:
        shapes = {"name": inp, "min": [1, 4, 2, 2], "opt": [1, 4, 2, 2], "max": [8, 4, 2, 2]}
        return {"onnx": onnx_rel, "engine": f"engines/{name}.fp16.engine", "input": shapes}

    plan = {
        "schema": "isplit.engine_plan/1",
        "target": "x86-tensorrt",
        "precision": "fp16",
        "workspace_mib": 1024,
        "timing_cache": "engines/timing.cache",
        "engines": {
            "head": part("head", "../../01-conv.tail.trt.onnx", "input"),
            "tail": part("tail", "../../01-conv.tail.trt.onnx", "boundary"),
        },
    }
    (sdir / "engine_plan.json").write_text(json.dumps(plan), encoding="utf-8")
    files = {"tail": "01-conv.tail.onnx", "engine_plan_json": "splits/01-conv/engine_plan.json"}
    return [Split.from_json({"dir": "splits/01-conv", "files": files}, 0)]


def test_triton_repository_parses_and_matches_the_tail(tmp_path: Path) -> None:
    from isplit_export.bundle.triton import write_repository

    root = tmp_path / "b"
    entries = _toy_bundle(root)
    block = write_repository(root, entries, model="toy")
    model = root / "triton" / "01-conv"
    config = _parse(model / "config.pbtxt")
    _assert_config_matches(config, "01-conv", root / "01-conv.tail.onnx")
    assert config.platform == "onnxruntime_onnx"
    assert mc.DataType.Name(config.input[0].data_type) == "TYPE_UINT8"
    # the bundle's pack is hard-linked into the version folder (no ../): its bytes stay on disk once
    record = block["models"][0]
    assert record["weights"] == ["triton/01-conv/1/float32-toy.bin"]
    assert record["weights_stored"] == "hard link"
    pack = model / "1" / "float32-toy.bin"
    assert pack.samefile(root / "weights" / "float32-toy.bin") and pack.stat().st_nlink == 2
    assert not (model / "1" / "model.weights.bin").exists()
    x = np.random.default_rng(1).integers(0, 256, (3, 4, 2, 2), dtype=np.uint8)
    ours = make_session(model / "1" / "model.onnx").run(None, {"boundary": x})[0]
    ref = make_session(root / "01-conv.tail.onnx").run(None, {"boundary": x})[0]
    np.testing.assert_array_equal(ours, ref)
    # the TensorRT variant: Triton's custom configuration, the engine the build plan makes
    trt = _parse(model / "configs" / "tensorrt.pbtxt")
    assert trt.platform == "tensorrt_plan" and trt.default_model_filename == "model.plan"
    assert mc.DataType.Name(trt.input[0].data_type) == "TYPE_FP32" and list(trt.input[0].dims) == [4, 2, 2]
    assert block["models"][0]["tensorrt"]["engine"] == "splits/01-conv/engines/tail.fp16.engine"
    comment = (model / "configs" / "tensorrt.pbtxt").read_text(encoding="utf-8").splitlines()[0]
    assert "built on this server's GPU from 01-conv.tail.trt.onnx" in comment
    # deterministic: the same entries give the same bytes
    root2 = tmp_path / "c"
    write_repository(root2, _toy_bundle(root2), model="toy")
    for rel in ("config.pbtxt", "configs/tensorrt.pbtxt", "1/model.onnx", "1/float32-toy.bin"):
        assert (model / rel).read_bytes() == (root2 / "triton" / "01-conv" / rel).read_bytes()


def test_triton_repository_copies_the_tail_weights_without_hard_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file system that refuses hard links: the tail's own tensors are copied, and reported so."""
    from isplit_export.bundle import triton

    def refuse(src: object, dst: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    root = tmp_path / "b"
    entries = _toy_bundle(root)
    monkeypatch.setattr(triton.os, "link", refuse)
    record = triton.write_repository(root, entries, model="toy")["models"][0]
    assert record["weights"] == ["triton/01-conv/1/model.weights.bin"]
    assert record["weights_stored"] == "copy"
    version = root / "triton" / "01-conv" / "1"
    assert sorted(p.name for p in version.iterdir()) == ["model.onnx", "model.weights.bin"]
    onnx.checker.check_model(str(version / "model.onnx"), full_check=True)
    x = np.random.default_rng(2).integers(0, 256, (2, 4, 2, 2), dtype=np.uint8)
    ours = make_session(version / "model.onnx").run(None, {"boundary": x})[0]
    ref = make_session(root / "01-conv.tail.onnx").run(None, {"boundary": x})[0]
    np.testing.assert_array_equal(ours, ref)


def test_preprocess_matches_the_torch_pipeline(tmp_path: Path, digits_dir: Path) -> None:
    from PIL import Image

    from isplit_export.data import preprocess
    from isplit_export.models import Preprocessing
    from isplit_export.serving.local import preprocess_image
    from isplit_export.zoo import DIGITS_PREPROCESSING

    png = next(iter(sorted(digits_dir.rglob("*.png"))))
    with Image.open(png) as im:
        want = preprocess(im, DIGITS_PREPROCESSING).numpy()
    np.testing.assert_array_equal(preprocess_image(png, DIGITS_PREPROCESSING.to_json())[0], want)
    rgb = np.random.default_rng(0).integers(0, 256, (37, 50, 3), dtype=np.uint8)
    path = tmp_path / "x.png"
    Image.fromarray(rgb).save(path)
    prep = Preprocessing(resize=32, crop=28)
    with Image.open(path) as im:
        want = preprocess(im, prep).numpy()
    np.testing.assert_allclose(preprocess_image(path, prep.to_json())[0], want, rtol=0, atol=1e-6)


def test_serve_and_run_options_refuse_bad_values() -> None:
    for bad in (
        {"server": "localhost"},
        {"server": "h:0"},
        {"concurrency": 0},
        {"protocol": "udp"},
        {"requests": 5, "duration_s": 1.0},
        {"timeout_ms": 0},
        {"retries": -1},
    ):
        with pytest.raises(BadInputError):
            RunOptions(**bad)  # type: ignore[arg-type]
    with pytest.raises(BadInputError):
        ServeOptions(port=70000)
    assert ServeOptions(port=9000).http_port == 9001


# --------------------------------------------------------------------------------------------------
# e2e: a real MLServer on 127.0.0.1


def _manifest(bundle: Path) -> dict[str, Any]:
    return dict(json.loads((bundle / "manifest.json").read_text(encoding="utf-8")))


@pytest.mark.e2e
def test_bundle_repository_is_valid_and_hashed(int8_bundle: Path, tmp_path: Path) -> None:
    m = _manifest(int8_bundle)
    assert [x["split"] for x in m["triton"]["models"]] == [s["dir"] for s in m["splits"]]
    for entry, split in zip(m["triton"]["models"], m["splits"], strict=True):
        config = _parse(int8_bundle / entry["config"])
        _assert_config_matches(config, entry["name"], int8_bundle / split["files"]["tail"])
        assert mc.DataType.Name(config.input[0].data_type) == "TYPE_UINT8"
        for rel in (entry["config"], entry["model"], *entry["weights"]):
            assert rel in m["files"] and ".." not in rel
        assert entry["weights_stored"] == "hard link"
        for rel in entry["weights"]:  # the bundle's own float32 pack, hard-linked: stored once
            pack = next((int8_bundle / "weights").glob("float32-*.bin"))
            assert (int8_bundle / rel).samefile(pack)
        # onnxruntime reads hard-linked external data (the onnx checker refuses it: checked on a copy below)
        make_session(int8_bundle / entry["model"])
    copy = tmp_path / "copy"
    shutil.copytree(int8_bundle / "triton", copy)
    for entry in m["triton"]["models"]:
        onnx.checker.check_model(str(copy / entry["model"].removeprefix("triton/")), full_check=True)


@pytest.mark.e2e
def test_serve_run_and_plan(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, int8_bundle: Path, digits_dir: Path
) -> None:
    from isplit_export.jobs.run import run
    from isplit_export.serving.bundle_access import open_bundle
    from isplit_export.serving.local import load_images
    from isplit_export.verification.runners import OnnxrtRunner, run_pair

    bundle = tmp_path / "b"
    shutil.copytree(int8_bundle, bundle)
    m = _manifest(bundle)
    model = m["triton"]["models"][0]["name"]
    server = Server(
        Path("b"), log=tmp_path / "serve.log", cwd=tmp_path
    ).start()  # a relative BUNDLE, as typed
    try:
        server.wait_ready(model)
        code, out, err = run_cli(
            capsys,
            "run",
            bundle,
            "--url",
            server.address,
            "--data",
            digits_dir,
            "--images",
            "40",
            "--requests",
            "60",
            "--concurrency",
            "2",
        )
        assert code == 0, out + err
        assert "p50" in out and "agreement with the full model" in out and "bytes per image" in out
        doc = json.loads((bundle / "run.json").read_text(encoding="utf-8"))
        r = doc["runs"][m["splits"][0]["dir"]]
        assert r["images"] == {"distinct": 40, "requests": 60, "ok": 60, "failed": 0, "skipped": 0}
        assert r["vs_local_pair"]["passed"] and r["goldens"]["passed"] and r["passed"]
        assert r["bytes"]["payload_per_image"] == m["splits"][0]["boundary"]["bytes_per_image"]
        assert r["latency_ms"]["round_trip"]["n"] == 60 and r["server_compute"]["ms"]["n"] == 60
        assert r["in_flight_max"] == 2  # --concurrency 2 kept two requests in flight
        # independent check: the served logits against the local pair run here, image by image
        result = run(
            RunOptions(
                bundle=bundle, server=server.address, data=digits_dir, images=12, out=tmp_path / "r.json"
            )
        )
        ba = open_bundle(bundle, 1)
        images, _ = load_images(RunOptions(bundle=bundle, data=digits_dir, images=12), ba, ba.splits[0])
        x = np.concatenate([im.x for im in images if im.x is not None])
        _, local = run_pair(OnnxrtRunner(ba.splits[0].head), OnnxrtRunner(ba.splits[0].tail), x)
        assert sorted(result.served) == list(range(12))  # every image served (its least faithful answer kept)
        served = np.concatenate([result.served[i] for i in range(12)])
        assert served.shape == local.shape
        assert float(np.max(np.abs(served - local))) <= 1e-4 * float(np.max(np.abs(local)))  # the fp32 gate
        # JSON over HTTP gives the same accounting
        code, out, err = run_cli(
            capsys,
            "run",
            bundle,
            "--url",
            f"{LOOPBACK}:{server.http_port}",
            "--protocol",
            "http",
            "--requests",
            "8",
            "--out",
            tmp_path / "http.json",
        )
        assert code == 0, out + err
        # Ctrl-C and SIGTERM mid-run: requests in flight finish, the unsent ones are skipped, all counted, exit 130
        for sig in (signal.SIGINT, signal.SIGTERM):
            sent: list[str] = []

            def interrupt(req: Any, sig: int = sig, sent: list[str] = sent) -> None:
                sent.append(req.status)
                if len(sent) == 5:
                    os.kill(os.getpid(), sig)

            stopped = run(
                RunOptions(bundle=bundle, server=server.address, requests=500, out=tmp_path / "int.json"),
                on_result=interrupt,
            )
            c = stopped.data["images"]
            assert (
                stopped.exit_code == {signal.SIGINT: 130, signal.SIGTERM: 143}[sig]
                and stopped.data["interrupted"]
            )
            assert c["ok"] + c["failed"] + c["skipped"] == c["requests"] == 500 and c["skipped"] >= 400
        # plan uses what run measured, flagged as measured; a loopback round trip is no link (issue 24 R8)
        assert r["server"]["address_class"] == "loopback"
        code, out, err = run_cli(capsys, "plan", bundle)
        assert code == 2 and "server on this machine" in err and "--link" in err
        code, out, err = run_cli(capsys, "plan", bundle, "--link", "ethernet")
        assert code == 0, err
        assert "link ethernet" in out and "measured device+server" in out  # onnx target: the head too
        assert "no bandwidth is derived" in out
        plan = json.loads((bundle / "plan.json").read_text(encoding="utf-8"))
        row = next(c for c in plan["cuts"] if c["index"] == m["splits"][0]["index"])
        assert set(row["cost"]["measured"]) == {"device", "server"}
        # plan.json keeps 6 decimals of a millisecond: a sub-0.1 ms head p50 loses more than rel 1e-5 to rounding
        assert row["cost"]["device_ms"] == pytest.approx(r["latency_ms"]["head"]["p50"], rel=1e-5, abs=1e-6)
        assert row["cost"]["server_ms"] == pytest.approx(r["server_compute"]["ms"]["p50"], rel=1e-5, abs=1e-6)
    finally:
        rc = server.stop()
    assert rc == 0, (tmp_path / "serve.log").read_text()
    assert "stopped" in (tmp_path / "serve.log").read_text()


@pytest.mark.e2e
def test_server_killed_mid_run_then_restarted(tmp_path: Path, int8_bundle: Path) -> None:
    from isplit_export.jobs.run import EXIT_REQUESTS_FAILED, run
    from isplit_export.serving.records import Request

    m = _manifest(int8_bundle)
    model = m["triton"]["models"][0]["name"]
    log = tmp_path / "serve.log"
    first = Server(int8_bundle, log=log).start()
    first.wait_ready(model)
    second = Server(int8_bundle, port=first.port, http_port=first.http_port, log=log)
    seen: list[str] = []
    state = {"killed": False, "waited": False}

    def on_result(req: Request) -> None:
        seen.append(req.status)
        if not state["killed"] and seen.count("ok") >= 5:
            first.kill()  # the server dies mid-run...
            second.start()  # ...and comes back
            state["killed"] = True
        elif state["killed"] and req.status == "failed" and not state["waited"]:
            second.wait_ready(model)  # hold this worker until the server is back: the rest must succeed
            time.sleep(1.2)  # > the run's gRPC reconnect backoff cap (1 s): its channel is connected again
            state["waited"] = True

    try:
        options = RunOptions(
            bundle=int8_bundle,
            server=first.address,
            requests=30,
            retries=1,
            backoff_ms=20,
            timeout_ms=5000,
            out=tmp_path / "run.json",
        )
        result = run(options, on_result=on_result)
    finally:
        first.kill()
        rc = second.stop(sig=signal.SIGINT)  # Ctrl-C stops it cleanly too
    assert rc == 0
    counts = result.data["images"]
    assert state["killed"] and state["waited"]
    assert counts["requests"] == 30 and counts["ok"] + counts["failed"] + counts["skipped"] == 30
    assert counts["failed"] >= 1 and counts["ok"] >= 6 and counts["skipped"] == 0
    assert seen[-1] == "ok" and len(seen) == 30  # resumed after the restart; each request reported once
    assert result.exit_code == EXIT_REQUESTS_FAILED
    failed = [f for f in result.data["failures"] if f["status"] == "failed"]
    assert len(failed) == counts["failed"] and all(f["attempts"] == 2 for f in failed)


@pytest.mark.e2e
def test_no_server_gets_one_line_within_the_wait(
    capsys: pytest.CaptureFixture[str], int8_bundle: Path
) -> None:
    from isplit_export.serving.client import EXIT_UNREACHABLE

    address = f"{LOOPBACK}:{free_port()}"
    t = time.monotonic()
    code, _, err = run_cli(capsys, "run", int8_bundle, "--url", address, "--wait", "1")
    assert time.monotonic() - t < 10
    assert code == EXIT_UNREACHABLE
    lines = err.strip().splitlines()
    assert len(lines) == 1 and address in lines[0] and "isplit-export serve" in lines[0]
    # the head's TensorRT path needs TensorRT: not run here (exit 4), never faked
    code, _, err = run_cli(
        capsys, "run", int8_bundle, "--url", address, "--backend", "tensorrt", "--wait", "0"
    )
    assert code == 4 and "TensorRT" in err


@pytest.mark.e2e
def test_a_server_with_another_boundary_dtype_is_refused_in_one_line(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    int8_bundle: Path,
    digits_weights: Path,
    digits_dir: Path,
) -> None:
    fp32 = tmp_path / "fp32"  # the same cuts (same model names), another boundary encoding
    assert (
        main(
            [
                *digits_onnx_args(digits_weights, digits_dir),
                "--out",
                str(fp32),
                "--latency-runs",
                "1",
            ]
        )
        == 0
    )
    name = _manifest(int8_bundle)["triton"]["models"][0]["name"]
    assert _manifest(fp32)["splits"][0]["dir"].endswith(name)
    server = Server(fp32, log=tmp_path / "serve.log").start()
    try:
        server.wait_ready(name)
        code, _, err = run_cli(
            capsys, "run", int8_bundle, "--url", server.address, "--out", tmp_path / "r.json"
        )
        # past that check, a request the server refuses (uint8 to an fp32 tail) is retried, bounded, then failed
        from isplit_export.serving.client import Client, send
        from isplit_export.serving.records import Request

        options = RunOptions(server=server.address, retries=2, backoff_ms=10)
        client = Client(options, name)
        req = Request(n=0, image=0)
        t = time.monotonic()
        _, logits = send(client, options, np.zeros((1, 16, 8, 8), np.uint8), 10, req, threading.Event())
        client.close()
        assert logits is None and req.status == "failed" and req.attempts == 3 and time.monotonic() - t < 10
        assert "UINT8" in str(req.error) or "FP32" in str(req.error)
    finally:
        server.stop()
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and name in lines[0] and "FP32" in lines[0] and "UINT8" in lines[0]


@pytest.mark.e2e
def test_a_hung_server_gets_the_one_line_in_bounded_time(
    capsys: pytest.CaptureFixture[str], int8_bundle: Path
) -> None:
    """A socket that accepts connections and never answers: every call times out, the run still ends."""
    import socket

    from isplit_export.serving.client import EXIT_UNREACHABLE

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as hung:
        hung.bind((LOOPBACK, 0))
        hung.listen(8)
        address = f"{LOOPBACK}:{hung.getsockname()[1]}"
        t = time.monotonic()
        code, _, err = run_cli(
            capsys, "run", int8_bundle, "--url", address, "--wait", "2", "--timeout-ms", "500"
        )
        elapsed = time.monotonic() - t
    assert code == EXIT_UNREACHABLE and address in err and elapsed < 15, (elapsed, err)


@pytest.mark.e2e
def test_serve_refuses_a_modified_tail(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, int8_bundle: Path
) -> None:
    bundle = tmp_path / "b"
    shutil.copytree(int8_bundle, bundle)
    tail = _manifest(bundle)["splits"][0]["files"]["tail"]
    with open(bundle / tail, "ab") as f:
        f.write(b"\0")
    code, _, err = run_cli(capsys, "serve", bundle, "--port", free_port())
    assert code == 1, err
    assert tail in err and "modified" in err
