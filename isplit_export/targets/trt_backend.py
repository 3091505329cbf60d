"""TensorRT 10 / 11 Python backend: build a split's engines on the device, run them, check they belong to this machine.

``tensorrt`` is imported inside each function: this module imports everywhere, and every entry point
raises ``NotRunError`` (exit 4) where TensorRT is missing, so a CPU machine reports "not run", never a
fake result. On JetPack, TensorRT comes from the system (the L4T container of ``Dockerfile.jetson``),
not from pip. Device memory goes through :mod:`isplit_export.targets.cuda_runtime` (ctypes, libcudart).

Refusals: engines built by another TensorRT version or on another GPU are refused by
``check_engine_record`` with ``BadInputError`` (exit 2): the engines are the wrong input for this
machine and the fix is to rebuild them, no verification gate was evaluated. An engine whose bytes no
longer match ``engines/build.json`` is a tampered bundle: ``GateFailedError`` (exit 1).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from isplit_export import contract
from isplit_export.errors import BadInputError, GateFailedError, NotRunError, TechnicalError
from isplit_export.files import sha256_file
from isplit_export.targets import engine_trust
from isplit_export.targets.cuda_runtime import CudaRuntime, current_gpu_name
from isplit_export.targets.engine_build import RECORD_NAME

if TYPE_CHECKING:
    import tensorrt

NOT_INSTALLED = "TensorRT is not installed here: run this on the device (see Dockerfile.jetson)"
_DLA_FALLBACK_HINTS = (
    "unsupported on dla",
    "not supported on dla",
    "falling back to gpu",
    "switching this layer",
)


def tensorrt_available() -> bool:
    """True when the real TensorRT Python bindings import (the ``tensorrt-stubs`` namespace does not count)."""
    try:
        import tensorrt as trt
    except (ImportError, OSError):  # OSError: bindings present but libnvinfer missing
        return False
    return hasattr(trt, "Builder")


def require_tensorrt() -> None:
    if not tensorrt_available():
        raise NotRunError(NOT_INSTALLED)


def tensorrt_version() -> str:
    """The running TensorRT version (``trt.__version__``, e.g. "10.3.0.30")."""
    require_tensorrt()
    import tensorrt as trt

    return str(trt.__version__)


# --------------------------------------------------------------------------------------------------
# Build


def build_engine(
    onnx_path: Path,
    engine_path: Path,
    *,
    precision: str,
    workspace_mib: int,
    dla_core: int | None,
    timing_cache: Path | None,
    input_name: str,
    min_shape: Sequence[int],
    opt_shape: Sequence[int],
    max_shape: Sequence[int],
    expected_fallback: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Build one engine from an ONNX file with the TensorRT Python API and report what the build did.

    TensorRT 10: ``precision`` "fp16" sets FP16; "int8" sets INT8 + FP16 for QDQ models (explicit
    quantization, no calibrator); "fp32" builds a strongly typed network. TensorRT 11 has no precision
    flags: the network is strongly typed and the ONNX file carries the precision. With ``dla_core`` the
    engine targets that DLA core (DLA needs min = opt = max); ``expected_fallback`` names the ONNX nodes
    the plan's DLA check expects on the GPU: none -> no GPU fallback (and, where the ONNX parser has it,
    ``REPORT_CAPABILITY_DLA``), so any fallback fails the build; some -> GPU fallback, and a layer the
    DLA cannot run that is not on the list is refused before the build. Writes the engine, its layer information (``<engine>.layers.json``, from the engine
    inspector) and updates ``timing_cache``. Returns the report: layer counts, DLA placement, warnings.
    """
    require_tensorrt()
    import tensorrt as trt

    if precision not in ("fp32", "fp16", "int8"):
        raise BadInputError(f"precision must be fp32, fp16 or int8, got {precision!r}")
    if not onnx_path.is_file():
        raise BadInputError(f"{onnx_path} is missing: the bundle is incomplete (re-export it)")

    class RecordingLogger(trt.ILogger):
        """Keeps warnings and errors so the report can say what TensorRT decided (e.g. DLA fallbacks)."""

        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: list[str] = []

        def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
            if int(severity) <= int(trt.ILogger.Severity.WARNING):
                self.messages.append(str(msg))

    logger = RecordingLogger()
    builder = trt.Builder(logger)
    major = int(str(trt.__version__).split(".")[0])
    # TensorRT 10: networks are always explicit batch (the flag is deprecated); 8.x needs it set.
    # TensorRT 11: every network is strongly typed (the default); 10 opts in where the ONNX carries fp32.
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if major == 10 and precision == "fp32":
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    config = builder.create_builder_config()
    if dla_core is not None and expected_fallback is not None and not expected_fallback:
        # TensorRT >= 10.15 / 11.x (onnx-tensorrt changelog): the parser refuses a node the DLA cannot
        # run. Older parsers (JetPack 6's 10.3) lack the flag: there, no GPU fallback does the same.
        report_flag = getattr(getattr(trt, "OnnxParserFlag", None), "REPORT_CAPABILITY_DLA", None)
        set_config = getattr(parser, "set_builder_config", None)
        if report_flag is not None and set_config is not None:
            config.default_device_type = trt.DeviceType.DLA
            config.DLA_core = dla_core
            set_config(config)
            parser.set_flag(report_flag)
    # parse_from_file, not parse(bytes): external data (the shared weights layout) is found relative to
    # the model file's directory, which only the file path gives the parser
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise TechnicalError(
            f"TensorRT could not parse {onnx_path.name}: {errors[0] if errors else 'no detail'}"
        )

    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # layer names + devices in the inspector
    if major < 11 and precision in ("fp16", "int8"):  # TensorRT 11 removed the weak-typing flags
        config.set_flag(trt.BuilderFlag.FP16)
    if major < 11 and precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)

    dla_capable: int | None = None
    if dla_core is not None:
        if precision == "fp32":
            raise BadInputError("DLA runs fp16/int8 only: build fp32 engines without a DLA core")
        if builder.num_DLA_cores <= dla_core:
            raise BadInputError(
                f"the plan puts the head on DLA core {dla_core} but this device has {builder.num_DLA_cores} DLA "
                "core(s): export for the matching target (e.g. --target jetson-orin-nano has no DLA)"
            )
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = dla_core
        layers = [network.get_layer(i) for i in range(network.num_layers)]
        off = [str(layer.name) for layer in layers if not config.can_run_on_DLA(layer)]
        dla_capable = network.num_layers - len(off)
        if expected_fallback is None or expected_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        unexpected = [n for n in off if not any(e in n for e in expected_fallback or ())]
        if expected_fallback is not None and unexpected:
            raise TechnicalError(
                f"{len(unexpected)} layer(s) of {onnx_path.name} cannot run on the DLA but the plan does not expect "
                f"it (first: {unexpected[0]}): re-export to re-plan the head, or build it on the GPU"
            )

    profile = builder.create_optimization_profile()
    profile.set_shape(
        input_name,
        trt.Dims([int(d) for d in min_shape]),
        trt.Dims([int(d) for d in opt_shape]),
        trt.Dims([int(d) for d in max_shape]),
    )
    config.add_optimization_profile(profile)

    cache_bytes = (
        timing_cache.read_bytes()
        if timing_cache is not None and timing_cache.is_file() and not timing_cache.is_symlink()
        else b""
    )
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        detail = logger.messages[-1] if logger.messages else "no detail"
        raise TechnicalError(f"TensorRT could not build {engine_path.name}: {detail}")
    engine_bytes = bytes(serialized)
    contract.write_output(engine_path, engine_bytes)  # temporary file + rename: never through a symlink
    if timing_cache is not None:
        contract.write_output(timing_cache, bytes(config.get_timing_cache().serialize()))

    engine_layers: int | None = None
    layer_file = engine_path.with_name(engine_path.name + ".layers.json")
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(engine_bytes)
    if engine is not None:
        info = engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON)
        contract.write_output(layer_file, info.encode("utf-8"))
        try:
            layers = json.loads(info).get("Layers", [])
            engine_layers = len(layers) if isinstance(layers, list) else None
        except (json.JSONDecodeError, AttributeError):
            engine_layers = None

    fallbacks = [m for m in logger.messages if any(h in m.lower() for h in _DLA_FALLBACK_HINTS)]
    return {
        "onnx": onnx_path.name,
        "precision": precision,
        "device": "dla" if dla_core is not None else "gpu",
        "dla_core": dla_core,
        "network_layers": network.num_layers,
        "dla_capable_layers": dla_capable,
        "gpu_fallback_layers": None if dla_capable is None else network.num_layers - dla_capable,
        "engine_layers": engine_layers,
        "layer_info": layer_file.name if engine_layers is not None else None,
        "dla_fallback_messages": fallbacks[:50],
        "warnings": len(logger.messages),
        "sha256": sha256_file(engine_path),
        "bytes": engine_path.stat().st_size,
    }


