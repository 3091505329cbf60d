"""Re-check a bundle anywhere: re-hash its files, re-run its goldens, apply the gates.

Torch-free on purpose (numpy, onnx, onnxruntime): ``isplit-export verify`` runs in the Jetson
container from ``Dockerfile.jetson``, which has no PyTorch. TensorRT is imported lazily, only for
``backend="tensorrt"`` (through :mod:`isplit_export.targets.trt_backend`).

What is checked, in order:

1. ``manifest.json`` is readable and has schema ``isplit.bundle/1`` (else :class:`BadInputError`);
2. every file listed in ``manifest["files"]`` and ``report.md`` (against ``run.report_sha256``)
   hashes as recorded (else :class:`GateFailedError` naming the file). Files *not* listed are
   ignored: ``verify.json``, which verify itself writes, is an output, not part of the bundle;
3. for each split, the golden ``input`` goes through head then tail; the transmitted boundary is
   compared with the golden ``boundary`` and the logits with the golden ``logits`` (from the full
   PyTorch model) under :func:`isplit_export.verification.gates.gate_for`. A failed gate does not raise: it
   gives ``outcome="gate-failed"`` (the CLI maps it to exit 1).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnxruntime as ort

from isplit_export import __version__, contract
from isplit_export.errors import BadInputError, NotRunError, TechnicalError
from isplit_export.exporting.encoding import ENCODINGS, BoundaryEncoding, decode_array, encode_array
from isplit_export.exporting.onnx_utils import make_session, run_session
from isplit_export.files import json_dumps, write_text_atomic
from isplit_export.verification.gates import BACKENDS, GATES, PRECISIONS, Gate, gate_for
from isplit_export.verification.metrics import accuracy, compare_logits

SCHEMA = contract.SCHEMA
VERIFY_SCHEMA = "isplit.verify/1"
VERIFY_FILE = contract.VERIFY_FILE
"""Written into the bundle by :func:`verify_bundle`; not in the manifest, so never hashed."""


LATENCY_THREADS = 1
"""intra-op threads of the latency sessions. One fixed thread: the numbers do not depend on how
many cores the machine has or what else runs on it, and head+tail vs full compares the same
compute. (Absolute latency with all cores is a deployment question, not the 5 % overhead one.)"""

BOUNDARY_FLOAT_TOLERANCE = {"float32": 1e-4, "float16": 2e-3}
"""Max ``|got - golden| / max|golden|`` for a float boundary on onnxruntime. The golden boundary
comes from onnxruntime too, so only the CPU (x86 vs ARM kernels) differs: ~1e-6 for float32; for
float16 one rounding may land on the neighbouring value, <= 2^-10 relative to the largest element."""

BOUNDARY_MAX_STEP = 1
"""Max ``|got - golden|`` in quantization steps for a uint8 boundary: a float value that sits on a
rounding edge may round either way on another CPU, nothing more."""


# --------------------------------------------------------------------------------------------------
# running pairs


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _session(path: Path, threads: int = 0) -> ort.InferenceSession:
    try:
        return make_session(path, threads=threads)
    except Exception as e:  # onnxruntime raises its own pybind exception types
        raise TechnicalError(f"onnxruntime cannot load {path}: {_first_line(e)}") from e


def _run(session: ort.InferenceSession, feeds: Mapping[str, np.ndarray], path: Path) -> np.ndarray:
    try:
        return run_session(session, feeds)[0]
    except Exception as e:
        raise TechnicalError(f"onnxruntime failed running {path}: {_first_line(e)}") from e


def run_pair_onnx(
    head: Path, tail: Path, inputs: np.ndarray, *, batch: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``inputs`` through ``head`` then ``tail`` in onnxruntime, ``batch`` images at a time.

    Returns ``(boundary, logits)``: the boundary exactly as the head emits it, i.e. as transmitted
    (float32, float16 or uint8 depending on the encoding baked into the pair), and the tail's logits.
    Feeds go to each model's first input, so the pair's tensor names are not assumed.
    """
    if batch < 1:
        raise BadInputError(f"batch {batch}: pass a positive batch size")
    x = np.asarray(inputs)
    if x.ndim == 0 or x.shape[0] == 0:
        raise BadInputError("no input images to run through the pair")
    hs, ts = _session(head), _session(tail)
    h_in, t_in = hs.get_inputs()[0].name, ts.get_inputs()[0].name
    boundaries: list[np.ndarray] = []
    logits: list[np.ndarray] = []
    for i in range(0, x.shape[0], batch):
        b = _run(hs, {h_in: np.ascontiguousarray(x[i : i + batch])}, head)
        logits.append(_run(ts, {t_in: b}, tail))
        boundaries.append(b)
    return np.concatenate(boundaries), np.concatenate(logits)


