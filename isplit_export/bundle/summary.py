"""The CI summary (``--summary-json FILE``): one small JSON a pipeline step reads instead of the manifest.

Schema ``isplit.summary/1`` (documented in ``docs/ci.md``): pass/fail, the bundle's sizes, the chosen
splits with their gate results, and every gate failure as one line. It is written after the bundle is
complete, whether the gates passed or not (a failed gate is exactly when CI needs it); bad input or a
technical failure writes no summary and exits 2 / 3. It lives outside the bundle (the path is yours), so
it is not hashed by the manifest; ``manifest_sha256`` ties it to the bundle it describes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from isplit_export.contract import MANIFEST_FILE, manifest_sha256
from isplit_export.errors import BadInputError
from isplit_export.files import json_dumps, write_text_atomic

if TYPE_CHECKING:
    from isplit_export.bundle.build import ExportResult

SUMMARY_SCHEMA = "isplit.summary/1"


def summarize(result: ExportResult) -> dict[str, Any]:
    """The ``isplit.summary/1`` document for an export result (see ``docs/ci.md`` for every field)."""
    m = result.manifest
    files: dict[str, dict[str, Any]] = m["files"]
    weights_dir = str(m.get("weights", {}).get("dir", "weights")) + "/"
    total = sum(int(f["bytes"]) for f in files.values())
    report = result.out / "report.md"
    total += report.stat().st_size if report.is_file() else 0
    total += (result.out / MANIFEST_FILE).stat().st_size
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
        "passed": result.passed,
        "outcome": "passed" if result.passed else "gate-failed",
        "bundle": result.out.as_posix(),
        "manifest_sha256": manifest_sha256(result.out),  # what `verify --expect-sha256` pins on the device
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
        "gate_failures": list(result.failures),
    }


def write_summary(path: Path, result: ExportResult) -> None:
    """Write :func:`summarize` of ``result`` to ``path`` (parent folders created)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json_dumps(summarize(result)))
    except OSError as e:
        raise BadInputError(
            f"bundle {result.out} is written, but --summary-json {path} could not be ({e.strerror}): choose a writable path"
        ) from None