def _read_json(path: Path, what: str) -> dict[str, Any]:
    """A strict, bounded JSON object (:func:`isplit_export.contract.read_json`); ``what`` says how to fix it."""
    if not path.is_file():
        raise BadInputError(f"{path} is missing: {what}")
    return contract.read_json(path, str(path))


# --------------------------------------------------------------------------------------------------
# Check and run


def _same_release(a: str, b: str) -> bool:
    """Same TensorRT release: equal major.minor.patch ("10.3.0" == "10.3.0.30")."""
    return a.split(".")[:3] == b.split(".")[:3]


def check_engine_record(split_dir: Path) -> dict[str, Any]:
    """Refuse engines that were not built by this TensorRT on this GPU, or whose bytes changed since.

    Returns ``engines/build.json`` plus a ``checked`` block (what was compared, and against what).
    A version or GPU recorded as "unknown" cannot be compared: ``checked`` says so.
    """
    require_tensorrt()
    path = contract.bundle_path(split_dir, RECORD_NAME, RECORD_NAME)  # inside the split, no symlink
    record = _read_json(
        path, "build the engines first (bash build_engines.sh, or isplit-export build-engines)"
    )
    built_version = str(record.get("tensorrt_version", "unknown"))
    built_gpu = str(record.get("gpu", "unknown"))
    here_version = tensorrt_version()
    here_gpu = current_gpu_name()
    version_compared = "unknown" not in (built_version, here_version)
    gpu_compared = "unknown" not in (built_gpu, here_gpu)
    if (version_compared and not _same_release(built_version, here_version)) or (
        gpu_compared and built_gpu != here_gpu
    ):
        raise BadInputError(
            f"engines were built with TensorRT {built_version} on GPU {built_gpu!r}; this machine has TensorRT "
            f"{here_version} on {here_gpu!r}: rebuild them with build_engines.sh"
        )
    engines = record.get("engines", {})
    if not isinstance(engines, dict) or not engines:
        raise BadInputError(f"{path} lists no engines: rebuild them with build_engines.sh")
    for part, info in sorted(engines.items()):
        if not isinstance(info, dict):
            raise BadInputError(f"{path} entry {part!r} is not an object: rebuild them with build_engines.sh")
        engine = contract.bundle_path(
            split_dir, info.get("file"), RECORD_NAME
        )  # inside the split, no symlink
        if not engine.is_file():
            raise BadInputError(f"{engine} is missing ({part} engine): rebuild them with build_engines.sh")
        expected = info.get("sha256")
        if expected and sha256_file(engine) != expected:
            raise GateFailedError(
                f"{engine} does not match its sha256 in {path}: rebuild them with build_engines.sh"
            )
    return {
        **record,
        "checked": {
            "tensorrt_version": here_version,
            "gpu": here_gpu,
            "version_compared": version_compared,
            "gpu_compared": gpu_compared,
        },
    }