def measure_latency(
    model_paths: Mapping[str, Path],
    sample: np.ndarray,
    *,
    warmup: int = 5,
    runs: int = 30,
    threads: int = LATENCY_THREADS,
) -> dict[str, float]:
    """Median onnxruntime latency in ms at batch 1 of ``head``, ``tail`` and ``full`` (and INT8 twins).

    ``model_paths`` has any of the keys ``head``, ``tail`` (needs ``head``), ``full``, ``head_int8``
    and ``tail_int8`` (needs ``head_int8``). Heads and ``full`` are fed ``sample[:1]``; a tail is fed
    its own head's output, as on the real chain. The runs are interleaved (head, tail, full, head_int8,
    tail_int8, head, ...) so that machine noise (clock boost, another process) hits every model alike,
    and each session uses ``threads`` intra-op threads (see :data:`LATENCY_THREADS`). Returns
    ``<key>_ms`` for the models given and, when head, tail and full are, ``ratio`` = (head + tail) /
    full (the split's overhead).
    """
    allowed = ("head", "tail", "full", "head_int8", "tail_int8")
    unknown = sorted(set(model_paths) - set(allowed))
    if unknown:
        raise BadInputError(f"measure_latency: unknown model key(s) {unknown}: use {', '.join(allowed)}")
    for tail_key, head_key in (("tail", "head"), ("tail_int8", "head_int8")):
        if tail_key in model_paths and head_key not in model_paths:
            raise BadInputError(
                f"measure_latency: timing the {tail_key} needs the {head_key} (its input is the head's output)"
            )
    if runs < 1 or warmup < 0:
        raise BadInputError(f"measure_latency: runs {runs} / warmup {warmup}: pass runs >= 1, warmup >= 0")
    x = np.ascontiguousarray(np.asarray(sample)[:1])
    order = [k for k in allowed if k in model_paths]
    sessions = {k: _session(Path(model_paths[k]), threads) for k in order}
    feeds: dict[str, dict[str, np.ndarray]] = {}
    for k in order:
        sess = sessions[k]
        head = k.replace("tail", "head")
        src = x if head == k else _run(sessions[head], feeds[head], Path(model_paths[head]))
        feeds[k] = {sess.get_inputs()[0].name: src}
    for _ in range(warmup):
        for k in order:
            sessions[k].run(None, feeds[k])
    times: dict[str, list[float]] = {k: [] for k in order}
    for _ in range(runs):
        for k in order:
            t0 = time.perf_counter()
            sessions[k].run(None, feeds[k])
            times[k].append((time.perf_counter() - t0) * 1000.0)
    out = {f"{k}_ms": float(statistics.median(v)) for k, v in times.items()}
    if {"head", "tail", "full"} <= set(order) and out["full_ms"] > 0:
        out["ratio"] = (out["head_ms"] + out["tail_ms"]) / out["full_ms"]
    return out


# --------------------------------------------------------------------------------------------------
# results


def _jsonable(v: Any) -> Any:
    """Non-finite floats become None (JSON has no NaN/inf); containers are converted recursively."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


@dataclass
class SplitVerification:
    """One verified pair of one split: the exported pair, its INT8 QDQ twin, or a TensorRT engine pair.

    ``check`` names the pair (``onnx``, ``onnx-int8-qdq``, ``tensorrt-fp16``...); ``boundary`` is the
    comparison of the transmitted boundary with the golden one; ``task`` is accuracy against the
    golden labels (or top-1 agreement with the full model when no label is known).
    """

    split: int
    dir: str
    node: str
    check: str
    backend: str
    precision: str
    encoding: str
    gate: Gate
    metrics: dict[str, float]
    boundary: dict[str, Any]
    task: dict[str, Any]
    passed: bool
    reasons: list[str] = field(default_factory=list)
    latency_ms: dict[str, float] | None = None
    """Median batch-1 latency of the pair's models (``head_ms``, ``tail_ms``): TensorRT engines only."""

    def to_json(self) -> dict[str, Any]:
        """JSON form as written to ``verify.json``."""
        latency = {} if self.latency_ms is None else {"latency_ms": dict(self.latency_ms)}
        return _jsonable(
            {
                "split": self.split,
                "dir": self.dir,
                "node": self.node,
                "check": self.check,
                "backend": self.backend,
                "precision": self.precision,
                "encoding": self.encoding,
                "metrics": dict(self.metrics),
                "boundary": dict(self.boundary),
                "task": dict(self.task),
                "gate": {**self.gate.to_json(), "passed": self.passed, "failures": list(self.reasons)},
                "passed": self.passed,
                **latency,
            }
        )


