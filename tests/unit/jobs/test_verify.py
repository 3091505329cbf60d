"""verify: a tiny real bundle (seeded torch CNN, exported to ONNX) re-checked end to end.

The bundle is written here by a small helper that follows docs/bundle.md (the real writer is
bundle.py); verify itself is torch-free, only building the fixture needs torch.
"""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from isplit_export.contract import check_files
from isplit_export.errors import BadInputError, GateFailedError, NotRunError
from isplit_export.exporting.encoding import calibrate_encoding, decode_tail, encode_array, encode_head
from isplit_export.exporting.onnx_utils import make_session, run_session
from isplit_export.files import load_npz, save_npz, sha256_file, write_json
from isplit_export.jobs.verify import VERIFY_FILE, verify_bundle
from isplit_export.verification.checks import compare_boundary
from isplit_export.verification.outcome import format_verification
from isplit_export.verification.runners import OnnxrtRunner, measure_latency, run_pair

torch = pytest.importorskip("torch")  # only the fixture needs torch; verify itself is torch-free

N_GOLDEN = 6
SPLITS = {"pool1": 3, "relu2": 5}  # node name -> index of the first tail module in the Sequential


# --------------------------------------------------------------------------------------------------
# fixture: a tiny bundle


def _model() -> Any:
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 5),
    )
    return model.eval()


def _inputs() -> np.ndarray:
    """Images whose class-like structure (a bright quadrant per image) spreads the logits apart."""
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 0.3, size=(N_GOLDEN, 3, 16, 16)).astype(np.float32)
    for i in range(N_GOLDEN):
        r, c = divmod(i % 4, 2)
        x[i, i % 3, r * 8 : r * 8 + 8, c * 8 : c * 8 + 8] += 2.0
    return x


def _export(module: Any, example: Any, path: Path, in_name: str, out_name: str) -> onnx.ModelProto:
    torch.onnx.export(
        module,
        (example,),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=[in_name],
        output_names=[out_name],
        dynamic_axes={in_name: {0: "batch"}, out_name: {0: "batch"}},
    )
    return onnx.load(str(path))


def _quantize(src: Path, dst: Path, feeds: np.ndarray) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    name = make_session(src).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{name: feeds[i : i + 1]} for i in range(len(feeds))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    quantize_static(
        str(src),
        str(dst),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
    )


def write_manifest(root: Path, splits: list[dict[str, Any]], encoding: str) -> dict[str, Any]:
    """manifest.json per docs/bundle.md: every file hashed but manifest.json and report.md."""
    (root / "report.md").write_text("# tiny bundle\n", encoding="utf-8")
    files = {
        p.relative_to(root).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in ("manifest.json", "report.md")
    }
    manifest = {
        "schema": "isplit.bundle/1",
        "tool": {"name": "isplit-export", "version": "0.1.0"},
        "model": {"name": "tiny", "weights": "seed:0", "weights_sha256": None, "num_classes": 5},
        "input": {"name": "input", "shape": ["batch", 3, 16, 16], "dtype": "float32", "layout": "NCHW"},
        "opset": 17,
        "boundary_encoding": encoding,
        "splits": splits,
        "files": files,
        "run": {"created": "2026-01-01T00:00:00Z", "report_sha256": sha256_file(root / "report.md")},
    }
    write_json(root / "manifest.json", manifest)
    return manifest


