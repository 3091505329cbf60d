"""The options objects: one frozen value per job, validated once, recorded in the manifest."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from isplit_export.errors import BadInputError
from isplit_export.options import ExportOptions, RankOptions, make_options


def test_model_name_and_fields_build_the_same_object() -> None:
    a = make_options(ExportOptions, "resnet50", {"out": "b", "top": 2, "classes": ["cat", "dog"]})
    b = ExportOptions(model="resnet50", out=Path("b"), top=2, classes=("cat", "dog"))
    assert a == b and hash(a) == hash(b)
    assert make_options(ExportOptions, b, {"top": 5}).top == 5
    assert make_options(ExportOptions, b, {}) is b


def test_frozen_and_validated() -> None:
    opts = RankOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.top = 3  # type: ignore[misc]
    for bad, flag in [
        ({"top": 0}, "--top"),
        ({"batch_size": 0}, "--batch-size"),
        ({"images": 0}, "--images"),
    ]:
        with pytest.raises(BadInputError, match=flag):
            RankOptions(**bad)  # type: ignore[arg-type]
    with pytest.raises(BadInputError, match="--golden"):
        ExportOptions(golden_images=0)
    with pytest.raises(BadInputError, match=r"unknown option.*tpo"):
        make_options(ExportOptions, None, {"tpo": 3})


def test_to_json_keeps_what_decides_the_result_only() -> None:
    opts = ExportOptions(
        model="m", out=Path("/tmp/x"), data=Path("d"), force=True, batch_size=3, device="cpu"
    )
    js = opts.to_json()
    assert js["model"] == "m" and js["data"] == "d" and js["top"] == 3 and js["target"] == "onnx"
    assert not {"out", "force", "batch_size", "device", "progress", "latency_runs"} & set(js)


@pytest.mark.parametrize("field", ["target", "server"])
def test_unknown_target_name_is_refused_without_loading_a_profile(field: str) -> None:
    """The options know the target names from the profile file names; no profile is parsed."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from isplit_export.errors import BadInputError\n"
        "from isplit_export.options import ExportOptions\n"
        "ExportOptions(target='jetson', server='x86-tensorrt', link='20,40')\n"
        "try:\n"
        f"    ExportOptions({field}='nosuch')\n"
        "except BadInputError as e:\n"
        "    print(e)\n"
        "print(sorted(m for m in sys.modules if m.startswith('isplit_export.targets')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    refusal, loaded = out.splitlines()
    assert refusal.startswith("unknown target 'nosuch': choose one of ") and "jetson-orin-nx" in refusal
    assert loaded == "[]"


def test_bad_link_is_refused_by_the_options() -> None:
    with pytest.raises(BadInputError, match=r"unknown --link 'dialup'"):
        ExportOptions(link="dialup")
