"""Runners per backend, as Polygraphy's: one model on one runtime, ``activate`` / ``infer`` / ``deactivate``.

:class:`OnnxrtRunner` runs an ONNX file in onnxruntime, :class:`TrtRunner` a TensorRT engine; both are
context managers. TensorRT is imported only when a :class:`TrtRunner` activates, and only an engine that
``build-engines`` built on this machine is deserialised (:mod:`isplit_export.targets.engine_trust`, checked
in the activation, on the very bytes deserialised) unless ``trust``. :func:`run_pair` runs a head then a tail
runner, whatever their backend; :func:`measure_latency` times runners (interleaved medians, :func:`median_ms`).

:data:`BACKENDS` (module :mod:`isplit_export.verification.backends`) is the one registry keyed by backend
name; nothing in this module knows a backend by name. Torch-free (numpy, onnxruntime).
"""

from __future__ import annotations

import statistics
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from isplit_export.errors import BadInputError, NotRunError, TechnicalError, first_line
from isplit_export.exporting.encoding import BoundaryEncoding, decode_array, encode_array
from isplit_export.exporting.onnx_utils import make_session, run_session

if TYPE_CHECKING:
    import onnxruntime as ort

    from isplit_export.targets.trt_backend import Engine

LATENCY_THREADS = 1
"""intra-op threads of the latency sessions. One fixed thread: the numbers do not depend on how
many cores the machine has or what else runs on it, and head+tail vs full compares the same
compute. (Absolute latency with all cores is a deployment question, not the 5 % overhead one.)"""