def build_bundle(root: Path, encoding: str, *, qdq: bool = False) -> Path:
    """A bundle of the tiny model with two splits, boundary ``encoding``, optional INT8 QDQ pairs."""
    root.mkdir(parents=True)
    model, x = _model(), _inputs()
    xt = torch.from_numpy(x)
    labels = np.array([0, 1, -1, 3, -1, 2], dtype=np.int64)
    with torch.no_grad():
        logits = model(xt).numpy()
    _export(model, xt[:1], root / "full.onnx", "input", "logits")
    entries = []
    for pos, (node, k) in enumerate(SPLITS.items(), start=1):
        rel = f"splits/{pos:02d}-{node}"
        sdir = root / rel
        sdir.mkdir(parents=True)
        head_m, tail_m = model[:k], model[k:]
        with torch.no_grad():
            b = head_m(xt)
        enc = calibrate_encoding(encoding, b.numpy())
        head = encode_head(_export(head_m, xt[:1], sdir / "head.onnx", "input", "boundary"), enc)
        tail = decode_tail(_export(tail_m, b[:1], sdir / "tail.onnx", "boundary", "logits"), enc)
        (sdir / "head.onnx").write_bytes(head.SerializeToString())
        (sdir / "tail.onnx").write_bytes(tail.SerializeToString())
        boundary = encode_array(b.numpy(), enc)
        save_npz(sdir / "golden.npz", {"input": x, "boundary": boundary, "logits": logits, "labels": labels})
        files = {"head": f"{rel}/head.onnx", "tail": f"{rel}/tail.onnx", "golden": f"{rel}/golden.npz"}
        if qdq:
            _quantize(sdir / "head.onnx", sdir / "head.int8.onnx", x)
            _quantize(sdir / "tail.onnx", sdir / "tail.int8.onnx", b.numpy())
            files.update(head_int8=f"{rel}/head.int8.onnx", tail_int8=f"{rel}/tail.int8.onnx")
        entries.append(
            {
                "dir": rel,
                "rank": pos,
                "index": k - 1,
                "node": node,
                "module": str(k - 1),
                "boundary": {**enc.to_json(), "shape": ["batch", *b.shape[1:]], "bytes_per_image": 0},
                "files": files,
            }
        )
    write_manifest(root, entries, encoding)
    return root


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("bundles")
    return {
        "fp32": build_bundle(base / "fp32", "fp32", qdq=True),
        "fp16": build_bundle(base / "fp16", "fp16"),
        "int8": build_bundle(base / "int8", "int8"),
    }


@pytest.fixture
def bundle(bundles: dict[str, Path], tmp_path: Path) -> Path:
    """A private copy of the fp32 bundle, free to tamper with."""
    return Path(shutil.copytree(bundles["fp32"], tmp_path / "bundle"))


def _rehash(root: Path, rel: str) -> None:
    """Update the manifest hash of ``rel`` so that hashing passes (a consistent but wrong bundle)."""
    path = root / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["files"][rel] = {"sha256": sha256_file(root / rel), "bytes": (root / rel).stat().st_size}
    write_json(path, manifest)


# --------------------------------------------------------------------------------------------------
# passing bundles


def test_fresh_bundle_passes_and_writes_verify_json(bundle: Path) -> None:
    result = verify_bundle(bundle)
    assert result.passed and result.outcome == "passed"
    checks = [(r.split, r.check) for r in result.rows]
    assert checks == [(1, "onnx"), (1, "onnx-int8-qdq"), (2, "onnx"), (2, "onnx-int8-qdq")]
    main = result.rows[0]
    assert (
        main.gate.name == "fp32"
        and main.metrics["max_abs_rel"] < 1e-5
        and main.metrics["top1_agreement"] == 1
    )
    assert main.boundary["passed"] and main.boundary["dtype"] == "float32"
    assert main.task == {
        "metric": "accuracy",
        "value": pytest.approx(main.task["full_model"]),
        "full_model": main.task["full_model"],
        "drop": pytest.approx(0.0),
    }
    assert result.rows[1].gate.name == "int8-qdq" and result.rows[1].boundary["compared"] is False

    data = json.loads((bundle / VERIFY_FILE).read_text())
    assert (
        data["schema"] == "isplit.verify/1"
        and data["outcome"] == "passed"
        and data["backend"] == "onnxruntime"
    )
    assert data["manifest_sha256"] == sha256_file(bundle / "manifest.json")
    assert [r["check"] for r in data["rows"]] == [c for _, c in checks]
    # verify.json is not part of the hashed bundle: verifying again still passes
    assert verify_bundle(bundle).passed


