"""Gates: values, checks with reasons, and the encoding/precision/backend mapping."""

from __future__ import annotations

import itertools
import math

import pytest

from isplit_export.errors import BadInputError
from isplit_export.verification.backends import gate_for
from isplit_export.verification.gates import GATES, Gate

PASSING = {"top1_agreement": 1.0, "max_abs_rel": 0.0, "cosine": 1.0}


def test_every_gate_is_named_by_its_key() -> None:
    assert set(GATES) == {
        "fp32",
        "fp16",
        "int8",
        "int8-qdq",
        "int8-qdq-replay",
        "trt-fp32",
        "trt-fp16",
        "trt-int8",
    }
    for key, gate in GATES.items():
        assert gate.name == key
        assert 0.0 < gate.min_top1_agreement <= 1.0 and 0.0 < gate.min_cosine <= 1.0 and gate.max_abs_rel > 0
        assert gate.check(PASSING) == (True, [])


def test_fp32_gate_is_the_issue_gate() -> None:
    g = GATES["fp32"]
    assert g.min_top1_agreement == 1.0 and g.max_abs_rel == 1e-4
    assert g.check({**PASSING, "max_abs_rel": 1e-4})[0]  # the limit itself passes
    ok, reasons = g.check({**PASSING, "max_abs_rel": 2e-4})
    assert not ok and reasons == ["max_abs_rel 0.0002 not <= 0.0001 (gate fp32)"]


def test_gates_loosen_with_lossier_encodings() -> None:
    order = [GATES[k] for k in ("fp32", "fp16", "int8", "int8-qdq")]
    for tight, loose in itertools.pairwise(order):
        assert loose.min_top1_agreement <= tight.min_top1_agreement
        assert loose.max_abs_rel >= tight.max_abs_rel
        assert loose.min_cosine <= tight.min_cosine


def test_check_reports_every_failure_with_value_and_limit() -> None:
    ok, reasons = GATES["fp16"].check({"top1_agreement": 0.5, "max_abs_rel": 0.5, "cosine": 0.9})
    assert not ok
    assert reasons == [
        "top1_agreement 0.5 not >= 0.95 (gate fp16)",
        "max_abs_rel 0.5 not <= 0.01 (gate fp16)",
        "cosine 0.9 not >= 0.999 (gate fp16)",
    ]


def test_nan_and_missing_metrics_fail() -> None:
    ok, reasons = GATES["int8"].check({**PASSING, "cosine": math.nan})
    assert not ok and reasons[0].startswith("cosine nan")
    ok, reasons = GATES["int8"].check({"cosine": 1.0, "max_abs_rel": 0.0})
    assert not ok and reasons == ["top1_agreement missing (gate int8 needs >= 0.9)"]


def test_gate_for_onnxruntime() -> None:
    assert gate_for("fp32") is GATES["fp32"]
    assert gate_for("fp16") is GATES["fp16"]
    assert gate_for("int8") is GATES["int8"]
    assert gate_for("fp32", "int8") is GATES["int8-qdq-replay"]
    assert gate_for("int8", "int8") is GATES["int8-qdq-replay"]
    with pytest.raises(BadInputError, match="no fp16 pair"):
        gate_for("fp32", "fp16")


def test_gate_for_tensorrt_combines_with_the_boundary_encoding() -> None:
    assert gate_for("fp32", "fp16", "tensorrt") is GATES["trt-fp16"]
    g = gate_for("int8", "fp32", "tensorrt")
    trt, enc = GATES["trt-fp32"], GATES["int8"]
    assert g == Gate(
        "trt-fp32+int8",
        min(trt.min_top1_agreement, enc.min_top1_agreement),
        max(trt.max_abs_rel, enc.max_abs_rel),
        min(trt.min_cosine, enc.min_cosine),
    )


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("fp8",), "unknown boundary encoding"),
        (("fp32", "bf16"), "unknown precision"),
        (("fp32", "fp32", "openvino"), "unknown backend"),
    ],
)
def test_gate_for_rejects_unknown_names(args: tuple[str, ...], match: str) -> None:
    with pytest.raises(BadInputError, match=match):
        gate_for(*args)


def test_to_json() -> None:
    assert GATES["fp32"].to_json() == {
        "name": "fp32",
        "min_top1_agreement": 1.0,
        "max_abs_rel": 1e-4,
        "min_cosine": 0.9999,
    }
