"""Small ONNX / onnxruntime helpers shared by export, encoding, quantization and verification.

Torch-free on purpose: the ``verify`` path must run in a Jetson container without PyTorch.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

OPSET = 17
"""Pinned ONNX opset. 17 is the newest opset that every supported target parses: TensorRT 8.5
(JetPack 5.1, the last release for Xavier NX) stops at 17, TensorRT 10 and onnxruntime take it."""

PRODUCER = "isplit-export"
ORT_LOG_SEVERITY = 4
"""onnxruntime log level of our sessions and its default logger: 4 = fatal only."""


def canonicalize(model: onnx.ModelProto) -> onnx.ModelProto:
    """Strip run-dependent text (doc strings, producer version) so equal graphs give equal bytes."""
    model.producer_name = PRODUCER
    model.producer_version = ""
    model.doc_string = ""
    model.graph.doc_string = ""
    for node in model.graph.node:
        node.doc_string = ""
    for vi in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info):
        vi.doc_string = ""
    return model


def save_model(model: onnx.ModelProto, path: Path) -> None:
    """Canonicalize, check with the ONNX checker (full check, shape inference on) and write."""
    model = canonicalize(model)
    onnx.checker.check_model(model, full_check=True)
    path.write_bytes(model.SerializeToString(deterministic=True))


def make_session(model: Path | bytes, *, threads: int = 0) -> ort.InferenceSession:
    """An onnxruntime CPU session; ``threads=0`` lets onnxruntime choose."""
    # fatal only: every failure reaches the caller as an exception that becomes our one line, so ORT's own
    # multi-line coloured log (errors of a failed load or run) would only precede it
    ort.set_default_logger_severity(ORT_LOG_SEVERITY)
    opts = ort.SessionOptions()
    opts.log_severity_level = ORT_LOG_SEVERITY
    if threads:
        opts.intra_op_num_threads = threads
    src = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(src, sess_options=opts, providers=["CPUExecutionProvider"])


def run_session(session: ort.InferenceSession, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Run all outputs of ``session`` on ``feeds``."""
    return [np.asarray(o) for o in session.run(None, dict(feeds))]