@pytest.mark.parametrize(("encoding", "dtype"), [("fp16", "float16"), ("int8", "uint8")])
def test_encoded_bundles_pass_under_their_gate(bundles: dict[str, Path], encoding: str, dtype: str) -> None:
    result = verify_bundle(bundles[encoding], write=False)
    assert result.passed, format_verification(result)
    assert {r.gate.name for r in result.rows} == {encoding}
    assert all(r.boundary["dtype"] == dtype and r.boundary["passed"] for r in result.rows)
    if encoding == "int8":
        assert all(r.boundary["max_step"] <= 1 for r in result.rows)
    assert not (bundles[encoding] / VERIFY_FILE).exists()


def test_single_split(bundle: Path) -> None:
    result = verify_bundle(bundle, split=2, write=False)
    assert result.passed and {r.split for r in result.rows} == {2}
    assert {r.dir for r in result.rows} == {"splits/02-relu2"}


def test_format_verification(bundle: Path) -> None:
    text = format_verification(verify_bundle(bundle, write=False))
    lines = text.splitlines()
    assert lines[0].split() == [
        "split",
        "node",
        "check",
        "precision/encoding",
        "max_abs_rel",
        "cosine",
        "top1",
        "gate",
    ]
    assert lines[1].split()[:4] == ["01", "pool1", "onnx", "fp32/fp32"]
    assert lines[1].endswith("pass (fp32)") and "pass (int8-qdq)" in lines[2]
    assert lines[-1] == "onnxruntime: passed"


# --------------------------------------------------------------------------------------------------
# tampered / inconsistent bundles


def test_modified_file_fails_naming_it(bundle: Path) -> None:
    path = bundle / "splits/01-pool1/tail.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(
        GateFailedError, match=r"^bundle file splits/01-pool1/tail\.onnx was modified \(its sha256 differs"
    ) as e:
        verify_bundle(bundle)
    assert "rebuild the bundle or restore the file" in str(e.value) and "\n" not in str(e.value)
    assert e.value.exit_code == 1
    assert not (bundle / VERIFY_FILE).exists()


def test_missing_file_fails(bundle: Path) -> None:
    (bundle / "splits/02-relu2/golden.npz").unlink()
    with pytest.raises(GateFailedError, match=r"bundle file splits/02-relu2/golden\.npz is missing"):
        verify_bundle(bundle, split=1)  # the whole bundle is hashed even for one split


def test_modified_report_fails(bundle: Path) -> None:
    (bundle / "report.md").write_text("# edited\n")
    with pytest.raises(GateFailedError, match=r"bundle file report\.md was modified"):
        check_files(bundle, json.loads((bundle / "manifest.json").read_text()))


def test_path_outside_bundle_is_refused(bundle: Path) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["../outside.txt"] = {"sha256": "0" * 64, "bytes": 1}
    with pytest.raises(GateFailedError, match="not a path inside the bundle"):
        check_files(bundle, manifest)


def test_mismatched_golden_logits_fail_the_gate(bundle: Path) -> None:
    rel = "splits/01-pool1/golden.npz"
    golden = load_npz(bundle / rel)
    golden["logits"] = golden["logits"] + np.float32(0.05) * np.abs(golden["logits"]).max()
    save_npz(bundle / rel, golden)
    _rehash(bundle, rel)
    result = verify_bundle(bundle)
    assert not result.passed and result.outcome == "gate-failed"
    failed = [r for r in result.rows if not r.passed]
    assert [(r.split, r.check) for r in failed] == [(1, "onnx")]
    assert any(reason.startswith("max_abs_rel ") and "gate fp32" in reason for reason in failed[0].reasons)
    assert json.loads((bundle / VERIFY_FILE).read_text())["outcome"] == "gate-failed"
    text = format_verification(result)
    assert "FAIL (fp32)" in text and "splits/01-pool1 [onnx]: max_abs_rel" in text
    assert text.splitlines()[-1] == "onnxruntime: gate-failed"


