"""Running pairs: the onnxruntime and TensorRT pair runners and one latency timer for both.

Torch-free (numpy, onnxruntime): the export runs its fresh pairs through :func:`run_pair_onnx` and
times them with :func:`measure_latency`; ``verify`` runs the goldens through the same runner on the
device, and TensorRT engines through :func:`run_pair_trt` / :func:`time_engines`. Both timers are
:func:`median_ms`: interleaved runs, median milliseconds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnxruntime as ort

from isplit_export.errors import BadInputError, TechnicalError, first_line
from isplit_export.exporting.encoding import BoundaryEncoding, decode_array, encode_array
from isplit_export.exporting.onnx_utils import make_session, run_session
from isplit_export.numbers import rounded

LATENCY_THREADS = 1
"""intra-op threads of the latency sessions. One fixed thread: the numbers do not depend on how
many cores the machine has or what else runs on it, and head+tail vs full compares the same
compute. (Absolute latency with all cores is a deployment question, not the 5 % overhead one.)"""

TRT_LATENCY_RUNS = 50
"""Timed batch-1 runs per engine (after 5 warm-up runs) for the ``latency_ms`` of TensorRT rows."""


def _session(path: Path, threads: int = 0) -> ort.InferenceSession:
    try:
        return make_session(path, threads=threads)
    except Exception as e:  # onnxruntime raises its own pybind exception types
        raise TechnicalError(f"onnxruntime cannot load {path}: {first_line(e)}") from e


def _run(session: ort.InferenceSession, feeds: Mapping[str, np.ndarray], path: Path) -> np.ndarray:
    try:
        return run_session(session, feeds)[0]
    except Exception as e:
        raise TechnicalError(f"onnxruntime failed running {path}: {first_line(e)}") from e


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


def median_ms(calls: Mapping[str, Callable[[], Any]], *, warmup: int, runs: int) -> dict[str, float]:
    """Median wall-clock ms of each call, after ``warmup`` untimed rounds; the calls are interleaved
    (a, b, c, a, b, c, ...) so that machine noise (clock boost, another process) hits every one alike."""
    for _ in range(warmup):
        for call in calls.values():
            call()
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(runs):
        for k, call in calls.items():
            t0 = time.perf_counter()
            call()
            times[k].append((time.perf_counter() - t0) * 1000.0)
    return {k: float(statistics.median(v)) for k, v in times.items()}


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
    tail_int8, head, ...) by :func:`median_ms`, and each session uses ``threads`` intra-op threads
    (see :data:`LATENCY_THREADS`). Returns ``<key>_ms`` for the models given and, when head, tail and
    full are, ``ratio`` = (head + tail) / full (the split's overhead).
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
    calls = {k: (lambda s=sessions[k], f=feeds[k]: s.run(None, f)) for k in order}
    out = {f"{k}_ms": v for k, v in median_ms(calls, warmup=warmup, runs=runs).items()}
    if {"head", "tail", "full"} <= set(order) and out["full_ms"] > 0:
        out["ratio"] = (out["head_ms"] + out["tail_ms"]) / out["full_ms"]
    return out


def _only_output(outputs: Mapping[str, np.ndarray], engine: Path) -> np.ndarray:
    if len(outputs) != 1:
        raise TechnicalError(f"engine {engine} has {len(outputs)} outputs, expected 1: rebuild the engines")
    return np.asarray(next(iter(outputs.values())))


def run_pair_trt(
    trt: ModuleType,
    head: Path,
    tail: Path,
    x: np.ndarray,
    enc: BoundaryEncoding,
    input_name: str,
    *,
    trust: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Golden inputs through the head then the tail engine, one image at a time.

    One image at a time because engines may have a static batch-1 profile (DLA needs static shapes).
    TensorRT's parser cannot take the uint8 QuantizeLinear/DequantizeLinear codec, so engines may be
    built without it: when the head engine emits float instead of the encoded dtype, the codec runs
    here in numpy (:func:`encode_array` / :func:`decode_array`, bit-identical to onnxruntime's) and
    the tail engine is fed the decoded float32 (int8) or the fp16 tensor (:class:`~isplit_export.targets.trt_backend.Engine`
    casts floats to the engine's type). When the head emits the encoded dtype, the tail takes it as is.
    The head is fed by the manifest's input name, the tail by the bundle's ``boundary`` name.
    ``trt`` is :mod:`isplit_export.targets.trt_backend`, passed in so that this module stays torch-
    and TensorRT-free at import time. ``trust``: deserialise engines not built here (``--trust-engines``).
    """
    boundaries: list[np.ndarray] = []
    logits: list[np.ndarray] = []
    with trt.Engine(head, trust=trust) as head_engine, trt.Engine(tail, trust=trust) as tail_engine:
        for i in range(x.shape[0]):
            b = _only_output(head_engine({input_name: np.ascontiguousarray(x[i : i + 1])}), head)
            if b.dtype == np.dtype(enc.dtype):  # the engines carry the codec nodes themselves
                wire = feed = b
            else:  # codec stripped at the cut: encode / decode here, exactly as onnxruntime would
                wire = encode_array(b, enc)
                feed = decode_array(wire, enc) if enc.name == "int8" else wire
            logits.append(_only_output(tail_engine({"boundary": feed}), tail))
            boundaries.append(wire)
    return np.concatenate(boundaries), np.concatenate(logits)


def time_engines(
    trt: ModuleType,
    head: Path,
    tail: Path,
    x: np.ndarray,
    input_name: str,
    runs: int = TRT_LATENCY_RUNS,
    *,
    trust: bool = False,
) -> dict[str, float]:
    """Median ms of the head engine on one golden image and of the tail engine on its output,
    interleaved by :func:`median_ms`, to 4 decimals (each engine loaded once: a call is the host-device
    copies and the inference); ``isplit-export plan`` uses these in place of the cost model's estimates."""
    feed = {input_name: np.ascontiguousarray(x[:1])}
    with trt.Engine(head, trust=trust) as head_engine, trt.Engine(tail, trust=trust) as tail_engine:
        boundary = {"boundary": _only_output(head_engine(feed), head)}
        calls = {"head_ms": lambda: head_engine(feed), "tail_ms": lambda: tail_engine(boundary)}
        ms = median_ms(calls, warmup=5, runs=runs)
    return {k: float(rounded(v, 4, decimals=True) or 0.0) for k, v in ms.items()}
