"""The MLServer runtime that serves one tail ONNX with onnxruntime (the ``serve`` extra).

MLServer speaks the Open Inference Protocol (KServe V2) over gRPC and HTTP; this runtime is the
model behind it: it takes the ``boundary`` input exactly as the head sends it (uint8, float16 or
float32; the codec's dequantisation is inside the tail ONNX) and returns ``logits``. It checks the
request's name, datatype, shape, batch (at most ``max_batch``), byte or value count and values
(numbers in the dtype's range, finite) and refuses anything else with a 400 / ``INVALID_ARGUMENT``
naming the problem in one line (the client retries, then reports it), and it adds its own compute time to every response as the response
parameter ``compute_us`` (the protocol's per-request statistic this server can give; Triton reports
its compute time through the statistics extension instead).

Configured by :func:`isplit_export.serving.settings.model_settings`: ``parameters.uri`` is the tail ONNX,
``parameters.extra`` holds ``threads`` (onnxruntime intra-op threads), ``sha256`` (the manifest's
hash of the tail, checked again when the model loads) and ``max_batch`` (the bundle's batch limit).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest, InferenceResponse, Parameters, ResponseOutput

from isplit_export.contract import MAX_BATCH_SIZE
from isplit_export.errors import TechnicalError, first_line
from isplit_export.files import sha256_file
from isplit_export.verification.runners import OnnxrtRunner

log = logging.getLogger("isplit_export.serve")

COMPUTE_PARAMETER = "compute_us"
"""Response parameter: the tail's onnxruntime time for this request, in microseconds."""

DATATYPES = {"float32": "FP32", "float16": "FP16", "uint8": "UINT8", "int8": "INT8", "int64": "INT64"}
"""numpy dtype name -> Open Inference Protocol datatype."""

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(int64)": "int64",
}


_RAW_DTYPES = {"FP32": np.float32, "FP16": np.float16, "UINT8": np.uint8, "INT8": np.int8, "INT64": np.int64}


def keep_raw_tensors() -> None:
    """Let numeric raw tensors reach the runtime as bytes (decoded here with ``np.frombuffer``).

    MLServer 1.7 turns every raw tensor of a gRPC request into a Python list (``struct.unpack``) and
    the codec back into an array: about 0.8 ms for a 31 KiB fp16 boundary, per request, which is most
    of the transport overhead on loopback. Its ``mlserver.raw._unpack_tensor`` is replaced, for the
    numeric types only, by one that keeps the bytes; BYTES tensors and JSON requests are untouched.
    Idempotent; called when a model of this runtime loads.
    """
    import mlserver.raw as raw

    original = raw._unpack_tensor
    if getattr(original, "_keeps_raw", False):
        return

    def unpack_tensor(elem: Any, data: bytes) -> Any:
        return (
            bytes(data)
            if str(getattr(elem.datatype, "value", elem.datatype)) in _RAW_DTYPES
            else original(elem, data)
        )

    unpack_tensor._keeps_raw = True  # type: ignore[attr-defined]
    raw._unpack_tensor = unpack_tensor