class Runner(ABC):
    """One model file on one runtime: :meth:`activate` loads it, :meth:`infer` runs it, :meth:`deactivate`
    frees it. ``with runner:`` does both ends; activating an active runner does nothing."""

    max_batch: ClassVar[int | None] = None
    """Images per :meth:`infer` call :func:`run_pair` may send (None: any)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.active = False

    def activate(self) -> None:
        """Load the model (once)."""
        if not self.active:
            self._activate()
            self.active = True

    def deactivate(self) -> None:
        """Free what :meth:`activate` loaded (once)."""
        if self.active:
            self.active = False
            self._deactivate()

    def infer(self, x: np.ndarray) -> np.ndarray:
        """The model's only output for ``x`` fed to its input (activates first if needed)."""
        self.activate()
        return self._infer(np.ascontiguousarray(x))

    def __enter__(self) -> Runner:
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    @abstractmethod
    def _activate(self) -> None: ...

    @abstractmethod
    def _infer(self, x: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def _deactivate(self) -> None: ...


class OnnxrtRunner(Runner):
    """An ONNX file in an onnxruntime session (:func:`~isplit_export.exporting.onnx_utils.make_session`, CPU,
    ``threads`` intra-op threads, 0: onnxruntime's default); fed by its first input, so names are not assumed."""

    def __init__(self, path: Path, *, threads: int = 0) -> None:
        super().__init__(path)
        self.threads = threads
        self._session: ort.InferenceSession | None = None

    def _activate(self) -> None:
        try:
            self._session = make_session(self.path, threads=self.threads)
        except Exception as e:  # onnxruntime raises its own pybind exception types
            raise TechnicalError(f"onnxruntime cannot load {self.path}: {first_line(e)}") from e
        self._input = self._session.get_inputs()[0].name

    def input_meta(self) -> ort.NodeArg:
        """The model's (first) input: name, type, shape (activates first if needed)."""
        self.activate()
        assert self._session is not None
        return self._session.get_inputs()[0]

    def _infer(self, x: np.ndarray) -> np.ndarray:
        assert self._session is not None
        try:
            return np.asarray(run_session(self._session, {self._input: x})[0])
        except Exception as e:
            raise TechnicalError(f"onnxruntime failed running {self.path}: {first_line(e)}") from e

    def _deactivate(self) -> None:
        self._session = None


class TrtRunner(Runner):
    """A TensorRT engine (:class:`isplit_export.targets.trt_backend.Engine`), loaded once when it activates.

    ``input_name`` feeds the engine (default: its first input); ``dla_core`` the DLA core it runs on.
    Activation imports TensorRT (``NotRunError`` where it does not import) and deserialises the engine
    only when ``build-engines`` built it here, or with ``trust`` (``--trust-engines``). One execution
    context: calls from several threads take turns. Batch 1 (engines may have a static batch-1 profile).
    """

    max_batch = 1

    def __init__(
        self, path: Path, *, input_name: str | None = None, dla_core: int | None = None, trust: bool = False
    ) -> None:
        super().__init__(path)
        self.input_name, self.dla_core, self.trust = input_name, dla_core, trust
        self._engine: Engine | None = None
        self._lock = threading.Lock()

    def _activate(self) -> None:
        from isplit_export.targets import trt_backend  # lazy: imports tensorrt

        if not trt_backend.tensorrt_available():
            raise NotRunError(trt_backend.NOT_INSTALLED)
        # Engine() refuses an engine not built here (engine_trust) before deserialising its bytes
        self._engine = trt_backend.Engine(self.path, dla_core=self.dla_core, trust=self.trust)

    def _infer(self, x: np.ndarray) -> np.ndarray:
        assert self._engine is not None
        name = self.input_name or self._engine.inputs[0]
        with self._lock:
            outputs = self._engine({name: x})
        if len(outputs) != 1:
            raise TechnicalError(
                f"engine {self.path} has {len(outputs)} outputs, expected 1: rebuild the engines"
            )
        return np.asarray(next(iter(outputs.values())))

    def _deactivate(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()


def to_wire(boundary: np.ndarray, enc: BoundaryEncoding | None) -> np.ndarray:
    """A head's output as transmitted: as is when it already has the encoding's dtype (the model carries
    the codec), else encoded here (:func:`encode_array`, bit-identical to onnxruntime's QuantizeLinear).
    TensorRT's parser cannot take the uint8 codec, so engines may be built without it."""
    if enc is None or boundary.dtype == np.dtype(enc.dtype):
        return boundary
    return encode_array(boundary, enc)


def run_pair(
    head: Runner,
    tail: Runner,
    inputs: np.ndarray,
    *,
    encoding: BoundaryEncoding | None = None,
    batch: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``inputs`` through ``head`` then ``tail``, ``batch`` images at a time (at most each runner's
    ``max_batch``). Runners not active yet are activated here and deactivated after; active ones stay so.

    Returns ``(boundary, logits)``: the boundary as transmitted (float32, float16 or uint8 per the encoding;
    :func:`to_wire` with ``encoding``) and the tail's logits. A head that emits float where the encoding is
    not float (codec stripped at the cut) feeds the tail the decoded float32 (int8) or the wire tensor.
    """
    if batch < 1:
        raise BadInputError(f"batch {batch}: pass a positive batch size")
    x = np.asarray(inputs)
    if x.ndim == 0 or x.shape[0] == 0:
        raise BadInputError("no input images to run through the pair")
    step = min([batch, *(r.max_batch for r in (head, tail) if r.max_batch is not None)])
    boundaries: list[np.ndarray] = []
    logits: list[np.ndarray] = []
    with _activated(head, tail):
        for i in range(0, x.shape[0], step):
            b = head.infer(x[i : i + step])
            wire = to_wire(b, encoding)
            feed = wire
            if (
                wire is not b and encoding is not None and encoding.name == "int8"
            ):  # codec stripped at the cut
                feed = decode_array(wire, encoding)
            logits.append(tail.infer(feed))
            boundaries.append(wire)
    return np.concatenate(boundaries), np.concatenate(logits)


@contextmanager
def _activated(*runners: Runner) -> Iterator[None]:
    """Activate the runners not active yet, and deactivate those on exit (also when one fails to activate)."""
    with ExitStack() as stack:
        for r in runners:
            if not r.active:
                stack.enter_context(r)
        yield


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


LATENCY_KEYS = ("head", "tail", "full", "head_int8", "tail_int8")
"""What :func:`measure_latency` times, in its interleaving order."""


def measure_latency(
    runners: Mapping[str, Runner], sample: np.ndarray, *, warmup: int = 5, runs: int = 30
) -> dict[str, float]:
    """Median latency in ms at batch 1 of the runners ``head``, ``tail``, ``full`` (and INT8 twins).

    ``runners`` has any of the keys :data:`LATENCY_KEYS`; ``tail`` needs ``head`` and ``tail_int8`` needs
    ``head_int8``. Heads and ``full`` are fed ``sample[:1]``; a tail is fed its own head's output, as on
    the real chain. The runs are interleaved (head, tail, full, head_int8, tail_int8, head, ...) by
    :func:`median_ms`. Runners not active yet are activated here and deactivated after. Returns ``<key>_ms``
    for the runners given and, when head, tail and full are, ``ratio`` = (head + tail) / full.
    """
    unknown = sorted(set(runners) - set(LATENCY_KEYS))
    if unknown:
        raise BadInputError(f"measure_latency: unknown model key(s) {unknown}: use {', '.join(LATENCY_KEYS)}")
    for tail_key, head_key in (("tail", "head"), ("tail_int8", "head_int8")):
        if tail_key in runners and head_key not in runners:
            raise BadInputError(
                f"measure_latency: timing the {tail_key} needs the {head_key} (its input is the head's output)"
            )
    if runs < 1 or warmup < 0:
        raise BadInputError(f"measure_latency: runs {runs} / warmup {warmup}: pass runs >= 1, warmup >= 0")
    x = np.ascontiguousarray(np.asarray(sample)[:1])
    order = [k for k in LATENCY_KEYS if k in runners]
    with _activated(*(runners[k] for k in order)):
        feeds: dict[str, np.ndarray] = {}
        for k in order:
            head = k.replace("tail", "head")
            feeds[k] = x if head == k else runners[head].infer(feeds[head])
        calls = {k: (lambda r=runners[k], f=feeds[k]: r.infer(f)) for k in order}
        out = {f"{k}_ms": v for k, v in median_ms(calls, warmup=warmup, runs=runs).items()}
    if {"head", "tail", "full"} <= set(order) and out["full_ms"] > 0:
        out["ratio"] = (out["head_ms"] + out["tail_ms"]) / out["full_ms"]
    return out
