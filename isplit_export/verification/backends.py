"""The one registry of backends, keyed by name: what ``verify --backend`` and ``run --backend`` run where.

A :class:`Backend` says which models of a split it runs (:meth:`Backend.verify_pairs`, :meth:`Backend.head`),
opens them as runners (:mod:`isplit_export.verification.runners`) and names the gate that holds them
(:meth:`Backend.gate`). :data:`BACKENDS` maps each name to its backend; callers look a backend up
(:func:`backend_named`) and never compare backend names. Adding a backend (onnxruntime's TensorRT execution
provider, TensorRT-RTX) means a runner and one entry here.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from isplit_export import contract
from isplit_export.backend_names import AUTO, ONNXRUNTIME, TENSORRT
from isplit_export.errors import BadInputError, NotRunError, first_line
from isplit_export.exporting.encoding import ENCODINGS, BoundaryEncoding
from isplit_export.targets.profiles import PRECISIONS
from isplit_export.verification.checks import (
    BOUNDARY_FLOAT_TOLERANCE,
    BOUNDARY_MAX_STEP,
    BoundaryCheck,
    compare_boundary,
    not_compared,
)
from isplit_export.verification.gates import GATES, Gate, loosest
from isplit_export.verification.runners import OnnxrtRunner, Runner, TrtRunner

TRT_LATENCY_RUNS = 50
"""Timed batch-1 runs per engine (after 5 warm-up runs) for the ``latency_ms`` of TensorRT rows."""


@dataclass(frozen=True)
class PairFiles:
    """One head/tail pair a backend verifies: verify's ``check`` name, its precision and the two files."""

    check: str
    precision: str
    head: Path
    tail: Path


@dataclass(frozen=True)
class SplitHead:
    """A split's head as ``run`` may run it: its ONNX file, its folder, the bundle's input name, and a lookup of
    its TensorRT engine file and DLA core (from ``engine_plan.json``; raises where there is none)."""

    onnx: Path
    split_dir: Path
    input_name: str
    engine: Callable[[], tuple[Path, int | None]]


class Backend(ABC):
    """A runtime the goldens and the head can run on; one instance per name in :data:`BACKENDS`."""

    name: ClassVar[str]
    auto_priority: ClassVar[int]
    """``run --backend auto`` takes the available backend with the highest priority."""
    timing_runs: ClassVar[int | None] = None
    """verify times each pair with this many runs (its ``latency_ms``); None: not timed."""
    device_engines: ClassVar[bool] = False
    """True when it runs engines built on the device itself (its timings measure the device, for ``plan``)."""

    @abstractmethod
    def gate(self, encoding: str, precision: str, *, replay: bool = True) -> Gate:
        """The gate of a pair with boundary ``encoding`` at ``precision`` (names already checked); ``replay``:
        the golden holds the INT8 pair's own logits to compare with."""

    @abstractmethod
    def verify_pairs(
        self, manifest: contract.Manifest, bundle: Path, entries: Sequence[contract.Split], *, trust: bool
    ) -> list[list[PairFiles]]:
        """The pairs of each split entry to verify, after checking all of them (nothing runs before)."""

    @abstractmethod
    def runner(self, path: Path, *, input_name: str, trust: bool) -> Runner:
        """A runner for one model file of :meth:`verify_pairs` (``input_name``: the model's input)."""

    @abstractmethod
    def check_boundary(
        self, golden: np.ndarray, boundary: np.ndarray, gate: Gate, enc: BoundaryEncoding, precision: str
    ) -> BoundaryCheck:
        """The replayed boundary against the golden one (:func:`~isplit_export.verification.checks.compare_boundary`)."""

    @abstractmethod
    def head(self, split: SplitHead, *, threads: int, trust: bool) -> Runner:
        """The runner of ``split``'s head for ``run`` (``threads``: onnxruntime intra-op threads)."""

    def head_unavailable(self, split: SplitHead, *, trust: bool) -> str | None:
        """Why ``run --backend auto`` cannot take this backend for the head here (None: it can)."""
        return None

    def head_reason(self, split: SplitHead) -> str:
        """Why ``run --backend auto`` took this backend, in a few words."""
        return self.name