class OnnxTailRuntime(MLModel):
    """One tail ONNX in an onnxruntime session, served as one model."""

    async def load(self) -> bool:
        """Open the session; refuse a tail whose bytes no longer match the manifest's hash."""
        params = self.settings.parameters
        extra: dict[str, Any] = dict(params.extra or {})
        path = Path(str(params.uri))
        expected = extra.get("sha256")
        if expected is not None and sha256_file(path) != expected:
            raise MLServerError(
                f"{path.name} changed since the bundle was verified: restore it", status_code=500
            )
        self._runner = OnnxrtRunner(path, threads=int(extra.get("threads", 0)))
        inp = self._runner.input_meta()
        self._input = inp.name
        self._dtype = np.dtype(_ORT_TYPES.get(inp.type, "float32"))
        self._dims = [d if isinstance(d, int) and d > 0 else -1 for d in inp.shape]
        self._max_batch = int(extra.get("max_batch", MAX_BATCH_SIZE))
        keep_raw_tensors()
        log.info(
            "loaded model %s: split %s, %s, boundary %s %s",
            self.name,
            extra.get("split", "?"),
            extra.get("file", path.name),
            DATATYPES.get(self._dtype.name, "?"),
            self._dims,
        )
        return True

    def _refuse(self, what: str) -> MLServerError:
        """A 400 (gRPC ``INVALID_ARGUMENT``) naming the model, the input and what is wrong; one line."""
        return MLServerError(f"model {self.name}: input {self._input} {what}"[:400], status_code=400)

    def _shape(self, shape: Any) -> list[int]:
        """The request's shape: our rank, every dimension an int >= 1, the batch at most ``max_batch``."""
        dims = list(shape) if isinstance(shape, (list, tuple)) else []
        if len(dims) != len(self._dims) or any(isinstance(d, bool) or not isinstance(d, int) for d in dims):
            raise self._refuse(f"must have shape {self._dims}, got {str(shape)[:80]}")
        if not 1 <= dims[0] <= self._max_batch:
            raise self._refuse(f"batch {dims[0]} is outside 1..{self._max_batch} (this server's batch limit)")
        if any(d != w for d, w in zip(dims, self._dims, strict=True) if w != -1) or min(dims) < 1:
            raise self._refuse(f"must have shape {self._dims}, got {dims}")
        return dims

    def _values(self, data: Any, shape: list[int], count: int) -> np.ndarray:
        """JSON data as our dtype: numbers only, exactly ``count`` of them, in range, finite."""
        try:
            x = np.asarray(data)
        except (ValueError, TypeError, OverflowError) as e:
            raise self._refuse(f"data is not a flat or nested list of numbers ({str(e)[:80]})") from None
        if x.dtype.kind not in "biuf":
            raise self._refuse(
                f"data must be numbers, got {'strings' if x.dtype.kind in 'US' else 'other values'}"
            )
        if x.size != count:
            raise self._refuse(f"has {x.size} values, shape {shape} needs {count}")
        if self._dtype.kind in "iu":
            info = np.iinfo(self._dtype)
            if x.dtype.kind == "f" or (x.size and (x.min() < info.min or x.max() > info.max)):
                raise self._refuse(f"values must be integers in {info.min}..{info.max}")
        return np.ascontiguousarray(x.astype(self._dtype).reshape(shape))

    def _check(self, payload: InferenceRequest) -> np.ndarray:
        """The request's one input as an array of our dtype and shape; anything else is a 400."""
        if len(payload.inputs) != 1 or payload.inputs[0].name != self._input:
            names = [i.name for i in payload.inputs][:4]
            raise MLServerError(
                f"model {self.name} takes one input {self._input!r}, got {names}", status_code=400
            )
        req = payload.inputs[0]
        want = DATATYPES.get(self._dtype.name)
        got = str(getattr(req.datatype, "value", req.datatype))
        if got != want:
            raise self._refuse(f"must be {want}, got {got[:20]}")
        shape = self._shape(req.shape)
        count = math.prod(shape)  # Python ints: no int64 wrap-around
        data = getattr(req.data, "root", req.data)
        if isinstance(data, (bytes, bytearray)):  # a raw tensor, kept as bytes (keep_raw_tensors)
            if len(data) != count * self._dtype.itemsize:
                raise self._refuse(
                    f"has {len(data)} bytes of {want}, shape {shape} needs {count * self._dtype.itemsize}"
                )
            x = np.frombuffer(data, dtype=self._dtype).reshape(shape)
        else:
            x = self._values(data, shape, count)
        if self._dtype.kind == "f" and not np.isfinite(x).all():
            raise self._refuse(
                f"has {int(np.size(x) - np.isfinite(x).sum())} non-finite values (NaN or infinity)"
            )
        return x

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        """Run the tail on the request's boundary; the logits go back with the compute time."""
        x = self._check(payload)
        t0 = time.perf_counter()
        try:
            logits = self._runner.infer(x)
        except TechnicalError as e:  # the model's own message, not this server's paths
            cause = e.__cause__ if e.__cause__ is not None else e
            raise MLServerError(f"model {self.name}: onnxruntime failed: {first_line(cause)}"[:400]) from None
        compute_us = round((time.perf_counter() - t0) * 1e6)
        if not np.isfinite(logits).all():  # JSON cannot carry them, and no caller can use them
            raise self._refuse("gives non-finite logits (the tail overflowed on this boundary)")
        out: ResponseOutput = NumpyCodec.encode_output(name="logits", payload=np.asarray(logits))
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            id=payload.id,
            outputs=[out],
            parameters=Parameters(**{COMPUTE_PARAMETER: compute_us}),
        )
