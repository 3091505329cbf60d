"""The CI summary (``--summary-json FILE``): one small JSON a pipeline step reads instead of the manifest.

Schema ``isplit.summary/1`` (documented in ``docs/ci.md``): pass/fail, the bundle's sizes, the chosen
splits with their gate results, and every gate failure as one line. It is written after the bundle is
complete, whether the gates passed or not (a failed gate is exactly when CI needs it); bad input or a
technical failure writes no summary and exits 2 / 3. It lives outside the bundle (the path is yours), so
it is not hashed by the manifest; ``manifest_sha256`` ties it to the bundle it describes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from isplit_export.contract import MANIFEST_FILE, manifest_sha256
from isplit_export.errors import BadInputError
from isplit_export.files import json_dumps, write_text_atomic

SUMMARY_SCHEMA = "isplit.summary/1"


def gate_failures(manifest: Mapping[str, Any]) -> list[str]:
    """Every gate failure of the bundle's splits, one line each (``<split dir>: <reason>``)."""
    return [f"{s['dir']}: {r}" for s in manifest["splits"] for r in s["verification"]["failures"]]


def summarize(out: Path, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The ``isplit.summary/1`` document for the bundle ``out`` and its manifest (``docs/ci.md`` has every field)."""
    m = manifest
    out = Path(out)
    passed = bool(m["verification"]["passed"])
    files: dict[str, dict[str, Any]] = m["files"]
    weights_dir = str(m.get("weights", {}).get("dir", "weights")) + "/"
    total = sum(int(f["bytes"]) for f in files.values())
    report = out / "report.md"
    total += report.stat().st_size if report.is_file() else 0
    total += (out / MANIFEST_FILE).stat().st_size
    splits = []
    for s in m["splits"]:
        v = s["verification"]
        splits.append({
            "rank": s["rank"],
            "dir": s["dir"],
            "node": s["node"],
            "module": s["module"],
            "cui": s["cui"],
            "boundary": {k: s["boundary"][k] for k in ("encoding", "shape", "bytes_per_image")},
            "passed": v["passed"],
            "failures": list(v["failures"]),
            "checks": {
                name: {
                    "passed": c["gate"]["passed"],
                    "gate": c["gate"].get("name", name),
                    "cosine": c["metrics"].get("cosine"),
                    "top1_agreement": c["metrics"].get("top1_agreement"),
                    "task": c["task"],
                }
                for name, c in v["checks"].items()
            },
            "files": dict(s["files"]),
        })  # fmt: skip
    return {
        "schema": SUMMARY_SCHEMA,
        "tool": m["tool"],
        "passed": passed,
        "outcome": "passed" if passed else "gate-failed",
        "bundle": out.as_posix(),
        "manifest_sha256": manifest_sha256(out),  # what `verify --expect-sha256` pins on the device
        "model": {"name": m["model"].get("name"), "weights": m["model"].get("weights")},
        "target": m["target"].get("name"),
        "boundary_encoding": m["boundary_encoding"],
        "precision": m["target"].get("default_precision"),
        "weights_layout": m.get("weights", {}).get("layout", "inline"),
        "sizes": {
            "bundle_bytes": total,
            "files": len(files) + 2,
            "onnx_bytes": sum(int(f["bytes"]) for k, f in files.items() if k.endswith(".onnx")),
            "weights_bytes": sum(int(f["bytes"]) for k, f in files.items() if k.startswith(weights_dir)),
        },
        "splits": splits,
        "gate_failures": gate_failures(m),
    }


def write_summary(path: Path, out: Path, manifest: Mapping[str, Any]) -> None:
    """Write :func:`summarize` of the bundle ``out`` to ``path`` (parent folders created)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json_dumps(summarize(out, manifest)))
    except OSError as e:
        raise BadInputError(
            f"bundle {out} is written, but --summary-json {path} could not be ({e.strerror}): choose a writable path"
        ) from None