@dataclass
class BundleVerification:
    """The outcome of :func:`verify_bundle`.

    ``outcome`` is ``passed`` (every row passed), ``gate-failed`` (a gate or a boundary check failed)
    or ``not-run`` (nothing could run here; :func:`verify_bundle` raises :class:`NotRunError` instead,
    :meth:`not_run` exists for callers that record that outcome).
    """

    bundle: Path
    backend: str
    outcome: str
    rows: list[SplitVerification] = field(default_factory=list)
    manifest_sha256: str | None = None
    note: str | None = None
    pinned: bool = False
    """True when ``--expect-sha256`` matched: the manifest is the one CI published."""

    @property
    def passed(self) -> bool:
        return self.outcome == "passed"

    @classmethod
    def not_run(cls, bundle: Path, backend: str, reason: str) -> BundleVerification:
        """A result for a check that could not run here (e.g. no TensorRT)."""
        return cls(bundle=Path(bundle), backend=backend, outcome="not-run", note=reason)

    def to_json(self) -> dict[str, Any]:
        """JSON form (``verify.json``): relocatable, so no absolute path; tied to the manifest by hash."""
        return _jsonable(
            {
                "schema": VERIFY_SCHEMA,
                "tool": {"name": "isplit-export", "version": __version__},
                "manifest_sha256": self.manifest_sha256,
                "manifest_pinned": self.pinned,
                "backend": self.backend,
                "outcome": self.outcome,
                "passed": self.passed,
                "note": self.note,
                "rows": [r.to_json() for r in self.rows],
            }
        )


# --------------------------------------------------------------------------------------------------
# manifest and files


def load_manifest(bundle: Path) -> dict[str, Any]:
    """Read and validate ``bundle/manifest.json`` (:func:`isplit_export.contract.load_manifest`)."""
    return contract.load_manifest(bundle)


def _bundle_path(bundle: Path, rel: Any) -> Path:
    """``bundle / rel`` under the containment rule (:func:`isplit_export.contract.bundle_path`)."""
    return contract.bundle_path(bundle, rel)


def check_files(bundle: Path, manifest: Mapping[str, Any]) -> None:
    """Re-hash every listed file and ``report.md`` (:func:`isplit_export.contract.check_files`)."""
    contract.check_files(bundle, manifest)


def _select(manifest: Mapping[str, Any], split: int | None) -> list[tuple[int, dict[str, Any]]]:
    return contract.select_splits(manifest, split)


def _split_file(bundle: Path, manifest: Mapping[str, Any], entry: Mapping[str, Any], key: str) -> Path:
    return contract.split_file(manifest, bundle, entry, key)


def _encoding(manifest: Mapping[str, Any], entry: Mapping[str, Any]) -> BoundaryEncoding:
    block = entry.get("boundary")
    data: dict[str, Any] = dict(block) if isinstance(block, Mapping) else {}
    data.setdefault("encoding", manifest.get("boundary_encoding"))
    if data["encoding"] not in ENCODINGS:
        raise BadInputError(
            f"manifest.json split {entry['dir']}: unknown boundary encoding {data['encoding']!r}: rebuild the bundle"
        )
    return BoundaryEncoding.from_json({k: data.get(k) for k in ("encoding", "dtype", "scale", "zero_point")
                                       if data.get(k) is not None})  # fmt: skip


