"""onnxruntime sessions and ONNX model files, shared by export, quantization, verification and serving.

Graph edits are :mod:`isplit_export.exporting.onnx_graph`.

Torch-free on purpose: the ``verify`` path must run in a Jetson container without PyTorch.
"""

from __future__ import annotations

import platform
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from isplit_export.contract.machine import Machine, cpu_count, cpu_isa, cpu_model
from isplit_export.exporting.onnx_graph import canonicalize, copy_fields, probing
from isplit_export.exporting.onnx_write import write_onnx

OPSET = 17
"""Pinned ONNX opset. 17 is the newest opset that every supported target parses: TensorRT 8.5
(JetPack 5.1, the last release for Xavier NX) stops at 17, TensorRT 10 and onnxruntime take it."""

ORT_LOG_SEVERITY = 4
"""onnxruntime log level of our sessions and its default logger: 4 = fatal only."""

EXACT_INT8_KEY = "session.x64quantprecision"
"""onnxruntime's session config entry ``kOrtSessionOptionsAvx2PrecisionMode`` (declared in
``include/onnxruntime/core/session/onnxruntime_session_options_config_keys.h``): "1" makes the x64
integer GEMM/conv use U8U8 products instead of U8S8 ones. Without VNNI (SSE4.1, AVX2, AVX-512 without
VNNI) the U8S8 kernels multiply-add byte pairs with ``vpmaddubsw``, which saturates at int16, so an
INT8 QDQ graph gives other numbers there than on a VNNI machine, an ARM one or its float simulation
(docs/int8.md, "One answer on every CPU"). Where they do not saturate (VNNI) the results are the same
either way (bit-identical on an AMD EPYC with AVX512-VNNI), at about 1.3x the time of the default kernels."""
EXACT_INT8_VALUE = "1"
EXACT_INT8 = True
"""Whether :func:`make_session` sets :data:`EXACT_INT8_KEY` unless told otherwise (recorded in the manifest)."""

DISABLE_PREPACKING_KEY = "session.disable_prepacking"
"""onnxruntime's session config entry ``kOrtSessionOptionsConfigDisablePrepacking``: "1" keeps the
constant weights as they are instead of copying them into kernel-specific layouts at load."""


def save_model(model: onnx.ModelProto, path: Path) -> None:
    """Canonicalize, write and check the file with the ONNX checker (full check, shape inference on).

    The model is written one tensor at a time (:func:`~.onnx_write.write_onnx`), so a large model is
    not held again while it is written; a file the checker refuses is removed.
    """
    write_onnx(canonicalize(model), path)
    try:
        onnx.checker.check_model(path, full_check=True)
    except onnx.checker.ValidationError:
        path.unlink(missing_ok=True)
        raise


EXTERNAL_BYTES = 1024
""":func:`write_external` moves the data of initializers of at least this many bytes out of the ONNX file."""


def write_external(model: onnx.ModelProto, path: Path) -> None:
    """Write ``model`` as ``path`` plus ``path.data`` (its large initializers' bytes), one tensor at a time.

    For private files onnxruntime reads (probe sessions, the quantization's inputs): serialising a large
    model whole makes protobuf hold it about twice more; this holds one tensor's bytes. ``model`` is
    left as it is; onnxruntime and ``onnx.load`` read the pair as the same model.
    """
    shell = onnx.ModelProto()
    copy_fields(model, shell, skip="graph")
    copy_fields(model.graph, shell.graph, skip="initializer")
    data_path = path.with_name(path.name + ".data")
    offset = 0
    with data_path.open("wb") as data:
        for init in model.graph.initializer:
            tensor = shell.graph.initializer.add()
            if not init.HasField("raw_data") or len(init.raw_data) < EXTERNAL_BYTES:
                tensor.CopyFrom(init)
                continue
            copy_fields(init, tensor, skip="raw_data")
            raw = init.raw_data
            data.write(raw)
            for key, value in (("location", data_path.name), ("offset", offset), ("length", len(raw))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, str(value)
            tensor.data_location = onnx.TensorProto.EXTERNAL
            offset += len(raw)
            del raw
    path.write_bytes(shell.SerializeToString())


def probe_session(model: onnx.ModelProto, names: Sequence[str]) -> ort.InferenceSession:
    """A session computing the tensors ``names`` of ``model`` (:func:`~.onnx_graph.probing`), read from
    a private file with external data (:func:`write_external`): ``model`` is not copied or serialised whole."""
    with tempfile.TemporaryDirectory(prefix="isplit-probe-") as tmp, probing(model, names) as probe:
        path = Path(tmp) / "probe.onnx"
        write_external(probe, path)
        return make_session(path)


def write_model(model: onnx.ModelProto, path: Path) -> None:
    """Canonicalize and write without the checker: for a private intermediate file that a later step reads,
    whose results are checked by :func:`save_model` (the INT8 build's inputs)."""
    write_onnx(canonicalize(model), path)


def make_session(
    model: Path | bytes,
    *,
    threads: int = 0,
    exact_int8: bool = EXACT_INT8,
    optimization: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    prepacking: bool = True,
    optimized_path: Path | None = None,
) -> ort.InferenceSession:
    """An onnxruntime CPU session; ``threads=0`` lets onnxruntime choose.

    The one session factory of the tool: every CPU session (export gates, verify, study, ``run``, the
    serving runtime) comes from here, so every INT8 graph runs in the exact integer mode
    (:data:`EXACT_INT8_KEY`). ``exact_int8=False`` and ``optimization`` exist for the measurements that
    compare kernel sets (the kernel-agreement test, ``benchmarks/bench_int8_kernels.py``):
    ``ORT_DISABLE_ALL`` leaves a QDQ graph unfused, so it runs as its float simulation.
    ``prepacking=False`` keeps onnxruntime from copying the weights of Gemm/Conv/MatMul into its own
    layouts (:data:`DISABLE_PREPACKING_KEY`): a session run a few times over a large model (the INT8
    build's probes) then holds its weights once. ``optimized_path`` makes onnxruntime write the graph
    it optimized there.
    """
    # fatal only: every failure reaches the caller as an exception that becomes our one line, so ORT's own
    # multi-line coloured log (errors of a failed load or run) would only precede it
    ort.set_default_logger_severity(ORT_LOG_SEVERITY)
    opts = ort.SessionOptions()
    opts.log_severity_level = ORT_LOG_SEVERITY
    if threads:
        opts.intra_op_num_threads = threads
    if exact_int8:
        opts.add_session_config_entry(EXACT_INT8_KEY, EXACT_INT8_VALUE)
    opts.graph_optimization_level = optimization
    if not prepacking:
        opts.add_session_config_entry(DISABLE_PREPACKING_KEY, "1")
    if optimized_path is not None:
        opts.optimized_model_filepath = str(optimized_path)
    src = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(src, sess_options=opts, providers=["CPUExecutionProvider"])


def this_machine(threads: int = 0) -> Machine:
    """This machine as :func:`make_session` runs it (the ``machine`` block of the manifest and verify.json)."""
    return Machine(
        cpu=cpu_model(),
        arch=platform.machine() or "unknown",
        isa=cpu_isa(),
        onnxruntime=ort.__version__,
        providers=tuple(ort.get_available_providers())[:16],
        threads=threads,
        cpus=cpu_count(),
        exact_int8=EXACT_INT8,
    )


def run_session(session: ort.InferenceSession, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Run all outputs of ``session`` on ``feeds``."""
    return [np.asarray(o) for o in session.run(None, dict(feeds))]