class OnnxruntimeBackend(Backend):
    """The exported ONNX pairs in onnxruntime: the pair (gate of its boundary encoding) and the INT8 QDQ pair."""

    name = ONNXRUNTIME
    auto_priority = 0

    def gate(self, encoding: str, precision: str, *, replay: bool = True) -> Gate:
        """``fp32``: the exported pair, the encoding's gate; ``int8``: the QDQ pair against its own golden logits
        (``int8-qdq-replay``, whatever the encoding), or against the full model (``int8-qdq``) without them."""
        if precision == "fp32":
            return GATES[encoding]
        if precision == "int8":
            return GATES["int8-qdq-replay"] if replay else GATES["int8-qdq"]
        raise BadInputError("onnxruntime verification has no fp16 pair: use precision fp32 or int8")

    def verify_pairs(
        self, manifest: contract.Manifest, bundle: Path, entries: Sequence[contract.Split], *, trust: bool
    ) -> list[list[PairFiles]]:
        """``head``/``tail`` and, when listed, ``head_int8``/``tail_int8`` (both or neither)."""
        out = []
        for entry in entries:
            pairs = [
                PairFiles(
                    "onnx",
                    "fp32",
                    *(contract.split_file(manifest, bundle, entry, k) for k in ("head", "tail")),
                )
            ]
            has_q = ("head_int8" in entry.files, "tail_int8" in entry.files)
            if any(has_q) and not all(has_q):
                raise BadInputError(
                    f"manifest.json split {entry.dir} lists only one of head_int8/tail_int8: rebuild the bundle"
                )
            if all(has_q):
                files = (contract.split_file(manifest, bundle, entry, k) for k in ("head_int8", "tail_int8"))
                pairs.append(PairFiles("onnx-int8-qdq", "int8", *files))
            out.append(pairs)
        return out

    def runner(self, path: Path, *, input_name: str, trust: bool) -> Runner:
        """An onnxruntime session with its default threads (fed by its first input)."""
        return OnnxrtRunner(path)

    def check_boundary(
        self, golden: np.ndarray, boundary: np.ndarray, gate: Gate, enc: BoundaryEncoding, precision: str
    ) -> BoundaryCheck:
        """The exported pair's boundary to the encoding's own tolerance; the QDQ pair's is not compared."""
        if precision == "int8":
            return not_compared(
                "not compared: the QDQ head quantizes inside, its boundary differs from the golden by design"
            )
        return compare_boundary(golden, boundary)

    def head(self, split: SplitHead, *, threads: int, trust: bool) -> Runner:
        """The split's ``head.onnx``."""
        return OnnxrtRunner(split.onnx, threads=threads)


