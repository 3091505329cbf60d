"""The MLServer runtime that serves one tail ONNX with onnxruntime (the ``serve`` extra).

MLServer speaks the Open Inference Protocol (KServe V2) over gRPC and HTTP; this runtime is the
model behind it: it takes the ``boundary`` input exactly as the head sends it (uint8, float16 or
float32; the codec's dequantisation is inside the tail ONNX) and returns ``logits``. It checks the
request's name, datatype and shape against the tail and refuses a mismatch with a 400 (the client
retries, then reports it), and it adds its own compute time to every response as the response
parameter ``compute_us`` (the protocol's per-request statistic this server can give; Triton reports
its compute time through the statistics extension instead).

Configured by :func:`isplit_export.serving.serve.model_settings`: ``parameters.uri`` is the tail ONNX,
``parameters.extra`` holds ``threads`` (onnxruntime intra-op threads) and ``sha256`` (the manifest's
hash of the tail, checked again when the model loads).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest, InferenceResponse, Parameters, ResponseOutput

from isplit_export.exporting.onnx_utils import make_session
from isplit_export.files import sha256_file

log = logging.getLogger("isplit_export.serve")

COMPUTE_PARAMETER = "compute_us"
"""Response parameter: the tail's onnxruntime time for this request, in microseconds."""

DATATYPES = {"float32": "FP32", "float16": "FP16", "uint8": "UINT8", "int8": "INT8", "int64": "INT64"}
"""numpy dtype name -> Open Inference Protocol datatype."""

_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(uint8)": "uint8",
              "tensor(int8)": "int8", "tensor(int64)": "int64"}  # fmt: skip


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
        return bytes(data) if str(getattr(elem.datatype, "value", elem.datatype)) in _RAW_DTYPES else original(elem, data)

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
            raise MLServerError(f"{path.name} changed since the bundle was verified: restore it", status_code=500)
        self._session = make_session(path, threads=int(extra.get("threads", 0)))
        inp = self._session.get_inputs()[0]
        self._input = inp.name
        self._dtype = np.dtype(_ORT_TYPES.get(inp.type, "float32"))
        self._dims = [d if isinstance(d, int) and d > 0 else -1 for d in inp.shape]
        self._output = self._session.get_outputs()[0].name
        keep_raw_tensors()
        log.info(
            "loaded model %s: split %s, %s, boundary %s %s",
            self.name, extra.get("split", "?"), extra.get("file", path.name), DATATYPES.get(self._dtype.name, "?"),
            self._dims,
        )  # fmt: skip
        return True

    def _check(self, payload: InferenceRequest) -> np.ndarray:
        if len(payload.inputs) != 1 or payload.inputs[0].name != self._input:
            names = [i.name for i in payload.inputs]
            raise MLServerError(f"model {self.name} takes one input {self._input!r}, got {names}")
        req = payload.inputs[0]
        want = DATATYPES.get(self._dtype.name)
        if req.datatype != want:
            raise MLServerError(f"model {self.name}: input {self._input} must be {want}, got {req.datatype}")
        shape = list(req.shape)
        if len(shape) != len(self._dims) or any(d != -1 and s != d for s, d in zip(shape, self._dims, strict=True)):
            raise MLServerError(f"model {self.name}: input {self._input} must have shape {self._dims}, got {shape}")
        data = getattr(req.data, "root", req.data)
        if isinstance(data, (bytes, bytearray)):  # a raw tensor, kept as bytes (keep_raw_tensors)
            if len(data) != int(np.prod(shape)) * self._dtype.itemsize:
                raise MLServerError(f"model {self.name}: {len(data)} bytes of {want} do not make shape {shape}")
            return np.frombuffer(data, dtype=self._dtype).reshape(shape)
        x = NumpyCodec.decode_input(req)
        return np.ascontiguousarray(x.astype(self._dtype, copy=False))

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        """Run the tail on the request's boundary; the logits go back with the compute time."""
        x = self._check(payload)
        t0 = time.perf_counter()
        logits = self._session.run([self._output], {self._input: x})[0]
        compute_us = round((time.perf_counter() - t0) * 1e6)
        out: ResponseOutput = NumpyCodec.encode_output(name="logits", payload=np.asarray(logits))
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            id=payload.id,
            outputs=[out],
            parameters=Parameters(**{COMPUTE_PARAMETER: compute_us}),
        )
