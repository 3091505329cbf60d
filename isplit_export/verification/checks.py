"""Judging a pair, once: the task metric, the pair check against a gate, and the boundary/code checks.

Export (:mod:`isplit_export.jobs.export`), ``verify`` (:mod:`isplit_export.verification.verify`),
the bottleneck and the study all judge a head/tail pair with these functions, so "how a pair is
judged" has one definition. Torch-free (numpy only): ``verify`` runs them on a device without PyTorch.

- :func:`task_metric`: top-1 accuracy on the known labels, else top-1 agreement with the full model;
  on held-out images with its Wilson 95 % interval (:func:`~isplit_export.verification.metrics.proportion_ci`);
- :func:`judge_pair`: the logits of a pair against reference logits under a :class:`Gate`, plus the task,
  as a :class:`PairCheck` (:func:`check_pair` is its JSON, the manifest's check block);
- :func:`served_check` / :func:`unjudged`: a pair judged over the wire by ``run`` (``run.json``);
- :func:`compare_boundary`: a transmitted boundary against the golden one (dtype, shape, steps or tolerance),
  as a :class:`BoundaryCheck`;
- :func:`check_code_pair`: a bottleneck pair, held to the fp32 gate against the PyTorch pair *with* its
  bottleneck, and its code within one quantization step of PyTorch's;
- :func:`cui_order`: does the CUI order hold over the exported splits (Spearman of CUI vs task).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from isplit_export.contract import ServedCheck, Split
from isplit_export.numbers import rounded
from isplit_export.stats import proportion_ci, spearman
from isplit_export.verification.gates import GATES, Gate
from isplit_export.verification.metrics import compare_logits

Rounding = Callable[[float | None], float | None]
"""How a check rounds its numbers for JSON (the identity for ``verify.json``)."""

BOUNDARY_FLOAT_TOLERANCE = {"float32": 1e-4, "float16": 2e-3}
"""Max ``|got - golden| / max|golden|`` for a float boundary on onnxruntime. The golden boundary
comes from onnxruntime too, so only the CPU (x86 vs ARM kernels) differs: ~1e-6 for float32; for
float16 one rounding may land on the neighbouring value, <= 2^-10 relative to the largest element."""

BOUNDARY_MAX_STEP = 1
"""Max ``|got - golden|`` in quantization steps for a uint8 boundary: a float value that sits on a
rounding edge may round either way on another CPU, nothing more."""

CODE_MAX_ABS_REL = 1e-3
"""Max relative distance of a float bottleneck code from PyTorch's (an fp16 code rounds once)."""


def _raw(v: float | None) -> float | None:
    return v


def held_out_rounding(v: float | None) -> float | None:
    """Nine significant digits, non-finite values as None: the bottleneck's and the study's rounding."""
    return rounded(v, finite=True)


def task_metric(
    full: np.ndarray,
    got: np.ndarray,
    labels: np.ndarray,
    *,
    held_out: bool = False,
    rnd: Rounding = _raw,
    agreement_with: np.ndarray | None = None,
) -> dict[str, Any]:
    """Top-1 accuracy of ``got`` on the known labels (``>= 0``), else top-1 agreement with ``full``.

    ``full`` are the full model's logits on the same images. ``held_out`` adds the Wilson 95 % interval
    (``ci95``), the number of images and ``held_out: true``: the images were not used for training.
    ``agreement_with`` replaces ``full`` as the logits the agreement is counted against (``verify``
    counts a replayed INT8 pair's agreement against its own golden logits).
    """
    f, g = np.asarray(full), np.asarray(got)
    lab = np.asarray(labels).reshape(-1)
    same = f.shape == g.shape and g.size > 0
    known = lab >= 0
    if same and known.any():
        pred = g.reshape(g.shape[0], -1).argmax(1)
        metric, k, n = "accuracy", int((pred[known] == lab[known]).sum()), int(known.sum())
        full_value = float((f.reshape(f.shape[0], -1).argmax(1)[known] == lab[known]).mean())
    else:
        metric, full_value = "agreement", 1.0
        if agreement_with is not None:
            f = np.asarray(agreement_with)
            same = f.shape == g.shape and g.size > 0
        if same:
            agree = g.reshape(g.shape[0], -1).argmax(1) == f.reshape(f.shape[0], -1).argmax(1)
            k, n = int(agree.sum()), len(agree)
        else:
            k, n = 0, 0
    value = k / n if n else float("nan")
    task: dict[str, Any] = {"metric": metric, "value": rnd(value)}
    if held_out:
        lo, hi = proportion_ci(k, n)
        task.update(ci95=[rnd(lo), rnd(hi)], images=n, held_out=True)
    return {**task, "full_model": rnd(full_value), "drop": rnd(full_value - value)}