def _load_golden(path: Path, rel: str) -> dict[str, np.ndarray]:
    """A split's golden arrays, size-bounded (:func:`isplit_export.contract.load_npz_bounded`)."""
    golden = contract.load_npz_bounded(path, rel)
    missing = [k for k in ("input", "boundary", "logits") if k not in golden]
    if missing:
        raise BadInputError(f"{rel} lacks {', '.join(missing)}: rebuild the bundle")
    n = golden["input"].shape[0] if golden["input"].ndim else 0
    if n == 0:
        raise BadInputError(f"{rel} holds no golden input: rebuild the bundle")
    golden.setdefault("labels", np.full(n, -1, dtype=np.int64))
    return golden


# --------------------------------------------------------------------------------------------------
# comparisons


def compare_boundary(golden: np.ndarray, got: np.ndarray, *, rel_limit: float | None = None,
                     step_limit: int = BOUNDARY_MAX_STEP) -> dict[str, Any]:  # fmt: skip
    """Compare a transmitted boundary with the golden one.

    Integer (uint8) boundaries: ``max_step`` = max ``|got - golden|`` must be <= ``step_limit``.
    Float boundaries: ``max_abs_rel`` = max ``|got - golden| / max|golden|`` must be <= ``rel_limit``
    (default :data:`BOUNDARY_FLOAT_TOLERANCE` for the dtype). Dtype or shape mismatches fail.
    """
    g, a = np.asarray(golden), np.asarray(got)
    res: dict[str, Any] = {"compared": True, "dtype": str(a.dtype), "shape": list(a.shape)}
    if a.dtype != g.dtype:
        return {**res, "passed": False, "reason": f"boundary dtype {a.dtype} != golden {g.dtype}"}
    if a.shape != g.shape:
        return {**res, "passed": False, "reason": f"boundary shape {list(a.shape)} != golden {list(g.shape)}"}
    if np.issubdtype(g.dtype, np.integer):
        step = int(np.max(np.abs(a.astype(np.int64) - g.astype(np.int64)))) if g.size else 0
        ok = step <= step_limit
        reason = (
            None if ok else f"boundary max_step {step} not <= {step_limit} quantization step(s) from golden"
        )
        return {**res, "max_step": step, "limit": step_limit, "passed": ok, "reason": reason}
    limit = rel_limit if rel_limit is not None else BOUNDARY_FLOAT_TOLERANCE.get(str(g.dtype), 1e-4)
    g64, a64 = g.astype(np.float64), a.astype(np.float64)
    scale = float(np.max(np.abs(g64))) if g.size else 0.0
    err = float(np.max(np.abs(a64 - g64))) if g.size else 0.0
    rel = err / max(scale, 1e-30)
    ok = rel <= limit  # False for nan
    reason = None if ok else f"boundary max_abs_rel {rel:.6g} not <= {limit:g} from golden"
    return {**res, "max_abs_rel": rel, "limit": limit, "passed": ok, "reason": reason}


def _task(
    ref: np.ndarray, got: np.ndarray, labels: np.ndarray, metrics: Mapping[str, float]
) -> dict[str, Any]:
    """Accuracy on the known golden labels, else top-1 agreement with the full model."""
    acc = accuracy(got, labels) if got.shape == ref.shape else None
    full = accuracy(ref, labels)
    if acc is not None and full is not None:
        return {"metric": "accuracy", "value": acc, "full_model": full, "drop": full - acc}
    agree = float(metrics.get("top1_agreement", float("nan")))
    return {"metric": "agreement", "value": agree, "full_model": 1.0, "drop": 1.0 - agree}


def _row(
    pos: int,
    entry: Mapping[str, Any],
    *,
    check: str,
    backend: str,
    precision: str,
    encoding: str,
    gate: Gate,
    golden: Mapping[str, np.ndarray],
    logits: np.ndarray,
    boundary: dict[str, Any],
    reference: np.ndarray | None = None,
) -> SplitVerification:
    """One verified pair; ``reference`` (default: the full model's golden logits) is what the gate
    compares against, the task metric always compares with the full model."""
    reasons: list[str] = []
    if boundary.get("compared") and not boundary["passed"]:
        reasons.append(str(boundary["reason"]))
    try:
        metrics = compare_logits(golden["logits"] if reference is None else reference, logits)
        reasons.extend(gate.check(metrics)[1])
    except ValueError as e:  # e.g. the tail's logits have another shape than the golden ones
        metrics = {}
        reasons.append(str(e))
    return SplitVerification(
        split=pos,
        dir=str(entry["dir"]),
        node=str(entry.get("node", "")),
        check=check,
        backend=backend,
        precision=precision,
        encoding=encoding,
        gate=gate,
        metrics=metrics,
        boundary=boundary,
        task=_task(golden["logits"], logits, golden["labels"], metrics),
        passed=not reasons,
        reasons=reasons,
    )