def _numpy_dtype(dtype: tensorrt.DataType) -> np.dtype[Any]:
    """numpy dtype for a TensorRT tensor type (bf16 / fp8 / int4 have no numpy twin: refused)."""
    import tensorrt as trt

    table = {
        getattr(trt.DataType, name, None): np.dtype(np_type)  # INT64 only exists from TensorRT 9 on
        for name, np_type in (
            ("FLOAT", np.float32),
            ("HALF", np.float16),
            ("INT8", np.int8),
            ("UINT8", np.uint8),
            ("INT32", np.int32),
            ("INT64", np.int64),
            ("BOOL", np.bool_),
        )
    }
    if dtype not in table:
        raise TechnicalError(f"engine I/O type {dtype} has no numpy equivalent")
    return table[dtype]


class Engine:
    """A serialized engine loaded once (runtime, engine, execution context, stream) and run many times.

    Deserialising and allocating per call would cost more than the inference on a Jetson: a serving loop or
    a latency measurement keeps one :class:`Engine`. Device buffers are kept between calls and grown when a
    larger batch comes. Floating feeds are cast to the engine's input type (fp32 <-> fp16); any other type
    mismatch is refused. ``dla_core`` selects the DLA core a DLA engine runs on (default: TensorRT's
    choice). One call at a time (an execution context is not re-entrant): callers that share one across
    threads hold a lock. Use it as a context manager, or call :meth:`close`. Only engines ``build-engines``
    built on this machine are deserialised (:mod:`~isplit_export.targets.engine_trust`), unless ``trust``.
    """

    def __init__(self, engine_path: Path, *, dla_core: int | None = None, trust: bool = False) -> None:
        require_tensorrt()
        import tensorrt as trt

        if not engine_path.is_file():
            raise BadInputError(f"{engine_path} is missing: build the engines first (bash build_engines.sh)")
        self.path = engine_path
        self._logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self._logger)
        if dla_core is not None:
            runtime.DLA_core = dla_core
        data = engine_path.read_bytes()
        engine_trust.require_trusted(engine_path, data, trust=trust)  # the very bytes deserialised next
        engine = runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise BadInputError(
                f"TensorRT {trt.__version__} cannot load {engine_path.name} (built elsewhere?): rebuild it with build_engines.sh"
            )
        self._runtime, self._engine = runtime, engine  # the runtime must outlive the engine
        self._context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._cuda = CudaRuntime()
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)
        self._stream: int | None = self._cuda.stream_create()

    def _buffer(self, name: str, nbytes: int) -> int:
        """The device buffer of ``name``, at least ``nbytes`` long, bound to the context."""
        ptr, size = self._buffers.get(name, (0, -1))
        if size < nbytes:
            if size >= 0:
                self._cuda.free(ptr)
                del self._buffers[name]
            ptr = self._cuda.malloc(nbytes)
            self._buffers[name] = (ptr, nbytes)
        self._context.set_tensor_address(name, ptr)
        return ptr

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once on ``feeds`` (name -> array) and return every output by name (fresh host arrays)."""
        if self._stream is None:
            raise TechnicalError(f"internal: {self.path.name} was closed")
        what = self.path.name
        if sorted(feeds) != sorted(self.inputs):
            raise BadInputError(f"{what} takes inputs {sorted(self.inputs)}, got {sorted(feeds)}")
        for name in self.inputs:
            want = _numpy_dtype(self._engine.get_tensor_dtype(name))
            arr = np.asarray(feeds[name])
            if arr.dtype != want and not (arr.dtype.kind == "f" and want.kind == "f"):
                raise BadInputError(f"input {name!r} of {what} is {want}, got {arr.dtype}")
            arr = np.ascontiguousarray(arr, dtype=want)
            if not self._context.set_input_shape(name, tuple(int(d) for d in arr.shape)):
                raise BadInputError(f"shape {list(arr.shape)} of input {name!r} is outside {what}'s profile")
            self._cuda.to_device(self._buffer(name, arr.nbytes), arr)
        host: dict[str, np.ndarray] = {}
        for name in self.outputs:
            dims = self._context.get_tensor_shape(name)
            shape = tuple(int(dims[i]) for i in range(len(dims)))
            if any(d < 0 for d in shape):
                raise TechnicalError(f"output {name!r} of {what} has an unresolved shape {list(shape)}")
            host[name] = np.empty(shape, dtype=_numpy_dtype(self._engine.get_tensor_dtype(name)))
            self._buffer(name, host[name].nbytes)
        if not self._context.execute_async_v3(self._stream):
            raise TechnicalError(f"TensorRT failed to run {what}")
        self._cuda.stream_synchronize(self._stream)
        for name in self.outputs:
            self._cuda.to_host(host[name], self._buffers[name][0])
        return host

    def close(self) -> None:
        """Free the device buffers and the stream (best effort: a failed free must not hide another error)."""
        buffers, stream = list(self._buffers.values()), self._stream
        self._buffers, self._stream = {}, None
        try:
            for ptr, _ in buffers:
                self._cuda.free(ptr)
            if stream is not None:
                self._cuda.stream_destroy(stream)
        except TechnicalError:
            pass

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
