"""The closed bundle (``contract/layout.py``): every entry of the tree is listed or a known output.

Real files, folders, symlinks and a FIFO on disk; the check is the one ``verify``, ``serve``, ``run``
and ``build-engines`` run through ``contract.check_files``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from isplit_export.contract import check_layout, unlisted_entries
from isplit_export.errors import GateFailedError

LISTED = (
    "full.onnx",
    "01-conv.tail.onnx",
    "weights/float32-0123.bin",
    "splits/01-conv/golden.npz",
    "triton/01-conv/config.pbtxt",
    "triton/01-conv/1/model.onnx",
)


def _bundle(root: Path) -> dict[str, Any]:
    """A bundle tree holding exactly the listed files plus manifest.json and report.md; its manifest data."""
    for rel in (*LISTED, "manifest.json", "report.md"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    return {
        "files": {rel: {"sha256": "0" * 64} for rel in LISTED},
        "splits": [{"dir": "splits/01-conv", "files": {"tail": "01-conv.tail.onnx"}}],
        "triton": {"models": [{"name": "01-conv", "split": "splits/01-conv"}]},
    }


def test_a_listed_bundle_with_its_outputs_passes(tmp_path: Path) -> None:
    data = _bundle(tmp_path)
    check_layout(tmp_path, data)
    for rel in (
        "verify.json",
        "plan.json",
        "run.json",
        "splits/01-conv/engines/tail.fp16.engine",
        "splits/01-conv/engines/cache/timing.cache",
        "triton/01-conv/1/model.plan",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"built here")
    check_layout(tmp_path, data)


@pytest.mark.parametrize(
    ("plant", "named"),
    [
        (lambda r: (r / "evil").mkdir(), "evil/ (a folder"),
        (lambda r: (r / "weights" / "extra.bin").write_bytes(b"x"), "weights/extra.bin (a file"),
        (lambda r: (r / "triton" / "evil").mkdir(), "triton/evil/ (a folder"),
        (
            lambda r: (r / "triton" / "01-conv" / "1" / "model.py").write_bytes(b"x"),
            "triton/01-conv/1/model.py",
        ),
        (lambda r: (r / "splits" / "02-other").mkdir(), "splits/02-other/"),
        (lambda r: (r / "link.onnx").symlink_to(r / "full.onnx"), "link.onnx (a symlink"),
        (lambda r: (r / "weights" / "d").symlink_to(r / "splits"), "weights/d (a symlink"),
        (lambda r: os.mkfifo(r / "pipe"), "pipe (not a regular file"),
        (
            lambda r: ((r / "verify.json").mkdir(), (r / "verify.json" / "x").write_bytes(b"x")),
            "verify.json/",
        ),
        (lambda r: (r / ".hidden").write_bytes(b"x"), ".hidden (a file"),
    ],
)
def test_anything_unlisted_is_a_named_finding(tmp_path: Path, plant: Any, named: str) -> None:
    data = _bundle(tmp_path)
    plant(tmp_path)
    with pytest.raises(GateFailedError, match="unlisted files are not covered by any hash") as e:
        check_layout(tmp_path, data)
    assert named in str(e.value) and len(str(e.value).splitlines()) == 1


def test_an_empty_folder_in_place_of_an_output_is_no_finding(tmp_path: Path) -> None:
    data = _bundle(tmp_path)
    (tmp_path / "verify.json").mkdir()  # how tests make the write of verify.json fail as root
    check_layout(tmp_path, data)


def test_findings_are_counted_and_a_refused_folder_is_not_entered(tmp_path: Path) -> None:
    data = _bundle(tmp_path)
    (tmp_path / "evil").mkdir()
    (tmp_path / "evil" / "model-settings.json").write_text("{}")
    (tmp_path / "z.txt").write_text("x")
    assert unlisted_entries(tmp_path, data) == [
        "evil/ (a folder the manifest does not list)",
        "z.txt (a file the manifest does not list)",
    ]
    with pytest.raises(GateFailedError, match=r"evil/ .* and 1 more"):
        check_layout(tmp_path, data)
