"""What ``verify`` reports: one row per verified pair, the bundle's outcome, and its terminal table.

``verify.json`` is :meth:`BundleVerification.to_json` (schema ``isplit.verify/1``); ``isplit-export
verify`` prints :func:`format_verification`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from isplit_export.contract import ExportVerdict, Machine
from isplit_export.text_table import text_table
from isplit_export.verification.gates import Gate
from isplit_export.version import __version__

VERIFY_SCHEMA = "isplit.verify/1"


def _jsonable(v: Any) -> Any:
    """Non-finite floats become None (JSON has no NaN/inf); containers are converted recursively."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


@dataclass
class SplitVerification:
    """One verified pair of one split: the exported pair, its INT8 QDQ twin, or a TensorRT engine pair.

    ``check`` names the pair (``onnx``, ``onnx-int8-qdq``, ``tensorrt-fp16``...); ``boundary`` is the
    comparison of the transmitted boundary with the golden one; ``task`` is accuracy against the
    golden labels (or top-1 agreement with the full model when no label is known).
    """

    split: int
    dir: str
    node: str
    check: str
    backend: str
    precision: str
    encoding: str
    gate: Gate
    metrics: dict[str, float | None]
    boundary: dict[str, Any]
    task: dict[str, Any]
    passed: bool
    reasons: list[str] = field(default_factory=list)
    latency_ms: dict[str, float] | None = None
    """Median batch-1 latency of the pair's models (``head_ms``, ``tail_ms``): TensorRT engines only."""

    def to_json(self) -> dict[str, Any]:
        """JSON form as written to ``verify.json``."""
        latency = {} if self.latency_ms is None else {"latency_ms": dict(self.latency_ms)}
        return _jsonable(
            {
                "split": self.split,
                "dir": self.dir,
                "node": self.node,
                "check": self.check,
                "backend": self.backend,
                "precision": self.precision,
                "encoding": self.encoding,
                "metrics": dict(self.metrics),
                "boundary": dict(self.boundary),
                "task": dict(self.task),
                "gate": {**self.gate.to_json(), "passed": self.passed, "failures": list(self.reasons)},
                "passed": self.passed,
                **latency,
            }
        )


@dataclass
class BundleVerification:
    """The outcome of :func:`verify_bundle`.

    ``outcome`` is ``passed`` (every row passed and so did the export's gates), ``gate-failed`` (a
    gate or a boundary check failed here) or ``export-failed`` (the replay reproduces the export, but
    the export's own gates failed: a bundle that should not have shipped); the CLI exits 1 for both
    failures. A check that cannot run here raises :class:`NotRunError` instead. ``export`` holds the
    export's gate outcome of each verified split, ``export_machine`` where it was measured (None for a
    bundle that does not record it) and ``machine`` where this replay ran.
    """

    bundle: Path
    backend: str
    outcome: str
    rows: list[SplitVerification] = field(default_factory=list)
    manifest_sha256: str | None = None
    note: str | None = None
    pinned: bool = False
    """True when ``--expect-sha256`` matched: the manifest is the one CI published."""
    export: list[ExportVerdict] = field(default_factory=list)
    export_machine: Machine | None = None
    machine: Machine | None = None

    @property
    def passed(self) -> bool:
        return self.outcome == "passed"

    def to_json(self) -> dict[str, Any]:
        """JSON form (``verify.json``): relocatable, so no absolute path; tied to the manifest by hash."""
        return _jsonable(
            {
                "schema": VERIFY_SCHEMA,
                "tool": {"name": "isplit-export", "version": __version__},
                "manifest_sha256": self.manifest_sha256,
                "manifest_pinned": self.pinned,
                "backend": self.backend,
                "outcome": self.outcome,
                "passed": self.passed,
                "note": self.note,
                "machine": None if self.machine is None else self.machine.to_json(),
                "export": {
                    "passed": all(v.passed for v in self.export) if self.export else None,
                    "machine": None if self.export_machine is None else self.export_machine.to_json(),
                    "splits": [v.to_json() for v in self.export],
                },
                "rows": [r.to_json() for r in self.rows],
            }
        )


PASSED_MEANS = (
    "'passed' proves self-consistency: every file matches manifest.json and the goldens reproduce; it does not "
    "prove where the bundle came from (an attacker can rebuild goldens and re-hash)"
)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.3g}" if abs(v) < 1e-2 and v != 0 else f"{v:.4f}"
    return str(v)


def _export_lines(result: BundleVerification) -> list[str]:
    """The export's gates per split next to the replay, and both machines when they differ."""
    if not result.export:
        return ["export gates: not recorded in this bundle"]
    lines = []
    for v in result.export:
        checks = ", ".join(f"{name} {'pass' if ok else 'FAIL'}" for name, ok in v.checks)
        lines.append(f"export gates {v.split:02d} ({v.dir}): {checks}")
        lines.extend(f"{v.dir} [export]: {reason}" for reason in v.failures)
    here, there = result.machine, result.export_machine
    if there is None:
        lines.append("export machine: not recorded (a bundle of an older isplit-export)")
    if here is not None and there is not None and here.describe() != there.describe():
        lines.append(f"export machine: {there.describe()}")
        lines.append(f"this machine:   {here.describe()}")
        if not here.same_kernels(there):
            lines.append("the two run different INT8 kernels: the replay gate allows for that (docs/int8.md)")
    return lines


def format_verification(result: BundleVerification) -> str:
    """A plain-text table, one line per verified pair, then the reasons of each failure and the outcome."""
    header = ["split", "node", "check", "precision/encoding", "max_abs_rel", "cosine", "top1", "gate"]
    lines = [header]
    for r in result.rows:
        lines.append(
            [
                f"{r.split:02d}",
                r.node,
                r.check,
                f"{r.precision}/{r.encoding}",
                _fmt(r.metrics.get("max_abs_rel")),
                _fmt(r.metrics.get("cosine")),
                _fmt(r.metrics.get("top1_agreement")),
                f"{'pass' if r.passed else 'FAIL'} ({r.gate.name})",
            ]
        )
    text = text_table(lines)
    for r in result.rows:
        text.extend(f"{r.dir} [{r.check}]: {reason}" for reason in r.reasons)
    text.extend(_export_lines(result))
    suffix = f": {result.note}" if result.note else ""
    if result.manifest_sha256 is not None:
        text.append(PASSED_MEANS + ".")
        if result.pinned:
            text.append(
                f"manifest sha256 {result.manifest_sha256} matches --expect-sha256: this is the published bundle"
            )
        else:
            text.append(
                f"manifest sha256 {result.manifest_sha256}: pin it with --expect-sha256 to prove provenance"
            )
    text.append(f"{result.backend}: {result.outcome}{suffix}")
    return "\n".join(text)
