"""Re-check a bundle anywhere: re-hash its files, re-run its goldens, apply the gates.

Torch-free on purpose (numpy, onnx, onnxruntime): ``isplit-export verify`` runs in the Jetson
container from ``Dockerfile.jetson``, which has no PyTorch. TensorRT is imported lazily, only for
``backend="tensorrt"`` (through :mod:`isplit_export.targets.trt_backend`).

What is checked, in order:

1. ``manifest.json`` is readable and has schema ``isplit.bundle/1`` (else :class:`BadInputError`);
2. every file listed in the manifest's ``files`` and ``report.md`` (against ``run.report_sha256``)
   hashes as recorded (else :class:`GateFailedError` naming the file). Files *not* listed are
   ignored: ``verify.json``, which verify itself writes, is an output, not part of the bundle;
3. for each split, the golden ``input`` goes through head then tail; the transmitted boundary is
   compared with the golden ``boundary`` and the logits with the golden ``logits`` (from the full
   PyTorch model) under :func:`isplit_export.verification.gates.gate_for`. A failed gate does not raise: it
   gives ``outcome="gate-failed"`` (the CLI maps it to exit 1);
4. the export's own gates (``splits[i].verification``, measured on the machine in ``manifest.machine``)
   are reported next to the replay: when they failed, a replay that passes gives
   ``outcome="export-failed"`` (exit 1), never a bare ``passed``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from isplit_export import contract
from isplit_export.errors import BadInputError, NotRunError, first_line
from isplit_export.exporting.encoding import ENCODINGS, BoundaryEncoding
from isplit_export.exporting.onnx_utils import this_machine
from isplit_export.files import json_dumps, write_text_atomic
from isplit_export.verification.checks import (
    BOUNDARY_FLOAT_TOLERANCE,
    BOUNDARY_MAX_STEP,
    check_pair,
    compare_boundary,
)
from isplit_export.verification.gates import GATES, PRECISIONS, VERIFY_BACKENDS, Gate, gate_for
from isplit_export.verification.outcome import BundleVerification, SplitVerification
from isplit_export.verification.runtime import run_pair_onnx, run_pair_trt, time_engines

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
    golden: Mapping[str, np.ndarray],
    logits: np.ndarray,
    boundary: dict[str, Any],
    reference: np.ndarray | None = None,
) -> SplitVerification:
    """One verified pair; ``reference`` (default: the full model's golden logits) is what the gate
    compares against (:func:`~isplit_export.verification.checks.check_pair`)."""
    c = check_pair(golden["logits"], logits, golden["labels"], gate, reference=reference, agreement_with_reference=True)
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
# backends


def _verify_onnx(
    bundle: Path, manifest: contract.Manifest, pos: int, entry: contract.Split
) -> list[SplitVerification]:
    """The exported pair (gate of the boundary encoding) and, if listed, the INT8 QDQ pair."""
    enc = split_encoding(manifest, entry)
    golden_rel = entry.files.get("golden")
    golden = contract.load_golden(contract.split_file(manifest, bundle, entry, "golden"), str(golden_rel),
                                  contract.golden_budget(manifest, entry))
    head, tail = contract.split_file(manifest, bundle, entry, "head"), contract.split_file(manifest, bundle, entry, "tail")
    boundary, logits = run_pair_onnx(head, tail, golden["input"])
    rows = [
        _row(
            pos,
            entry,
            check="onnx",
            backend="onnxruntime",
            precision="fp32",
            encoding=enc.name,
            gate=gate_for(enc.name),
            golden=golden,
            logits=logits,
            boundary=compare_boundary(golden["boundary"], boundary),
        )
    ]
    has_q = ("head_int8" in entry.files, "tail_int8" in entry.files)
    if any(has_q) and not all(has_q):
        raise BadInputError(
            f"manifest.json split {entry.dir} lists only one of head_int8/tail_int8: rebuild the bundle"
        )
    if all(has_q):
        qh, qt = (
            contract.split_file(manifest, bundle, entry, "head_int8"),
            contract.split_file(manifest, bundle, entry, "tail_int8"),
        )
        _, q_logits = run_pair_onnx(qh, qt, golden["input"])
        note = "not compared: the QDQ head quantizes inside, its boundary differs from the golden by design"
        replay = "logits_int8" in golden
        rows.append(
            _row(
                pos,
                entry,
                check="onnx-int8-qdq",
                backend="onnxruntime",
                precision="int8",
                encoding=enc.name,
                gate=gate_for(enc.name, "int8") if replay else GATES["int8-qdq"],
                golden=golden,
                logits=q_logits,
                boundary={"compared": False, "note": note},
                reference=golden.get("logits_int8"),
            )
        )
    return rows


def _engines(split_dir: Path) -> list[str]:
    """Precisions with both ``engines/head.<p>.engine`` and ``engines/tail.<p>.engine`` present."""
    def present(name: str) -> bool:  # inside the split, reached through no symlink (contract.bundle_path)
        return contract.bundle_path(split_dir, f"{contract.ENGINES_DIR}/{name}", "engines").is_file()

    return [p for p in PRECISIONS if present(f"head.{p}.engine") and present(f"tail.{p}.engine")]


def _verify_tensorrt(
    bundle: Path, manifest: contract.Manifest, selected: list[tuple[int, contract.Split]], trust: bool = False
) -> list[SplitVerification]:
    """Every engine pair present in the selected splits, after checking that each split has one and that
    every engine was built on this machine by ``build-engines`` (or ``trust``: ``--trust-engines``)."""
    from isplit_export.targets import engine_trust, trt_backend  # lazy: imports tensorrt

    if not trt_backend.tensorrt_available():
        raise NotRunError(
            "TensorRT is not available on this machine: run verify --backend tensorrt on the device "
            "(Dockerfile.jetson), or use --backend onnxruntime"
        )
    plan: list[tuple[int, contract.Split, list[str]]] = []
    for pos, entry in selected:
        precisions = _engines(contract.bundle_path(bundle, entry.dir))
        if not precisions:
            raise NotRunError(
                f"no engines in {entry.dir}/engines: run build_engines.sh or isplit-export build-engines first"
            )
        plan.append((pos, entry, precisions))
    for _, entry, precisions in plan:
        trt_backend.check_engine_record(contract.bundle_path(bundle, entry.dir))
        edir = contract.bundle_path(bundle, entry.dir) / contract.ENGINES_DIR
        for p in precisions:  # all refused before any engine is deserialised
            for part in ("head", "tail"):
                engine_trust.require_trusted_file(edir / f"{part}.{p}.engine", trust=trust)

    input_name = manifest.input_name
    rows: list[SplitVerification] = []
    for pos, entry, precisions in plan:
        enc = split_encoding(manifest, entry)
        golden = contract.load_golden(contract.split_file(manifest, bundle, entry, "golden"), str(entry.files["golden"]),
                                      contract.golden_budget(manifest, entry))
        edir = contract.bundle_path(bundle, entry.dir) / "engines"
        for p in precisions:
            gate = gate_for(enc.name, p, "tensorrt")
            boundary, logits = run_pair_trt(
                trt_backend,
                edir / f"head.{p}.engine",
                edir / f"tail.{p}.engine",
                golden["input"],
                enc,
                input_name,
                trust=trust,
            )
            # TF32 / fp16 / int8 kernels move the boundary too: hold it to the gate's relative bound.
            rel = max(BOUNDARY_FLOAT_TOLERANCE.get(enc.dtype, 1e-4), gate.max_abs_rel)
            steps = max(BOUNDARY_MAX_STEP, math.ceil(gate.max_abs_rel * 255))
            bcheck = compare_boundary(golden["boundary"], boundary, rel_limit=rel, step_limit=steps)
            row = _row(
                    pos,
                    entry,
                    check=f"tensorrt-{p}",
                    backend="tensorrt",
                    precision=p,
                    encoding=enc.name,
                    gate=gate,
                    golden=golden,
                    logits=logits,
                    boundary=bcheck,
                    # int8 engines come from the QDQ pair: compare with its golden outputs when stored
                    reference=golden.get("logits_int8") if p == "int8" else None,
                )
            head_e, tail_e = edir / f"head.{p}.engine", edir / f"tail.{p}.engine"
            row.latency_ms = time_engines(trt_backend, head_e, tail_e, golden["input"], input_name, trust=trust)
            rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------------
# entry point


def verify_bundle(
    bundle: Path | str, *, backend: str = "onnxruntime", split: int | None = None, write: bool = True,
    expect_sha256: str | None = None, report: Path | None = None, trust_engines: bool = False,
) -> BundleVerification:  # fmt: skip
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
    if backend not in VERIFY_BACKENDS:
        raise BadInputError(f"unknown backend {backend!r}: choose {' or '.join(VERIFY_BACKENDS)}")
    if expect_sha256 is not None:
        expect_sha256 = contract.check_sha256_text(expect_sha256, "--expect-sha256")
    m = contract.read_manifest(bundle)
    contract.check_expected_sha256(m, expect_sha256)
    manifest = m
    selected = contract.select_splits(manifest, split)
    contract.check_files(bundle, manifest)
    if backend == "onnxruntime":
        rows = [row for pos, entry in selected for row in _verify_onnx(bundle, manifest, pos, entry)]
    else:
        rows = _verify_tensorrt(bundle, manifest, selected, trust_engines)
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

