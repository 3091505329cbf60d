"""The typed bundle model (``contract.Split`` and friends): round trip, hostile input, published schema.

Fast: no export, no training; the entry is the shape ``jobs/export.py`` writes (docs/bundle.md).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

from isplit_export.contract import Split
from isplit_export.contract.json_schema import MODEL, bundle_schema, schema_markdown
from isplit_export.errors import BadInputError, GateFailedError

DOCS = Path(__file__).resolve().parents[2] / "docs" / "bundle.md"

ENTRY: dict[str, Any] = {
    "dir": "splits/01-layer2",
    "rank": 1,
    "cui_rank": 1,
    "index": 7,
    "node": "layer2",
    "module": "layer2",
    "cui": 0.0123,
    "log10_cui": -1.91,
    "head_flops_share": 0.31,
    "boundary": {
        "encoding": "int8",
        "dtype": "uint8",
        "scale": 0.02,
        "zero_point": 0,
        "shape": ["batch", 128, 28, 28],
        "layout": "nchw",
        "bytes_per_image": 100352,
        "fp32_bytes_per_image": 401408,
    },
    "files": {
        "head": "01-layer2.head.onnx",
        "tail": "01-layer2.tail.onnx",
        "golden": "splits/01-layer2/golden.npz",
    },
    "verification": {
        "checks": {
            "int8-qdq": {
                "metrics": {"cosine": 0.999, "top1_agreement": 0.98},
                "gate": {"name": "int8-qdq", "min_cosine": 0.99, "passed": True, "failures": []},
                "task": {
                    "metric": "accuracy",
                    "value": 0.9,
                    "full_model": 0.91,
                    "drop": 0.01,
                    "ci95": [0.85, 0.94],
                },
            }
        },
        "passed": True,
        "failures": [],
    },
}


def test_a_split_round_trips_byte_for_byte_and_is_typed() -> None:
    s = Split.from_json(copy.deepcopy(ENTRY), 0)
    assert json.dumps(s.to_json()) == json.dumps(ENTRY)  # same keys, same order: the bundle's bytes
    assert (s.dir, s.rank, s.index, s.boundary.scale, s.boundary.shape[0]) == (
        "splits/01-layer2",
        1,
        7,
        0.02,
        "batch",
    )
    check = s.verification.checks["int8-qdq"] if s.verification else None
    assert check is not None and check.passed and check.gate == "int8-qdq" and check.task.ci95 == (0.85, 0.94)
    moved = s.with_files({**s.files, "head": "weights-free.head.onnx"})
    assert moved.to_json()["files"]["head"] == "weights-free.head.onnx" and moved.boundary == s.boundary


def _mutated(path: str, value: Any) -> dict[str, Any]:
    entry = copy.deepcopy(ENTRY)
    *parents, last = path.split(".")
    block = entry
    for key in parents:
        block = block[key]
    block[last] = value
    return entry


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("rank", 2, "splits[0].rank"),
        ("index", "7", "splits[0].index"),
        ("boundary.scale", -1.0, "splits[0].boundary.scale"),
        ("boundary.zero_point", 300, "splits[0].boundary.zero_point"),
        ("boundary.shape", [1] * 9, "splits[0].boundary.shape"),
        ("verification.passed", False, "splits[0].verification.passed"),  # not the outcome of its checks
        ("verification.failures", ["x" * 501], "splits[0].verification.failures[0]"),
        (
            "verification.checks.int8-qdq.gate.passed",
            "yes",
            "splits[0].verification.checks.int8-qdq.gate.passed",
        ),
        ("verification.checks.int8-qdq.task.value", 1.5, "splits[0].verification.checks.int8-qdq.task.value"),
        ("verification.checks.int8-qdq.task.drop", "0.1", "splits[0].verification.checks.int8-qdq.task.drop"),
        (
            "verification.checks.int8-qdq.gate.min_cosine",
            "0.99",
            "splits[0].verification.checks.int8-qdq.gate.min_cosine",
        ),
        ("head_flops_share", 1.5, "splits[0].head_flops_share"),
        ("cui_rank", 0, "splits[0].cui_rank"),
        ("bottleneck", {"probe": {"ci95": [0.5]}}, "splits[0].bottleneck.probe.ci95"),
        ("files", {f"f{i}": "x.onnx" for i in range(65)}, "splits[0].files"),
    ],
)
def test_hostile_fields_are_one_line_naming_the_field(path: str, value: Any, field: str) -> None:
    with pytest.raises(BadInputError, match=re.escape(f"'{field}")):
        Split.from_json(_mutated(path, value), 0)


@pytest.mark.parametrize("rel", ["../outside.onnx", "/etc/passwd"])
def test_a_file_leaving_the_bundle_is_refused(rel: str) -> None:
    with pytest.raises((GateFailedError, BadInputError)):
        Split.from_json(_mutated("files.head", rel), 0)


def test_the_published_schema_is_the_dataclasses() -> None:
    text = DOCS.read_text(encoding="utf-8")
    begin = text.index("<!-- typed-model:begin")
    block = text[text.index("\n", begin) + 1 : text.index("<!-- typed-model:end -->")]
    assert block == schema_markdown(), (
        "docs/bundle.md: regenerate with isplit_export.contract.json_schema.schema_markdown()"
    )
    published = json.loads(block.removeprefix("```json\n").removesuffix("```\n"))
    assert published == bundle_schema()
    for cls in MODEL:  # every typed field the model reads is in the published schema, at its JSON path
        props = published["$defs"][cls.__name__]["properties"]
        for f in dataclasses.fields(cls):
            path = f.metadata.get("json", f.name)
            if f.name == "raw" or path is None:
                continue
            node: dict[str, Any] = {"properties": props}
            for key in path.split("."):
                node = node["properties"][key]
            assert node, (cls.__name__, f.name)


def test_the_schema_accepts_what_the_writer_writes() -> None:
    """Each typed key of the entry has the JSON type the schema publishes (a small JSON Schema check)."""
    defs = bundle_schema()["$defs"]
    kinds = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "null": type(None)}

    def ok(value: Any, schema: dict[str, Any]) -> bool:
        if "$ref" in schema:
            return conforms(value, defs[schema["$ref"].rsplit("/", 1)[1]])
        if "anyOf" in schema:
            return any(ok(value, s) for s in schema["anyOf"])
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if isinstance(value, dict) and "object" in types:
            inner = schema.get("additionalProperties")
            return (
                conforms(value, schema) and all(ok(v, inner) for v in value.values())
                if inner
                else conforms(value, schema)
            )
        if isinstance(value, list) and "array" in types:
            items = schema.get("prefixItems") or [schema["items"]] * len(value)
            return all(ok(v, s) for v, s in zip(value, items, strict=True))
        return any(
            isinstance(value, kinds[t]) and not (t != "boolean" and isinstance(value, bool))
            for t in types
            if t in kinds
        )

    def conforms(value: dict[str, Any], schema: dict[str, Any]) -> bool:
        return all(ok(value[k], s) for k, s in schema.get("properties", {}).items() if k in value)

    assert conforms(ENTRY, defs["Split"])
    assert not conforms(_mutated("boundary.scale", "0.02"), defs["Split"])