def judge(
    reference: np.ndarray, got: np.ndarray, gate: Gate, rnd: Rounding = _raw
) -> tuple[dict[str, float | None], bool, list[str]]:
    """The one judgement of a pair's logits ``got`` against ``reference`` under ``gate``: the metrics
    (:func:`compare_logits`, through ``rnd``), passed, and the failure lines. Logits of another shape
    than the reference fail the gate with the reason, they do not raise. ``check_pair`` (export, verify)
    and ``isplit-export run`` (goldens through the server, served vs local pair) all judge here."""
    try:
        metrics = {k: rnd(v) for k, v in compare_logits(reference, got).items()}
        ok, reasons = gate.check(metrics)  # type: ignore[arg-type]
    except ValueError as e:  # e.g. the tail's logits have another shape than the reference
        return {}, False, [str(e)]
    return metrics, ok, reasons


def served_check(
    reference: np.ndarray, got: np.ndarray, gate: Gate, *, images: int, distinct_compared: int | None = None
) -> ServedCheck:
    """A pair judged over the wire (``run.json``'s ``goldens`` and ``vs_local_pair``): :func:`judge`, as a
    :class:`~isplit_export.contract.ServedCheck` (its metrics are rounded when it is written)."""
    metrics, ok, reasons = judge(reference, got, gate)
    return ServedCheck(gate.name, ok, tuple(reasons), metrics, images, distinct_compared)


def unjudged(gate: Gate, reason: str, *, images: int, distinct_compared: int | None = None) -> ServedCheck:
    """A served check that could not compare anything (``reason``, e.g. no request succeeded): failed."""
    return ServedCheck(gate.name, False, (reason,), None, images, distinct_compared)


@dataclass(frozen=True)
class PairCheck:
    """A pair judged once (:func:`judge_pair`): its metrics, the gate's outcome and the task metric."""

    metrics: Mapping[str, float | None]
    """:func:`compare_logits` through the check's rounding ({} when the logits could not be compared)."""
    gate: Gate
    passed: bool
    failures: tuple[str, ...]
    task: Mapping[str, Any]
    """:func:`task_metric`: ``metric``, ``value``, ``full_model``, ``drop`` (and ``ci95`` held out)."""

    def gate_json(self) -> dict[str, Any]:
        """The check's ``gate`` block: the gate's limits, ``passed`` and ``failures``."""
        return {**self.gate.to_json(), "passed": self.passed, "failures": list(self.failures)}

    def to_json(self) -> dict[str, Any]:
        """The manifest's check block: ``metrics``, ``gate`` (:meth:`gate_json`), ``task``."""
        return {"metrics": dict(self.metrics), "gate": self.gate_json(), "task": dict(self.task)}


def judge_pair(
    full: np.ndarray,
    got: np.ndarray,
    labels: np.ndarray,
    gate: Gate,
    *,
    reference: np.ndarray | None = None,
    rnd: Rounding = _raw,
    held_out: bool = False,
    agreement_with_reference: bool = False,
) -> PairCheck:
    """The pair's logits ``got`` against ``reference`` (default ``full``) under ``gate``, and its task.

    The metrics are :func:`compare_logits`'s; the task is :func:`task_metric` (accuracy against the
    labels and the full model; without labels, agreement with the full model, or with ``reference``
    if ``agreement_with_reference``). Logits of another shape than the reference fail the gate with
    the reason, they do not raise.
    """
    metrics, ok, reasons = judge(full if reference is None else reference, got, gate, rnd)
    task = task_metric(
        full,
        got,
        labels,
        held_out=held_out,
        rnd=rnd,
        agreement_with=reference if agreement_with_reference else None,
    )
    return PairCheck(metrics, gate, ok, tuple(reasons), task)