# --------------------------------------------------------------------------------------------------
# backends


def _verify_onnx(
    bundle: Path, manifest: Mapping[str, Any], pos: int, entry: Mapping[str, Any]
) -> list[SplitVerification]:
    """The exported pair (gate of the boundary encoding) and, if listed, the INT8 QDQ pair."""
    enc = _encoding(manifest, entry)
    golden_rel = entry["files"].get("golden")
    golden = _load_golden(_split_file(bundle, manifest, entry, "golden"), str(golden_rel))
    head, tail = _split_file(bundle, manifest, entry, "head"), _split_file(bundle, manifest, entry, "tail")
    boundary, logits = run_pair_onnx(head, tail, golden["input"])
    rows = [
        _row(
            pos,
            entry,
            check="onnx",
            backend="onnxruntime",
            precision="fp32",
            encoding=enc.name,
            gate=gate_for(enc.name),
            golden=golden,
            logits=logits,
            boundary=compare_boundary(golden["boundary"], boundary),
        )
    ]
    has_q = ("head_int8" in entry["files"], "tail_int8" in entry["files"])
    if any(has_q) and not all(has_q):
        raise BadInputError(
            f"manifest.json split {entry['dir']} lists only one of head_int8/tail_int8: rebuild the bundle"
        )
    if all(has_q):
        qh, qt = (
            _split_file(bundle, manifest, entry, "head_int8"),
            _split_file(bundle, manifest, entry, "tail_int8"),
        )
        _, q_logits = run_pair_onnx(qh, qt, golden["input"])
        note = "not compared: the QDQ head quantizes inside, its boundary differs from the golden by design"
        replay = "logits_int8" in golden
        rows.append(
            _row(
                pos,
                entry,
                check="onnx-int8-qdq",
                backend="onnxruntime",
                precision="int8",
                encoding=enc.name,
                gate=gate_for(enc.name, "int8") if replay else GATES["int8-qdq"],
                golden=golden,
                logits=q_logits,
                boundary={"compared": False, "note": note},
                reference=golden.get("logits_int8"),
            )
        )
    return rows


def _engines(split_dir: Path) -> list[str]:
    """Precisions with both ``engines/head.<p>.engine`` and ``engines/tail.<p>.engine`` present."""
    def present(name: str) -> bool:  # inside the split, reached through no symlink (contract.bundle_path)
        return contract.bundle_path(split_dir, f"{contract.ENGINES_DIR}/{name}", "engines").is_file()

    return [p for p in PRECISIONS if present(f"head.{p}.engine") and present(f"tail.{p}.engine")]


def _only_output(outputs: Mapping[str, np.ndarray], engine: Path) -> np.ndarray:
    if len(outputs) != 1:
        raise TechnicalError(f"engine {engine} has {len(outputs)} outputs, expected 1: rebuild the engines")
    return np.asarray(next(iter(outputs.values())))


