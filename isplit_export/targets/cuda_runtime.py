"""CUDA device plumbing for the TensorRT backend: device buffers through ``libcudart`` and the GPU's name.

Split from :mod:`isplit_export.targets.trt_backend` (which builds and runs engines): a small ctypes
wrapper around ``libcudart`` (part of every CUDA / JetPack install), so the device container needs
neither pycuda nor cuda-python, and :func:`current_gpu_name`, found the way ``build_engines.sh`` finds it.
Every entry point raises ``NotRunError`` where the CUDA runtime is missing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from isplit_export.errors import NotRunError, TechnicalError


def _load_cudart() -> ctypes.CDLL:
    names = [ctypes.util.find_library("cudart"), "libcudart.so", "libcudart.so.12", "libcudart.so.11.0"]
    names += ["/usr/local/cuda/lib64/libcudart.so", "/usr/local/cuda/targets/aarch64-linux/lib/libcudart.so"]
    for name in names:
        if not name:
            continue
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    raise NotRunError(
        "the CUDA runtime (libcudart) is not found here: run this on the device (see Dockerfile.jetson)"
    )


class CudaRuntime:
    """Just enough of libcudart for TensorRT I/O: device buffers, synchronous copies, one stream."""

    HOST_TO_DEVICE = 1  # cudaMemcpyHostToDevice
    DEVICE_TO_HOST = 2  # cudaMemcpyDeviceToHost

    def __init__(self) -> None:
        lib = _load_cudart()
        c_int, c_void_p, c_size_t = ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t
        signatures: dict[str, list[Any]] = {
            "cudaMalloc": [ctypes.POINTER(c_void_p), c_size_t],
            "cudaFree": [c_void_p],
            "cudaMemcpy": [c_void_p, c_void_p, c_size_t, c_int],
            "cudaStreamCreate": [ctypes.POINTER(c_void_p)],
            "cudaStreamSynchronize": [c_void_p],
            "cudaStreamDestroy": [c_void_p],
            "cudaGetDeviceCount": [ctypes.POINTER(c_int)],
        }
        for fn, argtypes in signatures.items():
            getattr(lib, fn).argtypes = argtypes
            getattr(lib, fn).restype = c_int
        lib.cudaGetErrorString.argtypes = [c_int]
        lib.cudaGetErrorString.restype = ctypes.c_char_p
        self._lib = lib

    def _check(self, status: int, what: str) -> None:
        if status != 0:
            text = self._lib.cudaGetErrorString(status)
            message = text.decode(errors="replace") if isinstance(text, bytes) else "unknown error"
            raise TechnicalError(f"CUDA {what} failed: {message} (error {status})")

    def device_count(self) -> int:
        count = ctypes.c_int(0)
        status = self._lib.cudaGetDeviceCount(ctypes.byref(count))
        return int(count.value) if status == 0 else 0

    def malloc(self, nbytes: int) -> int:
        ptr = ctypes.c_void_p()
        self._check(
            self._lib.cudaMalloc(ctypes.byref(ptr), ctypes.c_size_t(max(int(nbytes), 1))), "cudaMalloc"
        )
        return int(ptr.value or 0)

    def free(self, ptr: int) -> None:
        self._check(self._lib.cudaFree(ctypes.c_void_p(ptr)), "cudaFree")

    def to_device(self, dst: int, src: np.ndarray) -> None:
        src = np.ascontiguousarray(src)
        status = self._lib.cudaMemcpy(
            ctypes.c_void_p(dst),
            src.ctypes.data_as(ctypes.c_void_p),
            ctypes.c_size_t(src.nbytes),
            self.HOST_TO_DEVICE,
        )
        self._check(status, "cudaMemcpy host->device")

    def to_host(self, dst: np.ndarray, src: int) -> None:
        if not dst.flags.c_contiguous:
            raise TechnicalError("internal: host output buffer is not contiguous")
        status = self._lib.cudaMemcpy(
            dst.ctypes.data_as(ctypes.c_void_p),
            ctypes.c_void_p(src),
            ctypes.c_size_t(dst.nbytes),
            self.DEVICE_TO_HOST,
        )
        self._check(status, "cudaMemcpy device->host")

    def stream_create(self) -> int:
        stream = ctypes.c_void_p()
        self._check(self._lib.cudaStreamCreate(ctypes.byref(stream)), "cudaStreamCreate")
        return int(stream.value or 0)

    def stream_synchronize(self, stream: int) -> None:
        self._check(self._lib.cudaStreamSynchronize(ctypes.c_void_p(stream)), "cudaStreamSynchronize")

    def stream_destroy(self, stream: int) -> None:
        self._check(self._lib.cudaStreamDestroy(ctypes.c_void_p(stream)), "cudaStreamDestroy")

    def device_name(self) -> str | None:
        """Device 0's name from ``cudaDeviceProp.name`` (its first field, char[256]); None when unavailable."""
        buf = ctypes.create_string_buffer(8192)  # larger than cudaDeviceProp in any CUDA release
        for fn in ("cudaGetDeviceProperties_v2", "cudaGetDeviceProperties"):
            func = getattr(self._lib, fn, None)
            if func is None:
                continue
            func.argtypes = [ctypes.c_void_p, ctypes.c_int]
            func.restype = ctypes.c_int
            if func(ctypes.cast(buf, ctypes.c_void_p), 0) == 0:
                return buf.raw[:256].split(b"\0", 1)[0].decode(errors="replace").strip() or None
        return None


def current_gpu_name() -> str:
    """This machine's accelerator name, found the way ``build_engines.sh`` finds it.

    Jetson: ``/proc/device-tree/model`` (names the module / developer kit); elsewhere ``nvidia-smi``;
    then the CUDA runtime; "unknown" when none answers.
    """
    model = Path("/proc/device-tree/model")
    try:
        if model.is_file():
            name = model.read_bytes().replace(b"\0", b"").decode(errors="replace").strip()
            if name:
                return name
    except OSError:
        pass
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
        if out:
            return out.splitlines()[0].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return CudaRuntime().device_name() or "unknown"
    except (NotRunError, TechnicalError, OSError, AttributeError):
        return "unknown"
