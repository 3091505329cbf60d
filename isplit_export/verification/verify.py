"""Re-check a bundle anywhere: re-hash its files, re-run its goldens, apply the gates.

Torch-free on purpose (numpy, onnx, onnxruntime): ``isplit-export verify`` runs in the Jetson
container from ``Dockerfile.jetson``, which has no PyTorch. The backend is looked up in the one
registry (:mod:`isplit_export.verification.backends`), which says which pairs it runs, opens them as
runners (:mod:`isplit_export.verification.runners`) and names their gates; TensorRT is imported only
when a ``TrtRunner`` activates (``--backend tensorrt``).

What is checked, in order:

1. ``manifest.json`` is readable and has schema ``isplit.bundle/1`` (else :class:`BadInputError`);
2. every file listed in the manifest's ``files`` and ``report.md`` (against ``run.report_sha256``)
   hashes as recorded (else :class:`GateFailedError` naming the file). Files *not* listed are
   ignored: ``verify.json``, which verify itself writes, is an output, not part of the bundle;
3. for each split, the golden ``input`` goes through head then tail; the transmitted boundary is
   compared with the golden ``boundary`` and the logits with the golden ``logits`` (from the full
   PyTorch model) under the backend's gate (:meth:`isplit_export.verification.backends.Backend.gate`).
   A failed gate does not raise: it gives ``outcome="gate-failed"`` (the CLI maps it to exit 1);
4. the export's own gates (``splits[i].verification``, measured on the machine in ``manifest.machine``)
   are reported next to the replay: when they failed, a replay that passes gives
   ``outcome="export-failed"`` (exit 1), never a bare ``passed``.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from isplit_export import contract
from isplit_export.backend_names import ONNXRUNTIME
from isplit_export.errors import BadInputError, first_line
from isplit_export.exporting.encoding import ENCODINGS, BoundaryEncoding
from isplit_export.exporting.onnx_utils import this_machine
from isplit_export.files import json_dumps, write_text_atomic
from isplit_export.numbers import rounded
from isplit_export.verification.backends import Backend, PairFiles, backend_named
from isplit_export.verification.checks import check_pair
from isplit_export.verification.gates import Gate
from isplit_export.verification.outcome import BundleVerification, SplitVerification
from isplit_export.verification.runners import measure_latency, run_pair

SCHEMA = contract.SCHEMA
VERIFY_FILE = contract.VERIFY_FILE
"""Written into the bundle by :func:`verify_bundle`; not in the manifest, so never hashed."""


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
    boundary: dict[str, Any],
    reference: np.ndarray | None = None,
) -> SplitVerification:
    """One verified pair; ``reference`` (default: the full model's golden logits) is what the gate
    compares against (:func:`~isplit_export.verification.checks.check_pair`)."""
    c = check_pair(
        golden.logits, logits, golden.labels, gate, reference=reference, agreement_with_reference=True
    )
    reasons = [str(boundary["reason"])] if boundary.get("compared") and not boundary["passed"] else []
    reasons.extend(c["gate"]["failures"])
    return SplitVerification(
        split=pos,
        dir=entry.dir,
        node=entry.node or "",
        check=check,
        backend=backend,
        precision=precision,
        encoding=encoding,
        gate=gate,
        metrics=c["metrics"],
        boundary=boundary,
        task=c["task"],
        passed=not reasons,
        reasons=reasons,
    )


# --------------------------------------------------------------------------------------------------
# the pairs


def _verify_split(
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


# --------------------------------------------------------------------------------------------------
# entry point


def verify_bundle(
    bundle: Path | str,
    *,
    backend: str = ONNXRUNTIME,
    split: int | None = None,
    write: bool = True,
    expect_sha256: str | None = None,
    report: Path | None = None,
    trust_engines: bool = False,
) -> BundleVerification:
    """Re-hash ``bundle`` and re-run its goldens on ``backend``; see the module docstring.

    ``split`` restricts the golden runs to split N (1-based, the ``NN`` of ``splits/NN-*``); the
    hashes are always checked for the whole bundle. ``expect_sha256`` pins the manifest to the value CI
    published (:func:`isplit_export.contract.check_expected_sha256`). With ``write`` the result goes to
    ``report`` or else ``bundle/verify.json`` (an output of verify, not part of the hashed bundle).
    ``trust_engines`` deserialises engines that ``build-engines`` did not build on this machine
    (:mod:`isplit_export.targets.engine_trust`); without it they are refused (exit 2).

    Raises:
        BadInputError: unknown backend, unreadable/invalid manifest, split out of range.
        GateFailedError: a bundle file is missing or modified, or the manifest is not the expected one.
        NotRunError: ``tensorrt`` without TensorRT here, or engines not built yet.
        TechnicalError: onnxruntime / TensorRT failed to load or run a model.
    """
    bundle = Path(bundle)
    runtime = backend_named(backend)
    if expect_sha256 is not None:
        expect_sha256 = contract.check_sha256_text(expect_sha256, "--expect-sha256")
    m = contract.read_manifest(bundle)
    contract.check_expected_sha256(m, expect_sha256)
    manifest = m
    selected = contract.select_splits(manifest, split)
    contract.check_files(bundle, manifest)
    pairs = runtime.verify_pairs(manifest, bundle, [entry for _, entry in selected], trust=trust_engines)
    rows = [
        row
        for (pos, entry), p in zip(selected, pairs, strict=True)
        for row in _verify_split(runtime, bundle, manifest, pos, entry, p, trust_engines)
    ]
    positions = {pos for pos, _ in selected}
    export = [v for v in m.export_verdicts if v.split in positions]
    replayed = bool(rows) and all(r.passed for r in rows)
    result = BundleVerification(
        bundle=bundle,
        backend=backend,
        outcome=_outcome(replayed, all(v.passed for v in export)),
        rows=rows,
        manifest_sha256=m.sha256,
        pinned=expect_sha256 is not None,
        export=export,
        export_machine=m.machine,
        machine=this_machine(),
    )
    if write:
        write_verification(result, report)
    return result


def _outcome(replayed: bool, exported: bool) -> str:
    """``gate-failed`` when the replay here failed, else ``export-failed`` when the export's gates had, else ``passed``."""
    if not replayed:
        return "gate-failed"
    return "passed" if exported else "export-failed"


def write_verification(result: BundleVerification, report: Path | None = None) -> Path:
    """Write ``verify.json`` to ``report`` (default: into the bundle); one line when it cannot."""
    path = Path(report) if report is not None else result.bundle / VERIFY_FILE
    try:
        write_text_atomic(path, json_dumps(result.to_json()))
    except OSError as e:
        raise BadInputError(
            f"cannot write {path} ({first_line(e)}): the results are above; pass --report PATH or --no-write "
            "(e.g. for a read-only bundle)"
        ) from e
    return path