def _run_pair_trt(
    trt: ModuleType, head: Path, tail: Path, x: np.ndarray, enc: BoundaryEncoding, input_name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Golden inputs through the head then the tail engine, one image at a time.

    One image at a time because engines may have a static batch-1 profile (DLA needs static shapes).
    TensorRT's parser cannot take the uint8 QuantizeLinear/DequantizeLinear codec, so engines may be
    built without it: when the head engine emits float instead of the encoded dtype, the codec runs
    here in numpy (:func:`encode_array` / :func:`decode_array`, bit-identical to onnxruntime's) and
    the tail engine is fed the decoded float32 (int8) or the fp16 tensor (``run_engine`` casts
    floats to the engine's type). When the head emits the encoded dtype, the tail takes it as is.
    The head is fed by the manifest's input name, the tail by the bundle's ``boundary`` name.
    """
    boundaries: list[np.ndarray] = []
    logits: list[np.ndarray] = []
    for i in range(x.shape[0]):
        b = _only_output(trt.run_engine(head, {input_name: np.ascontiguousarray(x[i : i + 1])}), head)
        if b.dtype == np.dtype(enc.dtype):  # the engines carry the codec nodes themselves
            wire = feed = b
        else:  # codec stripped at the cut: encode / decode here, exactly as onnxruntime would
            wire = encode_array(b, enc)
            feed = decode_array(wire, enc) if enc.name == "int8" else wire
        logits.append(_only_output(trt.run_engine(tail, {"boundary": feed}), tail))
        boundaries.append(wire)
    return np.concatenate(boundaries), np.concatenate(logits)


TRT_LATENCY_RUNS = 50
"""Timed batch-1 runs per engine (after 5 warm-up runs) for the ``latency_ms`` of TensorRT rows."""


def _time_engines(
    trt: ModuleType, head: Path, tail: Path, x: np.ndarray, input_name: str, runs: int = TRT_LATENCY_RUNS
) -> dict[str, float]:
    """Median ms of the head engine on one golden image and of the tail engine on its output,
    interleaved; ``isplit-export plan`` uses these in place of the cost model's estimates."""
    feed = {input_name: np.ascontiguousarray(x[:1])}
    boundary = {"boundary": _only_output(trt.run_engine(head, feed), head)}
    times: dict[str, list[float]] = {"head_ms": [], "tail_ms": []}
    for i in range(runs + 5):
        for key, engine, inputs in (("head_ms", head, feed), ("tail_ms", tail, boundary)):
            t = time.perf_counter()
            trt.run_engine(engine, inputs)
            if i >= 5:
                times[key].append((time.perf_counter() - t) * 1e3)
    return {k: round(statistics.median(v), 4) for k, v in times.items()}


def _verify_tensorrt(
    bundle: Path, manifest: Mapping[str, Any], selected: list[tuple[int, dict[str, Any]]]
) -> list[SplitVerification]:
    """Every engine pair present in the selected splits, after checking that each split has one."""
    from isplit_export.targets import trt_backend  # lazy: imports tensorrt

    if not trt_backend.tensorrt_available():
        raise NotRunError(
            "TensorRT is not available on this machine: run verify --backend tensorrt on the device "
            "(Dockerfile.jetson), or use --backend onnxruntime"
        )
    plan: list[tuple[int, dict[str, Any], list[str]]] = []
    for pos, entry in selected:
        precisions = _engines(_bundle_path(bundle, entry["dir"]))
        if not precisions:
            raise NotRunError(
                f"no engines in {entry['dir']}/engines: run build_engines.sh or isplit-export build-engines first"
            )
        plan.append((pos, entry, precisions))
    for _, entry, _ in plan:
        trt_backend.check_engine_record(_bundle_path(bundle, entry["dir"]))

    input_name = str(manifest.get("input", {}).get("name", "input"))
    rows: list[SplitVerification] = []
    for pos, entry, precisions in plan:
        enc = _encoding(manifest, entry)
        golden = _load_golden(_split_file(bundle, manifest, entry, "golden"), str(entry["files"]["golden"]))
        edir = _bundle_path(bundle, entry["dir"]) / "engines"
        for p in precisions:
            gate = gate_for(enc.name, p, "tensorrt")
            boundary, logits = _run_pair_trt(
                trt_backend,
                edir / f"head.{p}.engine",
                edir / f"tail.{p}.engine",
                golden["input"],
                enc,
                input_name,
            )
            # TF32 / fp16 / int8 kernels move the boundary too: hold it to the gate's relative bound.
            rel = max(BOUNDARY_FLOAT_TOLERANCE.get(enc.dtype, 1e-4), gate.max_abs_rel)
            steps = max(BOUNDARY_MAX_STEP, math.ceil(gate.max_abs_rel * 255))
            bcheck = compare_boundary(golden["boundary"], boundary, rel_limit=rel, step_limit=steps)
            row = _row(
                    pos,
                    entry,
                    check=f"tensorrt-{p}",
                    backend="tensorrt",
                    precision=p,
                    encoding=enc.name,
                    gate=gate,
                    golden=golden,
                    logits=logits,
                    boundary=bcheck,
                    # int8 engines come from the QDQ pair: compare with its golden outputs when stored
                    reference=golden.get("logits_int8") if p == "int8" else None,
                )
            head_e, tail_e = edir / f"head.{p}.engine", edir / f"tail.{p}.engine"
            row.latency_ms = _time_engines(trt_backend, head_e, tail_e, golden["input"], input_name)
            rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------------
# entry point


def verify_bundle(
    bundle: Path | str, *, backend: str = "onnxruntime", split: int | None = None, write: bool = True,
    expect_sha256: str | None = None, report: Path | None = None,
) -> BundleVerification:  # fmt: skip
    """Re-hash ``bundle`` and re-run its goldens on ``backend``; see the module docstring.

    ``split`` restricts the golden runs to split N (1-based, the ``NN`` of ``splits/NN-*``); the
    hashes are always checked for the whole bundle. ``expect_sha256`` pins the manifest to the value CI
    published (:func:`isplit_export.contract.check_expected_sha256`). With ``write`` the result goes to
    ``report`` or else ``bundle/verify.json`` (an output of verify, not part of the hashed bundle).

    Raises:
        BadInputError: unknown backend, unreadable/invalid manifest, split out of range.
        GateFailedError: a bundle file is missing or modified, or the manifest is not the expected one.
        NotRunError: ``tensorrt`` without TensorRT here, or engines not built yet.
        TechnicalError: onnxruntime / TensorRT failed to load or run a model.
    """
    bundle = Path(bundle)
    if backend not in BACKENDS:
        raise BadInputError(f"unknown backend {backend!r}: choose {' or '.join(BACKENDS)}")
    if expect_sha256 is not None:
        expect_sha256 = contract.check_sha256_text(expect_sha256, "--expect-sha256")
    m = contract.read_manifest(bundle)
    contract.check_expected_sha256(m, expect_sha256)
    manifest = m.data
    selected = _select(manifest, split)
    check_files(bundle, manifest)
    if backend == "onnxruntime":
        rows = [row for pos, entry in selected for row in _verify_onnx(bundle, manifest, pos, entry)]
    else:
        rows = _verify_tensorrt(bundle, manifest, selected)
    result = BundleVerification(
        bundle=bundle,
        backend=backend,
        outcome="passed" if rows and all(r.passed for r in rows) else "gate-failed",
        rows=rows,
        manifest_sha256=m.sha256,
        pinned=expect_sha256 is not None,
    )
    if write:
        write_verification(result, report)
    return result


def write_verification(result: BundleVerification, report: Path | None = None) -> Path:
    """Write ``verify.json`` to ``report`` (default: into the bundle); one line when it cannot."""
    path = Path(report) if report is not None else result.bundle / VERIFY_FILE
    try:
        write_text_atomic(path, json_dumps(result.to_json()))
    except OSError as e:
        raise BadInputError(
            f"cannot write {path} ({_first_line(e)}): the results are above; pass --report PATH or --no-write "
            "(e.g. for a read-only bundle)"
        ) from e
    return path


PASSED_MEANS = (
    "'passed' proves self-consistency: every file matches manifest.json and the goldens reproduce; it does not "
    "prove where the bundle came from (an attacker can rebuild goldens and re-hash)"
)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.3g}" if abs(v) < 1e-2 and v != 0 else f"{v:.4f}"
    return str(v)


def format_table(result: BundleVerification) -> str:
    """A plain-text table, one line per verified pair, then the reasons of each failure and the outcome."""
    header = ["split", "node", "check", "precision/encoding", "max_abs_rel", "cosine", "top1", "gate"]
    lines = [header]
    for r in result.rows:
        lines.append([
            f"{r.split:02d}", r.node, r.check, f"{r.precision}/{r.encoding}",
            _fmt(r.metrics.get("max_abs_rel")), _fmt(r.metrics.get("cosine")), _fmt(r.metrics.get("top1_agreement")),
            f"{'pass' if r.passed else 'FAIL'} ({r.gate.name})",
        ])  # fmt: skip
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    text = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in lines]
    for r in result.rows:
        text.extend(f"{r.dir} [{r.check}]: {reason}" for reason in r.reasons)
    suffix = f": {result.note}" if result.note else ""
    if result.manifest_sha256 is not None:
        text.append(PASSED_MEANS + ".")
        if result.pinned:
            text.append(f"manifest sha256 {result.manifest_sha256} matches --expect-sha256: this is the published bundle")
        else:
            text.append(f"manifest sha256 {result.manifest_sha256}: pin it with --expect-sha256 to prove provenance")
    text.append(f"{result.backend}: {result.outcome}{suffix}")
    return "\n".join(text)
