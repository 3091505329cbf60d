"""The run.json entry a run just built, read back typed (contract.RunSummary) for its terminal summary and
exit code, and the entries a run keeps when it merges its own into run.json (contract.kept_runs)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from isplit_export.contract import RUN_SCHEMA, RunSummary, kept_runs
from isplit_export.errors import BadInputError
from isplit_export.serving.records import format_run


def _stats(p50: float) -> dict[str, Any]:
    return {"n": 12, "p50": p50, "p95": 2 * p50, "p99": 3 * p50, "mean": p50, "min": p50, "max": 3 * p50}


def _entry() -> dict[str, Any]:
    """An entry shaped like serving.records.run_entry's (docs/serving.md)."""
    return {
        "split": "splits/01-conv",
        "index": 2,
        "model": "01-conv",
        "server": {"address": "127.0.0.1:8001", "protocol": "grpc", "address_class": "loopback"},
        "backend": "onnxruntime",
        "options": {"requests": 12, "concurrency": 2},
        "images": {"distinct": 4, "requests": 12, "ok": 10, "failed": 1, "skipped": 1},
        "interrupted": False,
        "wall_s": 1.5,
        "throughput_rps": 8.0,
        "latency_ms": {
            "head": _stats(0.1),
            "encode": _stats(0.01),
            "round_trip": _stats(2.0),
            "end_to_end": None,
        },
        "server_compute": {"source": "s", "ms": {"mean": 0.5}},
        "local_ms": {"head_ms": 0.125, "tail_ms": 0.25},
        "transport_overhead_ms_p50": -0.1,
        "bytes": {
            "bundle_bytes_per_image": 1024,
            "payload_per_image": [1024, 2048],
            "request_on_wire": 1100,
            "framing": 76,
        },
        "goldens": {
            "images": 4,
            "gate": "int8",
            "metrics": {"max_abs_rel": 0.001},
            "passed": True,
            "failures": [],
        },
        "vs_local_pair": {
            "gate": "fp32",
            "images": 10,
            "distinct_compared": 4,
            "passed": False,
            "failures": ["cosine 0.9 not >= 0.99"],
        },
        "task": {
            "agreement_with_full_model": 0.9,
            "accuracy": 0.8,
            "full_model_accuracy": 0.85,
            "labelled": 10,
        },
        "failures": [
            {"request": 3, "image": "a.png", "status": "UNAVAILABLE", "attempts": 2, "error": "boom"}
        ],
        "passed": False,
        "in_flight_max": 2,
        "backend_choice": "auto: int8 head",
        "stopped": {"reason": "circuit breaker", "fail_after": 5, "last_error": "boom"},
    }


def test_the_summary_reads_every_figure_it_prints() -> None:
    r = RunSummary.from_json(_entry())
    assert (r.split, r.address, r.protocol, r.concurrency, r.requests) == (
        "splits/01-conv",
        "127.0.0.1:8001",
        "grpc",
        2,
        12,
    )
    assert [k for k, _ in r.latency] == ["head", "encode", "round_trip", "end_to_end"]
    assert (
        dict(r.latency)["end_to_end"] is None
        and r.server_compute is not None
        and r.server_compute.mean == 0.5
    )
    assert (r.ok, r.failed, r.skipped, r.passed, r.fail_after) == (10, 1, 1, False, 5)
    assert r.payload_per_image == [1024, 2048] and r.vs_local_pair.metric("max_abs_rel") is None
    assert r.failures[0].request == 3 and r.stopped_reason == "circuit breaker"


def test_format_run_prints_the_typed_entry() -> None:
    text = format_run(_entry(), Path("/x/run.json")).splitlines()
    assert text[0].endswith("12 requests, concurrency 2, head on onnxruntime (auto: int8 head)")
    assert "server compute          -        -        -    0.500      -" in text
    assert "end to end              -        -        -        -      -" in text
    assert (
        "local head (onnxruntime) + tail (onnxruntime) here: 0.125 + 0.250 ms; transport overhead p50: -0.100 ms"
        in text
    )
    assert "agreement with the full model: 90.0%; accuracy 80.0% (full model 85.0%, 10 labelled)" in text
    assert (
        "served vs local pair: max_abs_rel -, gate fp32 FAIL; goldens: 4 through the server, gate int8 pass"
        in text
    )
    assert "stopped: 5 requests in a row failed (--fail-after); the rest were not sent" in text
    assert text[-1] == "wrote /x/run.json"


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("passed",), None, "run.passed"),
        (("images", "ok"), "ten", "run.images.ok"),
        (("latency_ms", "head"), [1], "run.latency_ms.head"),
        (("goldens", "passed"), "yes", "run.goldens.passed"),
    ],
)
def test_a_malformed_entry_is_one_line(path: tuple[str, ...], value: Any, field: str) -> None:
    e = copy.deepcopy(_entry())
    inner = e
    for key in path[:-1]:
        inner = inner[key]
    inner[path[-1]] = value
    with pytest.raises(BadInputError) as err:
        RunSummary.from_json(e)
    assert f"field '{field}'" in str(err.value)


def test_kept_runs_only_from_this_manifests_run_json(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    assert kept_runs(path, "ab" * 32) == {}
    path.write_text(
        json.dumps({"schema": RUN_SCHEMA, "manifest_sha256": "ab" * 32, "runs": {"splits/01-conv": {"x": 1}}})
    )
    assert kept_runs(path, "ab" * 32) == {"splits/01-conv": {"x": 1}}
    assert kept_runs(path, "cd" * 32) == {}  # another manifest's runs are dropped
    path.write_text("{not json")
    assert kept_runs(path, "ab" * 32) == {}  # a broken file is replaced
