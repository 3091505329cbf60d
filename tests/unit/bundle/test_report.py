"""report.md from a hand-made manifest: sections, numbers, the CUI-order sentence, robustness."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from isplit_export.bundle.report import render_report
from isplit_export.errors import BadInputError

GATE_INT8 = {"name": "int8", "min_top1_agreement": 0.9, "max_abs_rel": 0.1, "min_cosine": 0.99}


def _split(
    pos: int, index: int, node: str, cui: float, value: float, *, passed: bool = True
) -> dict[str, Any]:
    rel = f"splits/{pos:02d}-{node}"
    failures = [] if passed else ["cosine 0.9 not >= 0.99 (gate int8)"]
    return {
        "dir": rel,
        "rank": pos,
        "index": index,
        "node": node,
        "module": node.replace("_", "."),
        "cui": cui,
        "log10_cui": None,
        "head_flops_share": 0.31,
        "boundary": {
            "encoding": "int8",
            "dtype": "uint8",
            "scale": 0.02,
            "zero_point": 0,
            "shape": ["batch", 128, 28, 28],
            "bytes_per_image": 100352,
            "fp32_bytes_per_image": 401408,
        },
        "files": {
            "head": f"{rel}/head.onnx",
            "tail": f"{rel}/tail.onnx",
            "golden": f"{rel}/golden.npz",
            "build_engines": f"{rel}/build_engines.sh",
            "engine_plan": f"{rel}/engine_plan.json",
        },
        "verification": {
            "checks": {
                "int8": {
                    "metrics": {
                        "max_abs": 0.0125,
                        "max_abs_rel": 0.0021,
                        "max_rel": 0.5,
                        "cosine": 0.99987,
                        "top1_agreement": 0.95,
                    },
                    "gate": {**GATE_INT8, "passed": passed, "failures": failures},
                    "task": {
                        "metric": "accuracy",
                        "value": value,
                        "full_model": 0.91,
                        "drop": round(0.91 - value, 6),
                    },
                }
            },
            "passed": passed,
            "failures": [f"int8: {f}" for f in failures],
        },
    }


def _ranking() -> dict[str, Any]:
    rows = [
        ("features_1", [64, 224, 224], 0.0012, None),
        ("layer2", [128, 28, 28], 0.0123, 1),
        ("layer3", [256, 14, 14], 0.0050, 3),
        ("layer3_1", [256, 14, 14], 0.0040, None),
        ("layer4", [512, 7, 7], 0.0080, 2),
    ]
    cands = []
    for i, (node, shape, cui, rank) in enumerate(rows):
        cands.append(
            {
                "index": i,
                "node": node,
                "module": node.replace("_", "."),
                "shape": shape,
                "boundary_bytes": 4 * shape[0] * shape[1] * shape[2],
                "head_flops_share": 0.1 * (i + 1),
                "cui": cui,
                "log10_cui": None,
                "local_max": rank is not None,
                "rank": rank,
            }
        )
    return {
        "schema": "isplit.ranking/1",
        "model": "resnet50",
        "weights": "none",
        "images": 19,
        "classes": None,
        "score": "top",
        "top": 3,
        "input_bytes": 602112,
        "candidates": cands,
    }


def _manifest() -> dict[str, Any]:
    splits = [
        _split(1, 1, "layer2", 0.0123, 0.90),
        _split(2, 4, "layer4", 0.0080, 0.85),
        _split(3, 2, "layer3", 0.0050, 0.80, passed=False),
    ]
    return {
        "schema": "isplit.bundle/1",
        "tool": {"name": "isplit-export", "version": "0.1.0"},
        "model": {"name": "resnet50", "weights": "none", "weights_sha256": "ab" * 32, "num_classes": 1000},
        "input": {"name": "input", "shape": ["batch", 3, 224, 224], "dtype": "float32", "layout": "NCHW"},
        "opset": 17,
        "target": {
            "name": "jetson-orin-nx",
            "description": "Jetson Orin NX",
            "backend": "tensorrt",
            "jetpack": "6.2",
            "tensorrt_version": "10.3",
            "cuda": "12.6",
        },
        "boundary_encoding": "int8",
        "ranking": {"file": "ranking.json", "images": 19, "classes": None, "score": "top", "top": 3},
        "calibration": {"source": "skimage.data", "count": 19},
        "files": {},
        "splits": splits,
        "verification": {
            "passed": False,
            "cui_vs_task_spearman": 1.0,
            "cui_order_held": True,
            "note": "Spearman(CUI, measured) = 1.000: the CUI order held",
        },
        "run": {
            "latency_ms": {
                "splits/01-layer2": {"head_ms": 1.5, "tail_ms": 2.25, "full_ms": 3.5, "ratio": 1.0714285714},
                "splits/02-layer4": {"head_ms": 3.0, "tail_ms": 0.75, "full_ms": 3.5},
            }
        },
    }


SECTIONS = [
    "## CUI and layer size",
    "## Ranking",
    "## Exported splits",
    "## Does the CUI order hold?",
    "## Latency",
    "## TensorRT build plan",
    "## How to re-verify",
]


def test_report_has_every_section_in_order() -> None:
    text = render_report(_manifest(), _ranking())
    assert text.startswith("# I-Split export: resnet50 (none) for jetson-orin-nx, int8 boundary\n")
    positions = [text.index(s) for s in SECTIONS]
    assert positions == sorted(positions)
    assert "![CUI](cui.png)" in text and "![CDE](cde.png)" in text
    assert "isplit-export verify <bundle>" in text
    assert "**Verification: FAIL**" in text
    assert text.endswith("\n") and "\n\n\n" not in text


def test_ranking_table_lists_ranked_candidates_in_rank_order() -> None:
    text = render_report(_manifest(), _ranking())
    table = text.split("## Ranking")[1].split("##")[0]
    assert "5 valid cut points, 3 local maxima" in table
    rows = [ln for ln in table.splitlines() if ln.startswith("| ") and not ln.startswith("| rank")]
    assert [r.split("|")[3].strip() for r in rows] == ["`layer2`", "`layer4`", "`layer3`"]
    assert rows[0] == (
        "| 1 | 1 | `layer2` | `layer2` | 128x28x28 | 392.0 | 20.0 % | 0.0123 | - | 01-layer2 |"
    )
    assert "`features_1`" not in table  # not a local maximum


def test_split_details_numbers_gate_and_verdict() -> None:
    text = render_report(_manifest(), _ranking())
    splits = text.split("## Exported splits")[1].split("## Does")[0]
    assert "### `splits/01-layer2`: CUI rank 1, cut after `layer2`" in splits
    assert "100352 bytes per image (98.0 KiB), 25.0 % of fp32 (401408 bytes)" in splits
    assert "scale 0.02, zero point 0" in splits
    assert (
        "Equivalence `int8`: **PASS**, max_abs 0.0125, max_abs_rel 0.0021, max_rel 0.5, cosine 0.99987"
        in splits
    )
    assert "gate int8: top-1 agreement >= 0.9, max_abs_rel <= 0.1, cosine >= 0.99" in splits
    assert "accuracy 90.0 % (full model 91.0 %, drop 1.0 pp)" in splits
    third = splits.split("splits/03-layer3")[1]
    assert "**FAIL**" in third and "failed: cosine 0.9 not >= 0.99 (gate int8)" in third


def test_cui_order_sentence_when_spearman_is_known() -> None:
    text = render_report(_manifest(), _ranking())
    section = text.split("## Does the CUI order hold?")[1].split("##")[0]
    assert "Spearman correlation between CUI and measured accuracy over 3 splits: 1.000" in section
    assert "the CUI order held" in section
    assert "| 2 | `layer4` | 0.008 | 85.0 % | 91.0 % | 6.0 pp |" in section

    m = _manifest()
    m["verification"].update(cui_vs_task_spearman=-0.5, cui_order_held=False)
    section = render_report(m, _ranking()).split("## Does the CUI order hold?")[1]
    assert "over 3 splits: -0.500" in section and "the CUI order did not hold" in section


@pytest.mark.parametrize("encoding", ["fp32", "fp16"])
def test_cui_order_sentence_when_spearman_is_not_applicable(encoding: str) -> None:
    m = _manifest()
    m["boundary_encoding"] = encoding
    m["verification"].update(cui_vs_task_spearman=None, cui_order_held=None)
    text = render_report(m, _ranking())
    assert f"not applicable: the {encoding} boundary is" in text
    assert "lossless so all splits measure the same" in text
    assert "did not hold" not in text and "order held" not in text


def test_cui_order_sentence_when_all_splits_measure_the_same() -> None:
    m = _manifest()
    m["verification"].update(cui_vs_task_spearman=None, cui_order_held=None)
    text = render_report(m, _ranking())
    assert "not applicable: all splits measured the same value" in text


def test_latency_table() -> None:
    text = render_report(_manifest(), _ranking())
    lat = text.split("## Latency")[1].split("##")[0]
    assert "| `splits/01-layer2` | 1.500 | 2.250 | 3.750 | 3.500 | 1.071 |" in lat
    assert "| `splits/02-layer4` | 3.000 | 0.750 | 3.750 | 3.500 | 1.071 |" in lat  # ratio computed


def test_tensorrt_section_only_with_build_plans() -> None:
    text = render_report(_manifest(), _ranking())
    trt = text.split("## TensorRT build plan")[1].split("##")[0]
    assert "`splits/01-layer2/build_engines.sh` (plan: `splits/01-layer2/engine_plan.json`)" in trt
    assert "tensorrt 10.3" in trt
    m = _manifest()
    for s in m["splits"]:
        s["files"] = {k: v for k, v in s["files"].items() if k in ("head", "tail", "golden")}
    assert "TensorRT" not in render_report(m, _ranking()).split("## Latency")[1]


def test_deterministic_and_input_untouched() -> None:
    m, r = _manifest(), _ranking()
    before = copy.deepcopy((m, r))
    assert render_report(m, r) == render_report(_manifest(), _ranking())
    assert (m, r) == before


BARE = {"schema": "isplit.bundle/1", "files": {}}


@pytest.mark.parametrize(
    "manifest",
    [
        {**BARE, "splits": []},
        {**BARE, "splits": [{"dir": "splits/01-x", "files": {}}], "verification": {}, "run": {}},
        {
            **BARE,
            "splits": [
                {
                    "dir": "splits/01-x",
                    "files": {},
                    "verification": _split(1, 0, "x", 0.1, 0.5)["verification"],
                }
            ],
            "boundary_encoding": "fp32",
            "run": {"latency_ms": {}},
        },
    ],
)
def test_missing_optional_blocks_only_drop_their_lines(manifest: dict[str, Any]) -> None:
    text = render_report(manifest, {})
    assert "## How to re-verify" in text and "![CUI](cui.png)" in text
    assert "## Latency" not in text and "## TensorRT" not in text
    assert "No ranking data." in text and "**Verification:" not in text


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"splits": [{}]}, "splits[0].dir"),
        ({"run": {"latency_ms": {"x": None}}}, "run.latency_ms.x"),
        ({"verification": {"passed": "yes"}}, "verification.passed"),
    ],
)
def test_a_malformed_manifest_is_refused_in_one_line(change: dict[str, Any], field: str) -> None:
    """The report reads the typed model: what the contract refuses is named, not rendered as "-"."""
    with pytest.raises(BadInputError) as e:
        render_report({**_manifest(), **change}, _ranking())
    assert f"field '{field}'" in str(e.value) and "\n" not in str(e.value)
