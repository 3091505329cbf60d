"""Judging a pair (verification/checks.py), the one rounding helper and the one latency timer, on small arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from isplit_export.contract import Split
from isplit_export.numbers import rounded
from isplit_export.stats import proportion_ci
from isplit_export.verification.checks import (
    check_code_pair,
    check_pair,
    cui_order,
    held_out_rounding,
    judge_pair,
    served_check,
    task_metric,
    unjudged,
)
from isplit_export.verification.gates import GATES
from isplit_export.verification.runners import median_ms


def _logits(classes: list[int], k: int = 4) -> np.ndarray:
    """One row per image whose argmax is ``classes[i]``."""
    out = np.zeros((len(classes), k), dtype=np.float32)
    out[np.arange(len(classes)), classes] = 1.0
    return out


def test_task_metric_accuracy_on_known_labels_only() -> None:
    full = _logits([0, 1, 2, 3, 0])
    got = _logits([0, 1, 0, 3, 1])
    labels = np.array([0, 1, 2, -1, 1])  # the 4th image is unlabelled: not counted
    t = task_metric(full, got, labels)
    assert t == {"metric": "accuracy", "value": 0.75, "full_model": 0.75, "drop": 0.0}
    held = task_metric(full, got, labels, held_out=True)
    assert list(held) == ["metric", "value", "ci95", "images", "held_out", "full_model", "drop"]
    assert held["images"] == 4 and held["ci95"] == list(proportion_ci(3, 4))


def test_task_metric_agreement_without_labels() -> None:
    full, got = _logits([0, 1, 2, 3]), _logits([0, 1, 2, 2])
    t = task_metric(full, got, np.full(4, -1))
    assert t == {"metric": "agreement", "value": 0.75, "full_model": 1.0, "drop": 0.25}
    other = _logits([0, 1, 2, 2])  # agreement counted against other logits (verify's INT8 replay)
    assert task_metric(full, got, np.full(4, -1), agreement_with=other)["value"] == 1.0
    # logits of another shape: no accuracy, agreement is nan (not an exception)
    bad = task_metric(full, _logits([0, 1, 2, 3], k=5), np.array([0, 1, 2, 3]))
    assert bad["metric"] == "agreement" and math.isnan(bad["value"])


def test_judge_pair_records_failures_and_never_raises_on_shapes() -> None:
    full = np.array([[2.0, 1.0, 0.0], [0.0, 1.0, 2.0]])
    ok = judge_pair(full, full.copy(), np.array([0, 2]), GATES["fp32"])
    assert ok.passed and ok.failures == () and ok.gate.name == "fp32"
    assert ok.metrics["top1_agreement"] == 1.0 and ok.task["metric"] == "accuracy"
    flipped = judge_pair(full, full[::-1].copy(), np.array([0, 2]), GATES["fp32"])
    assert not flipped.passed
    assert any(f.startswith("top1_agreement 0 not >= 1") for f in flipped.failures)
    shape = judge_pair(full, np.zeros((2, 4)), np.array([0, 2]), GATES["fp32"])
    assert not shape.passed and shape.metrics == {}
    assert "logit shapes differ" in shape.failures[0]
    with pytest.raises(AttributeError):
        ok.passed = False  # type: ignore[misc]


def test_check_pair_is_the_judgement_as_the_manifest_writes_it() -> None:
    """The exporter's check block: metrics, then the gate's limits with passed and failures, then the task."""
    full = np.array([[2.0, 1.0, 0.0], [0.0, 1.0, 2.0]])
    flipped = full[::-1].copy()
    block = check_pair(full, flipped, np.array([0, 2]), GATES["int8"], rnd=rounded)
    typed = judge_pair(full, flipped, np.array([0, 2]), GATES["int8"], rnd=rounded)
    assert block == typed.to_json()
    assert list(block) == ["metrics", "gate", "task"]
    assert block["gate"] == {**GATES["int8"].to_json(), "passed": False, "failures": list(typed.failures)}
    assert block["task"] == task_metric(full, flipped, np.array([0, 2]), rnd=rounded)


def test_a_served_check_is_the_same_judgement_typed() -> None:
    """run.json's verdicts (goldens, vs_local_pair) are judged like every pair, and typed for the contract."""
    full = np.array([[2.0, 1.0, 0.0], [0.0, 1.0, 2.0]])
    ok = served_check(full, full.copy(), GATES["fp32"], images=2, distinct_compared=2)
    same = judge_pair(full, full.copy(), np.array([-1, -1]), GATES["fp32"])
    assert ok.passed and ok.gate == "fp32" and dict(ok.metrics or {}) == same.metrics
    assert ok.to_json()["distinct_compared"] == 2 and next(iter(ok.to_json())) == "gate"
    flipped = served_check(full, full[::-1].copy(), GATES["fp32"], images=2)
    assert (
        not flipped.passed
        and flipped.failures == judge_pair(full, full[::-1].copy(), np.array([0, 2]), GATES["fp32"]).failures
    )
    shape = served_check(full, np.zeros((2, 4)), GATES["fp32"], images=2)
    assert not shape.passed and shape.metrics == {} and "logit shapes differ" in shape.failures[0]
    none = unjudged(GATES["fp32"], "no request succeeded", images=0, distinct_compared=0)
    assert none.to_json() == {
        "gate": "fp32",
        "images": 0,
        "distinct_compared": 0,
        "passed": False,
        "failures": ["no request succeeded"],
    }