def check_pair(
    full: np.ndarray, got: np.ndarray, labels: np.ndarray, gate: Gate, *, rnd: Rounding = _raw
) -> dict[str, Any]:
    """The manifest's check block of :func:`judge_pair` against ``full`` (what the exporter writes per pair)."""
    return judge_pair(full, got, labels, gate, rnd=rnd).to_json()


def check_int8_code_pair(
    fp32_logits: np.ndarray, q_logits: np.ndarray, full: np.ndarray, labels: np.ndarray
) -> dict[str, Any]:
    """The ``int8-qdq`` check of a bottleneck pair: the gate against the exported fp32 pair *with* its bottleneck.

    The int8 gate measures what quantization changed. Against the full model it would gate the
    bottleneck's own distillation error, which no precision can remove (docs/int8.md) and which the
    fp32 pair's tier 1 does not gate either. That cost stays visible: the held-out task measure and
    ``metrics_vs_full_model`` are both against the full model.
    """
    check = judge_pair(full, q_logits, labels, GATES["int8-qdq"], reference=fp32_logits, rnd=rounded)
    return {
        "reference": "fp32 pair with its bottleneck",
        "metrics": dict(check.metrics),
        "metrics_vs_full_model": {k: rounded(v) for k, v in compare_logits(full, q_logits).items()},
        "gate": check.gate_json(),
        "task": task_metric(full, q_logits, labels, held_out=True, rnd=held_out_rounding),
    }


@dataclass(frozen=True)
class BoundaryCheck:
    """A transmitted boundary against the golden one (:func:`compare_boundary`), or why it was not compared.

    ``max_step`` for an integer boundary, ``max_abs_rel`` for a float one, each under its ``limit``;
    neither when the dtypes or shapes differ (``reason`` says which).
    """

    compared: bool
    passed: bool | None = None
    """None when not compared."""
    reason: str | None = None
    """Why it failed (None when it passed)."""
    dtype: str | None = None
    shape: tuple[int, ...] = ()
    max_step: int | None = None
    max_abs_rel: float | None = None
    limit: float | None = None
    note: str | None = None
    """Why it was not compared."""

    def to_json(self) -> dict[str, Any]:
        """The block ``verify.json`` writes per row (``boundary``)."""
        if not self.compared:
            return {"compared": False, "note": self.note}
        out: dict[str, Any] = {"compared": True, "dtype": self.dtype, "shape": list(self.shape)}
        if self.max_step is not None:
            out |= {"max_step": self.max_step, "limit": self.limit}
        elif self.max_abs_rel is not None:
            out |= {"max_abs_rel": self.max_abs_rel, "limit": self.limit}
        return out | {"passed": self.passed, "reason": self.reason}


def not_compared(note: str) -> BoundaryCheck:
    """A boundary the backend does not compare with the golden one, and why."""
    return BoundaryCheck(compared=False, note=note)


def compare_boundary(
    golden: np.ndarray,
    got: np.ndarray,
    *,
    rel_limit: float | None = None,
    step_limit: int = BOUNDARY_MAX_STEP,
) -> BoundaryCheck:
    """Compare a transmitted boundary with the golden one.

    Integer (uint8) boundaries: ``max_step`` = max ``|got - golden|`` must be <= ``step_limit``.
    Float boundaries: ``max_abs_rel`` = max ``|got - golden| / max|golden|`` must be <= ``rel_limit``
    (default :data:`BOUNDARY_FLOAT_TOLERANCE` for the dtype). Dtype or shape mismatches fail.
    """
    g, a = np.asarray(golden), np.asarray(got)
    dtype, shape = str(a.dtype), tuple(int(d) for d in a.shape)
    reason: str | None
    if a.dtype != g.dtype:
        reason = f"boundary dtype {a.dtype} != golden {g.dtype}"
        return BoundaryCheck(True, False, reason, dtype, shape)
    if a.shape != g.shape:
        reason = f"boundary shape {list(a.shape)} != golden {list(g.shape)}"
        return BoundaryCheck(True, False, reason, dtype, shape)
    if np.issubdtype(g.dtype, np.integer):
        step = int(np.max(np.abs(a.astype(np.int64) - g.astype(np.int64)))) if g.size else 0
        ok = step <= step_limit
        reason = (
            None if ok else f"boundary max_step {step} not <= {step_limit} quantization step(s) from golden"
        )
        return BoundaryCheck(True, ok, reason, dtype, shape, max_step=step, limit=step_limit)
    limit = rel_limit if rel_limit is not None else BOUNDARY_FLOAT_TOLERANCE.get(str(g.dtype), 1e-4)
    g64, a64 = g.astype(np.float64), a.astype(np.float64)
    scale = float(np.max(np.abs(g64))) if g.size else 0.0
    err = float(np.max(np.abs(a64 - g64))) if g.size else 0.0
    rel = err / max(scale, 1e-30)
    ok = rel <= limit  # False for nan
    reason = None if ok else f"boundary max_abs_rel {rel:.6g} not <= {limit:g} from golden"
    return BoundaryCheck(True, ok, reason, dtype, shape, max_abs_rel=rel, limit=limit)