class TensorrtBackend(Backend):
    """The engines ``build-engines`` built in each split's ``engines/`` (``head.<p>.engine``/``tail.<p>.engine``)."""

    name = TENSORRT
    auto_priority = 10
    device_engines = True
    timing_runs = TRT_LATENCY_RUNS

    def gate(self, encoding: str, precision: str, *, replay: bool = True) -> Gate:
        """``trt-<precision>``; with a non-fp32 boundary encoding the loosest of that and the encoding's gate."""
        trt = GATES[f"trt-{precision}"]
        return trt if encoding == "fp32" else loosest(trt, GATES[encoding])

    def verify_pairs(
        self, manifest: contract.Manifest, bundle: Path, entries: Sequence[contract.Split], *, trust: bool
    ) -> list[list[PairFiles]]:
        """Every engine pair present, after checking that each split has one, that the engines are this
        machine's (``engines/build.json``) and that each was built here (or ``trust``): all refused before
        any engine is deserialised."""
        from isplit_export.targets import engine_trust, trt_backend  # lazy: imports tensorrt

        if not trt_backend.tensorrt_available():
            raise NotRunError(
                "TensorRT is not available on this machine: run verify --backend tensorrt on the device "
                "(Dockerfile.jetson), or use --backend onnxruntime"
            )
        found: list[tuple[Path, list[str]]] = []
        for entry in entries:
            split_dir = contract.bundle_path(bundle, entry.dir)
            precisions = [
                p
                for p in PRECISIONS
                if _engine_present(split_dir, "head", p) and _engine_present(split_dir, "tail", p)
            ]
            if not precisions:
                raise NotRunError(
                    f"no engines in {entry.dir}/engines: run build_engines.sh or isplit-export build-engines first"
                )
            found.append((split_dir, precisions))
        out = []
        for split_dir, precisions in found:
            trt_backend.check_engine_record(split_dir)
            edir = split_dir / contract.ENGINES_DIR
            pairs = [
                PairFiles(f"tensorrt-{p}", p, edir / f"head.{p}.engine", edir / f"tail.{p}.engine")
                for p in precisions
            ]
            for pair in pairs:
                for path in (pair.head, pair.tail):
                    engine_trust.require_trusted_file(path, trust=trust)
            out.append(pairs)
        return out

    def runner(self, path: Path, *, input_name: str, trust: bool) -> Runner:
        """The engine, fed by ``input_name``."""
        return TrtRunner(path, input_name=input_name, trust=trust)

    def check_boundary(
        self, golden: np.ndarray, boundary: np.ndarray, gate: Gate, enc: BoundaryEncoding, precision: str
    ) -> BoundaryCheck:
        """TF32 / fp16 / int8 kernels move the boundary too: held to the gate's relative bound."""
        rel = max(BOUNDARY_FLOAT_TOLERANCE.get(enc.dtype, 1e-4), gate.max_abs_rel)
        steps = max(BOUNDARY_MAX_STEP, math.ceil(gate.max_abs_rel * 255))
        return compare_boundary(golden, boundary, rel_limit=rel, step_limit=steps)

    def head(self, split: SplitHead, *, threads: int, trust: bool) -> Runner:
        """The head engine of the split's ``engine_plan.json`` on its DLA core, once the engines are this machine's."""
        from isplit_export.targets import trt_backend  # lazy: imports tensorrt

        if not trt_backend.tensorrt_available():
            raise NotRunError(
                "TensorRT is not available on this machine: run with --backend tensorrt on the device, "
                "or use --backend onnxruntime"
            )
        engine, dla = split.engine()
        trt_backend.check_engine_record(split.split_dir)
        return TrtRunner(engine, input_name=split.input_name, dla_core=dla, trust=trust)

    def head_unavailable(self, split: SplitHead, *, trust: bool) -> str | None:
        """TensorRT does not import, the split has no head engine, or the engine was not built here."""
        from isplit_export.targets import engine_trust, trt_backend  # lazy: imports tensorrt

        if not trt_backend.tensorrt_available():
            return "TensorRT does not import here"
        try:
            engine, _ = split.engine()
        except (BadInputError, NotRunError) as e:
            return f"no TensorRT head engine ({first_line(e).split(':')[0]})"
        if not (trust or engine_trust.trusted(engine.read_bytes())):
            return f"{engine.name} was not built here by build-engines"
        return None

    def head_reason(self, split: SplitHead) -> str:
        """The engine's file name."""
        return f"{split.engine()[0].name}, built here by build-engines"


def _engine_present(split_dir: Path, part: str, precision: str) -> bool:
    """``engines/<part>.<precision>.engine`` inside the split, reached through no symlink (contract.bundle_path)."""
    return contract.bundle_path(
        split_dir, f"{contract.ENGINES_DIR}/{part}.{precision}.engine", "engines"
    ).is_file()


BACKENDS: dict[str, Backend] = {b.name: b for b in (OnnxruntimeBackend(), TensorrtBackend())}
"""Every backend by name: ``verify --backend`` and ``run --backend`` (not a target's runtime, ``profiles.BACKENDS``)."""


def backend_named(name: str) -> Backend:
    """The backend called ``name``; an unknown one is bad input naming the known ones."""
    if name not in BACKENDS:
        raise BadInputError(f"unknown backend {name!r}: choose {' or '.join(BACKENDS)}")
    return BACKENDS[name]


def gate_for(encoding: str, precision: str = "fp32", backend: str = ONNXRUNTIME) -> Gate:
    """The gate for a pair with boundary ``encoding`` run at ``precision`` on ``backend`` (:meth:`Backend.gate`)."""
    if encoding not in ENCODINGS:
        raise BadInputError(f"unknown boundary encoding {encoding!r}: expected one of {', '.join(ENCODINGS)}")
    if precision not in PRECISIONS:
        raise BadInputError(f"unknown precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    return backend_named(backend).gate(encoding, precision)


def head_backend(name: str, split: SplitHead, *, trust: bool) -> tuple[Backend, str]:
    """The backend ``run --backend NAME`` runs ``split``'s head on, and why in a few words. :data:`AUTO`
    takes the available one of highest priority (the why: the reason the first one passed over was not
    available, else the chosen one's :meth:`Backend.head_reason`)."""
    if name != AUTO:
        return backend_named(name), f"--backend {name}"
    passed_over: list[str] = []
    for backend in sorted(BACKENDS.values(), key=lambda b: -b.auto_priority):
        why = backend.head_unavailable(split, trust=trust)
        if why is None:
            return backend, f"auto: {passed_over[0] if passed_over else backend.head_reason(split)}"
        passed_over.append(why)
    raise NotRunError(f"no backend can run the head here: {'; '.join(passed_over)}")