def test_int8_boundary_more_than_one_step_off_fails(bundles: dict[str, Path], tmp_path: Path) -> None:
    root = Path(shutil.copytree(bundles["int8"], tmp_path / "b"))
    rel = "splits/02-relu2/golden.npz"
    golden = load_npz(root / rel)
    b = golden["boundary"].astype(np.int16)
    b.flat[int(np.argmax(b))] -= 2
    golden["boundary"] = b.astype(np.uint8)
    save_npz(root / rel, golden)
    _rehash(root, rel)
    result = verify_bundle(root, write=False)
    assert [r.passed for r in result.rows] == [True, False]
    assert result.rows[1].reasons == ["boundary max_step 2 not <= 1 quantization step(s) from golden"]


# --------------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("split", [0, 3, 7, -1])
def test_split_out_of_range(bundle: Path, split: int) -> None:
    with pytest.raises(BadInputError, match=rf"^split {split} out of range: this bundle has splits 1\.\.2$"):
        verify_bundle(bundle, split=split)


def test_unknown_backend(bundle: Path) -> None:
    with pytest.raises(BadInputError, match="unknown backend 'openvino'"):
        verify_bundle(bundle, backend="openvino")


def test_bad_manifests(bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="not found"):
        verify_bundle(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BadInputError, match=r"manifest\.json not found: .* is not an isplit-export bundle"):
        verify_bundle(empty)
    path = bundle / "manifest.json"
    text = path.read_text()
    path.write_text(text[:-20])
    with pytest.raises(BadInputError, match=r"is not valid JSON .*: rebuild the bundle"):
        verify_bundle(bundle)
    path.write_text(text.replace('"isplit.bundle/1"', '"isplit.bundle/0"'))
    with pytest.raises(BadInputError, match=r"schema 'isplit\.bundle/0', expected 'isplit\.bundle/1'"):
        verify_bundle(bundle)


# --------------------------------------------------------------------------------------------------
# TensorRT


def test_tensorrt_backend_is_not_run_without_tensorrt(bundle: Path) -> None:
    from isplit_export.targets.trt_backend import tensorrt_available

    if tensorrt_available():
        pytest.skip("TensorRT is available here: the device tests cover this backend")
    with pytest.raises(NotRunError) as e:
        verify_bundle(bundle, backend="tensorrt")
    assert e.value.exit_code == 4
    assert not (bundle / VERIFY_FILE).exists()


def _onnx_engine_backend(loads: list[str]) -> types.ModuleType:
    """A stand-in for trt_backend whose "engines" are ONNX copies run by onnxruntime (wiring test only);
    ``loads`` records each engine loaded."""
    fake = types.ModuleType("isplit_export.targets.trt_backend")
    fake.tensorrt_available = lambda: True  # type: ignore[attr-defined]
    fake.check_engine_record = lambda split_dir: {}  # type: ignore[attr-defined]

    class Engine:
        def __init__(self, engine_path: Path, *, dla_core: int | None = None, trust: bool = False) -> None:
            assert trust  # copied ONNX files, not built here: only --trust-engines lets them load
            loads.append(f"{engine_path.parent.parent.name}/{engine_path.name}")
            self.sess = make_session(engine_path)

        def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            out = run_session(self.sess, {self.sess.get_inputs()[0].name: next(iter(feeds.values()))})
            return {self.sess.get_outputs()[0].name: out[0]}

        def close(self) -> None:
            self.sess = None

    fake.Engine = Engine  # type: ignore[attr-defined]
    return fake


