"""Verify one split of a bundle: its boundary encoding, and each of its pairs on the goldens under the
backend's gate (the library part of ``isplit-export verify``; the job is :mod:`isplit_export.jobs.verify`).

Torch-free on purpose (numpy, onnx, onnxruntime): verify runs in the Jetson container from
``Dockerfile.jetson``, which has no PyTorch. TensorRT is imported only when a ``TrtRunner`` activates.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import numpy as np

from isplit_export import contract, progress
from isplit_export.errors import BadInputError
from isplit_export.exporting.encoding import ENCODINGS, BoundaryEncoding
from isplit_export.numbers import rounded
from isplit_export.verification.backends import Backend, PairFiles
from isplit_export.verification.checks import BoundaryCheck, judge_pair
from isplit_export.verification.gates import Gate
from isplit_export.verification.outcome import SplitVerification
from isplit_export.verification.runners import measure_latency, run_pair

SCHEMA = contract.SCHEMA
VERIFY_FILE = contract.VERIFY_FILE
"""Written into the bundle by :func:`isplit_export.jobs.verify.verify_bundle`; not in the manifest, so never hashed."""


# --------------------------------------------------------------------------------------------------
# manifest and files


def split_encoding(manifest: contract.Manifest, entry: contract.Split) -> BoundaryEncoding:
    """The boundary encoding (dtype, scale, zero point) a split's manifest entry records."""
    b = entry.boundary
    name = b.encoding or manifest.boundary_encoding
    if name not in ENCODINGS:
        raise BadInputError(
            f"manifest.json split {entry.dir}: unknown boundary encoding {name!r}: rebuild the bundle"
        )
    data = {"encoding": name, "dtype": b.dtype, "scale": b.scale, "zero_point": b.zero_point}
    return BoundaryEncoding.from_json({k: v for k, v in data.items() if v is not None})


def _row(
    pos: int,
    entry: contract.Split,
    *,
    check: str,
    backend: str,
    precision: str,
    encoding: str,
    gate: Gate,
    golden: contract.Golden,
    logits: np.ndarray,
    boundary: BoundaryCheck,
    reference: np.ndarray | None = None,
) -> SplitVerification:
    """One verified pair; ``reference`` (default: the full model's golden logits) is what the gate
    compares against (:func:`~isplit_export.verification.checks.judge_pair`)."""
    c = judge_pair(
        golden.logits, logits, golden.labels, gate, reference=reference, agreement_with_reference=True
    )
    reasons = [str(boundary.reason)] if boundary.compared and not boundary.passed else []
    reasons.extend(c.failures)
    return SplitVerification(
        split=pos,
        dir=entry.dir,
        node=entry.node or "",
        check=check,
        backend=backend,
        precision=precision,
        encoding=encoding,
        gate=gate,
        metrics=dict(c.metrics),
        boundary=boundary.to_json(),
        task=dict(c.task),
        passed=not reasons,
        reasons=reasons,
    )


# --------------------------------------------------------------------------------------------------
# the pairs


def verify_split(
    backend: Backend,
    bundle: Path,
    manifest: contract.Manifest,
    pos: int,
    entry: contract.Split,
    pairs: list[PairFiles],
    trust: bool,
) -> list[SplitVerification]:
    """Each of the split's ``pairs`` (:meth:`Backend.verify_pairs`) on the goldens, under the backend's gate.

    Each runner is activated once: it runs the goldens and, where the backend times its pairs, is timed
    (head on one golden image, tail on its output, :func:`~isplit_export.verification.runners.measure_latency`).
    """
    progress.stage(f"split {pos}: goldens and latency on {backend.name}")
    enc = split_encoding(manifest, entry)
    golden_file = contract.split_file(manifest, bundle, entry, "golden")
    golden = contract.load_golden(
        golden_file, str(entry.files["golden"]), contract.golden_budget(manifest, entry)
    )
    input_name = (
        manifest.input_name
    )  # only engines are fed by name; an onnxruntime runner takes its first input
    rows: list[SplitVerification] = []
    for pair in pairs:
        # the INT8 pair (QDQ models, int8 engines) is compared with its own golden outputs where stored
        reference = golden.logits_int8 if pair.precision == "int8" else None
        gate = backend.gate(enc.name, pair.precision, replay=golden.logits_int8 is not None)
        with ExitStack() as stack:
            head = stack.enter_context(backend.runner(pair.head, input_name=input_name, trust=trust))
            tail = stack.enter_context(backend.runner(pair.tail, input_name="boundary", trust=trust))
            boundary, logits = run_pair(head, tail, golden.input, encoding=enc)
            latency = None
            if backend.timing_runs is not None:
                ms = measure_latency({"head": head, "tail": tail}, golden.input, runs=backend.timing_runs)
                latency = {k: float(rounded(v, 4, decimals=True) or 0.0) for k, v in ms.items()}
        row = _row(
            pos,
            entry,
            check=pair.check,
            backend=backend.name,
            precision=pair.precision,
            encoding=enc.name,
            gate=gate,
            golden=golden,
            logits=logits,
            boundary=backend.check_boundary(golden.boundary, boundary, gate, enc, pair.precision),
            reference=reference,
        )
        row.latency_ms = latency
        rows.append(row)
    return rows
