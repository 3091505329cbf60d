"""The CI summary (``--summary-json FILE``): one small JSON a pipeline step reads instead of the manifest.

Schema ``isplit.summary/1`` (documented in ``docs/ci.md``): pass/fail, the bundle's sizes, the chosen
splits with their gate results, and every gate failure as one line. It is written after the bundle is
complete, whether the gates passed or not (a failed gate is exactly when CI needs it); bad input or a
technical failure writes no summary and exits 2 / 3. It lives outside the bundle (the path is yours), so
it is not hashed by the manifest; ``manifest_sha256`` ties it to the bundle it describes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from isplit_export.contract import MANIFEST_FILE, Check, Manifest, Split
from isplit_export.errors import BadInputError
from isplit_export.files import json_dumps, write_text_atomic

SUMMARY_SCHEMA = "isplit.summary/1"


def gate_failures(manifest: Manifest) -> list[str]:
    """Every gate failure of the bundle's splits, one line each (``<split dir>: <reason>``)."""
    return [
        f"{s.dir}: {r}"
        for s in manifest.splits
        if s.verification is not None
        for r in s.verification.failures
    ]


def _check(name: str, c: Check) -> dict[str, Any]:
    return {
        "passed": c.passed,
        "gate": c.gate,
        "cosine": c.metric("cosine"),
        "top1_agreement": c.metric("top1_agreement"),
        "task": c.task.to_json(),
    }


def _split(s: Split) -> dict[str, Any]:
    checks = s.verification.checks if s.verification is not None else {}
    return {
        "rank": s.rank,
        "dir": s.dir,
        "node": s.node,
        "module": s.module,
        "cui": s.cui,
        "boundary": {
            "encoding": s.boundary.encoding,
            "shape": list(s.boundary.shape),
            "bytes_per_image": s.boundary.bytes_per_image,
        },
        "passed": s.verification is not None and s.verification.passed,
        "failures": list(s.verification.failures) if s.verification is not None else [],
        "checks": {name: _check(name, c) for name, c in checks.items()},
        "files": dict(s.files),
    }


def disk_bytes(m: Manifest) -> tuple[int, int]:
    """Bytes the bundle takes on disk, with and without ``triton/``: each file once, hard links once.

    The Triton repository hard-links the weight packs (docs/serving.md), so it adds only its small
    files; where links were refused it holds copies, and the two figures say so.
    """
    rels = [*m.files, MANIFEST_FILE, "report.md"]
    seen: set[tuple[int, int]] = set()
    total = without = 0
    for rel in sorted(rels, key=lambda r: r.startswith("triton/")):  # a pack counts outside triton/ first
        try:
            st = (m.bundle / rel).lstat()
        except FileNotFoundError:
            continue
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        total += st.st_size
        without += 0 if rel.startswith("triton/") else st.st_size
    return total, without


def summarize(m: Manifest) -> dict[str, Any]:
    """The ``isplit.summary/1`` document for a written bundle's manifest (``docs/ci.md`` has every field)."""
    out = m.bundle
    passed = m.verification.passed
    files = m.files
    weights_dir = m.weights.dir + "/"
    total = sum(int(f.bytes or 0) for f in files.values())
    report = out / "report.md"
    total += report.stat().st_size if report.is_file() else 0
    total += (out / MANIFEST_FILE).stat().st_size
    on_disk, without_triton = disk_bytes(m)
    return {
        "schema": SUMMARY_SCHEMA,
        "tool": dict(m.block("tool")),
        "passed": passed,
        "outcome": "passed" if passed else "gate-failed",
        "bundle": out.as_posix(),
        "manifest_sha256": m.sha256,  # what `verify --expect-sha256` pins on the device
        "model": {"name": m.model.name, "weights": m.model.weights},
        "target": m.target_name,
        "boundary_encoding": m.boundary_encoding,
        "precision": m.target_precision,
        "weights_layout": m.weights.layout,
        "sizes": {
            "bundle_bytes": total,
            "files": len(files) + 2,
            "onnx_bytes": sum(int(f.bytes or 0) for k, f in files.items() if k.endswith(".onnx")),
            "weights_bytes": sum(int(f.bytes or 0) for k, f in files.items() if k.startswith(weights_dir)),
            "disk_bytes": on_disk,
            "disk_bytes_without_triton": without_triton,
        },
        "splits": [_split(s) for s in m.splits],
        "gate_failures": gate_failures(m),
    }


def write_summary(path: Path, manifest: Manifest) -> None:
    """Write :func:`summarize` of the written bundle's ``manifest`` to ``path`` (parent folders created)."""
    path, out = Path(path), manifest.bundle
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json_dumps(summarize(manifest)))
    except OSError as e:
        raise BadInputError(
            f"bundle {out} is written, but --summary-json {path} could not be ({e.strerror}): choose a writable path"
        ) from None
