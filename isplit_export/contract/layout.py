"""The bundle's layout: every entry of the bundle tree is listed in the manifest or is a known output.

A bundle is a closed set of files. A file the manifest does not list is not covered by any hash, so
nothing proves who put it there; an inference server rooted at the bundle (MLServer, Triton) would
still load it as a model, and a model can be code. So an unlisted entry is a finding (exit 1), not
noise: :func:`check_layout` walks the tree (without following symlinks) and names the first one.

Allowed without a hash, because the tools write them into a bundle after it was built:

- at the top: ``manifest.json``, ``report.md`` (hashed through ``run.report_sha256``), and the
  outputs ``verify.json``, ``plan.json``, ``run.json``;
- below each listed split's ``engines/`` folder: what ``build-engines`` writes (engines, layer info,
  timing cache, ``build.json``);
- ``triton/<listed model>/1/model.plan``: where ``docs/serving.md`` puts a tail engine built on the
  Triton server.

Directories are allowed only where a listed file or an allowed output lies below them (and, empty,
in place of ``verify.json``/``plan.json``/``run.json``: a write target made unwritable). Symlinks,
sockets, FIFOs and devices are findings wherever they are.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from isplit_export.contract.schema import (
    ENGINES_DIR,
    MANIFEST_FILE,
    PLAN_FILE,
    REPORT_FILE,
    RUN_FILE,
    TRITON_ENGINE_FILE,
    VERIFY_FILE,
)
from isplit_export.errors import BadInputError, GateFailedError

OUTPUT_FILES = frozenset({VERIFY_FILE, PLAN_FILE, RUN_FILE})
"""What ``verify``, ``plan`` and ``run`` write into a bundle (an empty folder in their place is no finding)."""
TOP_LEVEL_OUTPUTS = frozenset({MANIFEST_FILE, REPORT_FILE, *OUTPUT_FILES})
"""Files at the bundle's top that the manifest does not list: itself, the report, the tools' outputs."""

MAX_BUNDLE_ENTRIES = 200_000
"""Most files and folders a bundle tree may hold (a resnet50 bundle holds about 40); more is a finding."""


def _allowed(data: Mapping[str, Any]) -> tuple[set[str], set[str], set[str]]:
    """(allowed files, allowed directories, directories whose whole subtree is allowed) as bundle paths."""
    files = set(data["files"]) | set(TOP_LEVEL_OUTPUTS)
    trees = {f"{s['dir']}/{ENGINES_DIR}" for s in data["splits"]}
    triton = data.get("triton")
    models = triton.get("models") if isinstance(triton, dict) else None
    for entry in models if isinstance(models, list) else []:
        name = entry.get("name") if isinstance(entry, dict) else None
        if isinstance(name, str) and name and "/" not in name and name not in (".", ".."):
            files.add(f"triton/{name}/1/{TRITON_ENGINE_FILE}")
    dirs: set[str] = set()
    for rel in files | trees:
        parts = rel.split("/")
        dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
    return files, dirs | trees, trees


def _finding(rel: str, mode: int) -> str:
    if stat.S_ISLNK(mode):
        return f"{rel} (a symlink; a bundle holds none)"
    if stat.S_ISDIR(mode):
        return f"{rel}/ (a folder the manifest does not list)"
    if stat.S_ISREG(mode):
        return f"{rel} (a file the manifest does not list)"
    return f"{rel} (not a regular file)"


def unlisted_entries(bundle: Path | str, data: Mapping[str, Any], limit: int = 10) -> list[str]:
    """Up to ``limit`` findings in ``bundle``'s tree, each ``path (why)``; a folder that is a finding is not entered."""
    files, dirs, trees = _allowed(data)
    found: list[str] = []
    seen = 0
    stack = [(Path(bundle), "")]
    while stack and len(found) < limit:
        folder, prefix = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as e:
            raise BadInputError(
                f"cannot list bundle folder {prefix or '.'} ({e.strerror}): fix its permissions"
            ) from None
        for entry in entries:
            seen += 1
            if seen > MAX_BUNDLE_ENTRIES:
                return [*found, f"{prefix or '.'} (more than {MAX_BUNDLE_ENTRIES} entries in the bundle)"][
                    :limit
                ]
            rel = f"{prefix}{entry.name}"
            mode = entry.stat(follow_symlinks=False).st_mode
            in_tree = any(rel == t or rel.startswith(t + "/") for t in trees)
            if stat.S_ISDIR(mode) and (rel in dirs or in_tree):
                stack.append((Path(entry.path), rel + "/"))
            elif stat.S_ISDIR(mode) and rel in OUTPUT_FILES and not any(os.scandir(entry.path)):
                continue  # an empty folder where an output goes (it makes that write fail): holds nothing
            elif not (stat.S_ISREG(mode) and (rel in files or in_tree)):
                found.append(_finding(rel, mode))
                if len(found) >= limit:
                    break
    return found


def check_layout(bundle: Path | str, data: Mapping[str, Any]) -> None:
    """Refuse a bundle holding anything its manifest does not list (see the module docstring): exit 1, one line."""
    found = unlisted_entries(bundle, data)
    if found:
        more = f" and {len(found) - 1} more" if len(found) > 1 else ""
        raise GateFailedError(
            f"bundle holds {found[0]}{more}: unlisted files are not covered by any hash and a server would load "
            "them; remove them or fetch the published bundle"
        )