def test_tensorrt_path_wiring_with_stand_in_engines(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import isplit_export.targets

    loads: list[str] = []
    fake = _onnx_engine_backend(loads)
    monkeypatch.setitem(sys.modules, "isplit_export.targets.trt_backend", fake)
    monkeypatch.setattr(isplit_export.targets, "trt_backend", fake, raising=False)
    with pytest.raises(
        NotRunError, match=r"^no engines in splits/01-pool1/engines: run build_engines.sh or isplit"
    ):
        verify_bundle(bundle, backend="tensorrt")
    for sdir in sorted((bundle / "splits").iterdir()):
        (sdir / "engines").mkdir()
        shutil.copy(sdir / "head.onnx", sdir / "engines/head.fp16.engine")
        shutil.copy(sdir / "tail.onnx", sdir / "engines/tail.fp16.engine")
    result = verify_bundle(bundle, backend="tensorrt", trust_engines=True)
    assert result.passed, format_verification(result)
    assert [(r.split, r.check, r.gate.name) for r in result.rows] == [
        (1, "tensorrt-fp16", "trt-fp16"),
        (2, "tensorrt-fp16", "trt-fp16"),
    ]
    written = json.loads((bundle / VERIFY_FILE).read_text())
    assert written["backend"] == "tensorrt"
    for row in written["rows"]:  # engine latencies, which `isplit-export plan` prefers to its estimates
        assert set(row["latency_ms"]) == {"head_ms", "tail_ms"} and all(
            v > 0 for v in row["latency_ms"].values()
        )
    # each engine is loaded once, runs the goldens and is timed: never once per image or per run
    assert sorted(loads) == sorted(
        f"{d}/{e}.fp16.engine" for d in ("01-pool1", "02-relu2") for e in ("head", "tail")
    )


# --------------------------------------------------------------------------------------------------
# helpers


def test_run_pair_onnx_batches(bundle: Path) -> None:
    sdir = bundle / "splits/01-pool1"
    x = load_npz(sdir / "golden.npz")["input"]
    b1, y1 = run_pair(OnnxrtRunner(sdir / "head.onnx"), OnnxrtRunner(sdir / "tail.onnx"), x, batch=1)
    _, y4 = run_pair(OnnxrtRunner(sdir / "head.onnx"), OnnxrtRunner(sdir / "tail.onnx"), x, batch=4)
    assert b1.shape == (N_GOLDEN, 8, 8, 8) and y1.shape == (N_GOLDEN, 5)
    np.testing.assert_allclose(y1, y4, rtol=1e-5, atol=1e-6)
    with pytest.raises(BadInputError):
        run_pair(OnnxrtRunner(sdir / "head.onnx"), OnnxrtRunner(sdir / "tail.onnx"), x, batch=0)


def test_measure_latency(bundle: Path) -> None:
    sdir = bundle / "splits/01-pool1"
    x = load_npz(sdir / "golden.npz")["input"]
    paths = {"head": sdir / "head.onnx", "tail": sdir / "tail.onnx", "full": bundle / "full.onnx"}
    runners = {k: OnnxrtRunner(p, threads=1) for k, p in paths.items()}
    lat = measure_latency(runners, x[:1], warmup=1, runs=3)
    assert set(lat) == {"head_ms", "tail_ms", "full_ms", "ratio"}
    assert all(v > 0 for v in lat.values())
    assert lat["ratio"] == pytest.approx((lat["head_ms"] + lat["tail_ms"]) / lat["full_ms"])
    assert not any(r.active for r in runners.values())  # activated for the timing only, then freed
    assert set(measure_latency({"full": runners["full"]}, x, warmup=0, runs=1)) == {"full_ms"}
    with pytest.raises(BadInputError, match="needs the head"):
        measure_latency({"tail": runners["tail"]}, x)


def test_compare_boundary() -> None:
    g = np.array([[0, 10, 255]], dtype=np.uint8)
    near = compare_boundary(g, np.array([[1, 9, 255]], dtype=np.uint8))
    assert near.passed and near.max_step == 1
    assert near.to_json() == {
        "compared": True,
        "dtype": "uint8",
        "shape": [1, 3],
        "max_step": 1,
        "limit": 1,
        "passed": True,
        "reason": None,
    }
    assert not compare_boundary(g, np.array([[2, 10, 255]], dtype=np.uint8)).passed
    other = compare_boundary(g, g.astype(np.float32))
    assert other.reason == "boundary dtype float32 != golden uint8"
    assert list(other.to_json()) == ["compared", "dtype", "shape", "passed", "reason"]
    f = np.array([1.0, -2.0], dtype=np.float32)
    assert compare_boundary(f, f + np.float32(1e-5)).passed
    assert not compare_boundary(f, f + np.float32(1e-3)).passed
    assert not compare_boundary(f, np.array([np.nan, -2.0], dtype=np.float32)).passed
