"""The bundle's files held to the manifest: every listed file re-hashed, nothing unlisted, splits selected.

Each refusal names the file and the fix (:class:`~isplit_export.errors.GateFailedError` for a bundle that is
not what the manifest says, :class:`~isplit_export.errors.BadInputError` for a wrong request).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from isplit_export.contract.layout import check_layout
from isplit_export.contract.manifest import Manifest, validate_manifest
from isplit_export.contract.paths import bundle_path
from isplit_export.contract.schema import REPORT_FILE
from isplit_export.contract.splits import Split
from isplit_export.errors import BadInputError, GateFailedError
from isplit_export.files import sha256_file


def _unlisted(rel: str, what: str = "bundle file") -> GateFailedError:
    return GateFailedError(f"{what} {rel} is not listed (hashed) in manifest.json files: rebuild the bundle")


def _missing(rel: str) -> GateFailedError:
    return GateFailedError(
        f"bundle file {rel} is missing (listed in manifest.json): rebuild the bundle or restore the file"
    )


def _modified(rel: str) -> GateFailedError:
    return GateFailedError(
        f"bundle file {rel} was modified (its sha256 differs from manifest.json): rebuild the bundle or restore the file"
    )


def _hash_one(bundle: Path, rel: str, expected: str) -> Path:
    path = bundle_path(bundle, rel)
    if not path.is_file():
        raise _missing(rel)
    try:
        actual = sha256_file(path)
    except OSError as e:
        raise BadInputError(f"cannot read bundle file {rel} ({e.strerror}): fix its permissions") from None
    if actual != expected:
        raise _modified(rel)
    return path


def check_files(bundle: Path | str, manifest: Manifest | Mapping[str, Any]) -> None:
    """Re-hash every file of ``manifest["files"]`` and ``report.md`` (``run.report_sha256``), and refuse
    anything else in the bundle tree but the known outputs (:func:`~isplit_export.contract.layout.check_layout`).

    Raises :class:`GateFailedError` naming the first missing, modified, symlinked, escaping or unlisted file.
    """
    data = manifest.data if isinstance(manifest, Manifest) else validate_manifest(dict(manifest))
    root = Path(bundle)
    for rel, entry in data["files"].items():
        _hash_one(root, rel, entry["sha256"])
    run = data.get("run") or {}
    if run.get("report_sha256") is not None:
        _hash_one(root, REPORT_FILE, run["report_sha256"])
    check_layout(root, data)


def check_listed(manifest: Manifest, rel: str, what: str) -> Path:
    """The bundle file ``rel``, which must be listed (hashed) in the manifest; re-hashed here."""
    entry = manifest.data["files"].get(rel)
    if entry is None:
        raise _unlisted(rel, what)
    return _hash_one(manifest.bundle, rel, entry["sha256"])


def select_splits(manifest: Manifest, split: int | None) -> list[tuple[int, Split]]:
    """``(NN, split)`` of the splits to use: all, or only split ``split`` (1-based position == its rank)."""
    splits = manifest.splits
    if not splits:
        raise BadInputError("this bundle has no splits: rebuild it with --top 1 or more")
    if split is None:
        return list(enumerate(splits, start=1))
    if isinstance(split, bool) or not isinstance(split, int) or not 1 <= split <= len(splits):
        raise BadInputError(f"split {split} out of range: this bundle has splits 1..{len(splits)}")
    return [(split, splits[split - 1])]


def split_file(manifest: Manifest, bundle: Path, entry: Split, key: str) -> Path:
    """The split's file ``key`` (head, tail, golden...), which must be one of the hashed files."""
    rel = entry.files.get(key)
    if rel is None:
        raise BadInputError(f"manifest.json split {entry.dir} has no '{key}' file: rebuild the bundle")
    if rel not in manifest.files:
        raise _unlisted(rel)
    return bundle_path(Path(bundle), rel)


def copy_listed(manifest: Manifest | Mapping[str, Any], bundle: Path, rel: str, dest: Path) -> Path:
    """Copy the listed bundle file ``rel`` to ``dest`` (outside the bundle), hashing the bytes as they are
    copied: the copy is what the manifest hashed, whatever happens to the bundle afterwards.

    Raises :class:`GateFailedError` when ``rel`` is not listed, is missing, or its bytes differ (the
    partial copy is removed).
    """
    data = manifest.data if isinstance(manifest, Manifest) else manifest
    entry = data["files"].get(rel)
    if entry is None:
        raise _unlisted(rel)
    src = bundle_path(Path(bundle), rel)
    if not src.is_file():
        raise _missing(rel)
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    try:
        with open(src, "rb") as f, open(dest, "xb") as out:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except OSError as e:
        dest.unlink(missing_ok=True)
        raise BadInputError(
            f"cannot copy bundle file {rel} ({e.strerror}): fix its permissions or free disk space"
        ) from None
    if digest.hexdigest() != entry["sha256"]:
        dest.unlink(missing_ok=True)
        raise _modified(rel)
    return dest