def test_check_code_pair_holds_the_code_to_one_step() -> None:
    ref = _logits([0, 1, 2])
    code = np.array([[10, 20], [30, 40], [50, 60]], dtype=np.uint8)
    within = check_code_pair(ref, ref.copy(), code + 1, code, ref, np.array([0, 1, 2]))
    assert within["gate"]["passed"] and within["metrics"]["code_max_step"] == 1
    assert within["reference"] == "pytorch pair with its bottleneck" and within["task"]["held_out"] is True
    off = check_code_pair(ref, ref.copy(), code + 2, code, ref, np.array([0, 1, 2]))
    assert not off["gate"]["passed"]
    assert off["gate"]["failures"] == ["code max_step 2 not <= 1 quantization step from PyTorch"]
    fcode = np.array([[1.0, -2.0]], dtype=np.float16)
    near = check_code_pair(ref[:1], ref[:1].copy(), fcode, fcode * np.float16(1.0005), ref[:1], np.array([0]))
    assert near["gate"]["passed"] and 0 < near["metrics"]["code_max_abs_rel"] <= 1e-3


def test_cui_order_sentence() -> None:
    def split(cui: float, value: float, enc: str = "int8") -> Split:
        check = {"gate": {"passed": True, "failures": []}, "task": {"value": value}}
        v = {"passed": True, "failures": [], "checks": {enc: check}}
        return Split.from_json({"dir": "splits/x", "files": {}, "cui": cui, "verification": v}, 0)

    held = cui_order([split(3.0, 0.9), split(2.0, 0.8), split(1.0, 0.5)], "int8", 0.95)
    assert held["cui_order_held"] is True and held["cui_vs_task_spearman"] == 1.0 and held["passed"]
    assert held["note"] == "Spearman(CUI, measured) = 1.000: the CUI order held"
    lossless = cui_order([split(3.0, 0.9, "fp32"), split(2.0, 0.8, "fp32")], "fp32", None)
    assert lossless["cui_order_held"] is None and lossless["cui_vs_task_spearman"] is None


def test_rounded_keeps_each_call_sites_behaviour() -> None:
    assert rounded(1 / 3) == 0.333333333 and rounded(None) is None
    assert math.isnan(rounded(float("nan")))  # type: ignore[arg-type]  # the export's checks keep nan
    assert rounded(float("inf"), finite=True) is None and held_out_rounding(float("nan")) is None
    assert rounded(12.3456789, 6, decimals=True) == 12.345679  # the cost model: 6 decimals
    assert rounded(123456.789, 4) == 123500.0


def test_median_ms_interleaves_and_times_every_call() -> None:
    order: list[str] = []
    calls = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    out = median_ms(calls, warmup=1, runs=3)
    assert set(out) == {"a", "b"} and all(v >= 0 for v in out.values())
    assert order == ["a", "b"] * 4
    with pytest.raises(ZeroDivisionError):
        median_ms({"x": lambda: 1 / 0}, warmup=0, runs=1)