def check_code_pair(
    pair_ref: np.ndarray,
    got: np.ndarray,
    torch_code: np.ndarray,
    code: np.ndarray,
    full: np.ndarray,
    labels: np.ndarray,
) -> dict[str, Any]:
    """Tier 1 and tier 2 for an exported bottleneck pair that sent ``code`` and computed ``got``.

    Tier 1 holds the exported pair to the fp32 gate against ``pair_ref``, the PyTorch tail's logits
    from the very code the exported head sent, and the code to :func:`compare_boundary` against
    ``torch_code`` (PyTorch's code, encoded): one quantization step for uint8 (a float on a rounding
    edge may round either way), :data:`CODE_MAX_ABS_REL` for a float code. Tier 2 is the held-out
    task metric against the original full model (``full``).
    """
    rnd = held_out_rounding
    metrics: dict[str, Any] = {k: rnd(v) for k, v in compare_logits(pair_ref, got).items()}
    res = compare_boundary(torch_code, code, rel_limit=CODE_MAX_ABS_REL, step_limit=1)
    if res.max_step is not None:
        metrics["code_max_step"] = res.max_step
        reason = f"code max_step {res.max_step} not <= 1 quantization step from PyTorch"
    elif res.max_abs_rel is not None:
        metrics["code_max_abs_rel"] = rnd(res.max_abs_rel)
        reason = f"code max_abs_rel {res.max_abs_rel:.3g} not <= {CODE_MAX_ABS_REL:g} from PyTorch"
    else:  # dtype or shape mismatch
        reason = f"code: {res.reason}"
    gate = GATES["fp32"]
    ok, reasons = gate.check({k: v for k, v in metrics.items() if not k.startswith("code_")})
    if not res.passed:
        ok, reasons = False, [*reasons, reason]
    return {
        "reference": "pytorch pair with its bottleneck",
        "metrics": metrics,
        "gate": {**gate.to_json(), "passed": ok, "failures": reasons},
        "task": task_metric(full, got, labels, held_out=True, rnd=rnd),
    }


def cui_order(splits: Sequence[Split], encoding_name: str, full_acc: float | None) -> dict[str, Any]:
    """Does the CUI order hold? Spearman(CUI, measured task value) over the exported splits."""
    values = [
        float(s.task(encoding_name).value or 0.0) for s in splits
    ]  # the writer's splits: always measured
    cuis = [float(s.cui or 0.0) for s in splits]
    rho = spearman(cuis, values) if encoding_name != "fp32" else None
    if encoding_name == "fp32":
        note = "fp32 boundary is lossless: every split measures the same as the full model, so the CUI order is not tested"
        held = None
    elif rho is None:
        note = "all splits measured the same task value: the CUI order is neither confirmed nor contradicted"
        held = None
    else:
        held = rho > 0
        note = f"Spearman(CUI, measured) = {rho:.3f}: the CUI order {'held' if held else 'did not hold'}"
    return {
        "passed": all(s.verification is not None and s.verification.passed for s in splits),
        "full_model_accuracy": rounded(full_acc),
        "cui_vs_task_spearman": rounded(rho),
        "cui_order_held": held,
        "note": note,
    }
