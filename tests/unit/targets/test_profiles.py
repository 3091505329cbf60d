"""Target profiles: every shipped file loads and validates, aliases work, bad profiles are refused by field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from isplit_export import target_names
from isplit_export.errors import EXIT_BAD_INPUT, BadInputError
from isplit_export.exporting.onnx_utils import OPSET
from isplit_export.target_names import ALIASES
from isplit_export.targets.profiles import TargetProfile, list_targets, load_target, validate_profile

TARGETS_DIR = Path(__file__).resolve().parents[3] / "isplit_export" / "profiles"
EXPECTED = {
    "cpu",
    "jetson-orin-agx",
    "jetson-orin-agx-jp7",
    "x86-tensorrt-11",
    "jetson-orin-nano",
    "jetson-orin-nx",
    "jetson-xavier-nx",
    "onnx",
    "x86-tensorrt",
}


def _good() -> dict[str, Any]:
    """A valid profile to break one field at a time."""
    return load_target("jetson-orin-agx").to_json()


def test_every_profile_file_loads_validates_and_round_trips() -> None:
    names = {p.stem for p in TARGETS_DIR.glob("*.json")}
    assert names == EXPECTED
    for name in sorted(names):
        profile = load_target(name)
        assert isinstance(profile, TargetProfile)
        assert profile.name == name
        on_disk = json.loads((TARGETS_DIR / f"{name}.json").read_text(encoding="utf-8"))
        assert profile.to_json() == on_disk  # to_json is exactly the file: the manifest's target block
        assert validate_profile(profile.to_json(), f"{name}.json") == profile
        assert profile.max_opset >= OPSET
        assert profile.default_precision in profile.precisions
        assert profile.default_boundary in ("fp32", "fp16", "int8")


def test_list_targets_is_sorted_and_complete() -> None:
    found = [t.name for t in list_targets()]
    assert found == sorted(EXPECTED)


def test_jetson_alias_is_the_orin_nx_profile() -> None:
    assert ALIASES == {"jetson": "jetson-orin-nx"}
    assert load_target("jetson") == load_target("jetson-orin-nx")
    assert "jetson" in target_names.target_names()


def test_unknown_target_lists_every_valid_name_in_one_line() -> None:
    with pytest.raises(BadInputError) as err:
        load_target("foo")
    message = str(err.value)
    assert err.value.exit_code == EXIT_BAD_INPUT
    assert "\n" not in message
    assert message.startswith("unknown target 'foo': choose one of ")
    assert "isplit-export targets" in message
    for name in [*EXPECTED, "jetson"]:
        assert name in message


@pytest.mark.parametrize(
    ("name", "kind", "backend", "jetpack", "trt", "cuda", "dla"),
    [
        ("jetson-orin-agx", "jetson", "tensorrt", "6.2", "10.3", "12.6", 2),
        ("jetson-orin-nx", "jetson", "tensorrt", "6.2", "10.3", "12.6", 1),
        ("jetson-orin-nano", "jetson", "tensorrt", "6.2", "10.3", "12.6", 0),
        ("jetson-xavier-nx", "jetson", "tensorrt", "5.1", "8.5.2", "11.4", 2),
        ("x86-tensorrt", "server", "tensorrt", None, "10.3", "12", 0),
        ("cpu", "cpu", "onnxruntime", None, None, None, 0),
        ("onnx", "onnx", "onnxruntime", None, None, None, 0),
    ],
)
def test_profile_facts(
    name: str, kind: str, backend: str, jetpack: str | None, trt: str | None, cuda: str | None, dla: int
) -> None:
    """The looked-up platform facts (isplit_export/profiles/README.md cites the sources) stay what the docs say."""
    p = load_target(name)
    assert (p.kind, p.backend, p.jetpack, p.tensorrt_version, p.cuda, p.dla_cores) == (
        kind,
        backend,
        jetpack,
        trt,
        cuda,
        dla,
    )
    assert p.uses_tensorrt == (backend == "tensorrt")
    assert p.has_dla == (dla > 0)


def test_opset_limits_match_the_parsers() -> None:
    assert load_target("jetson-xavier-nx").max_opset == 17  # TensorRT 8.5's ONNX parser
    assert load_target("jetson-orin-nx").max_opset >= 17
    assert load_target("onnx").int8 is False and load_target("onnx").default_boundary == "fp32"
    assert load_target("cpu").int8 is True and "int8" in load_target("cpu").precisions


def _refused(data: dict[str, Any], field: str, source: str | None = None) -> str:
    """Validation fails with one line naming the source file and ``field``."""
    source = source or f"{data.get('name')}.json"
    with pytest.raises(BadInputError) as err:
        validate_profile(data, source)
    message = str(err.value)
    assert source in message, message
    assert f"'{field}'" in message, message
    assert "\n" not in message
    return message


def test_missing_field_is_named() -> None:
    data = _good()
    del data["workspace_mib"]
    assert "missing" in _refused(data, "workspace_mib")


def test_unknown_field_is_named() -> None:
    data = _good()
    data["dla_core"] = 1  # typo of dla_cores
    _refused(data, "dla_core")


def test_bad_precision_is_refused() -> None:
    data = _good()
    data["precisions"] = ["fp32", "bf16"]
    _refused(data, "precisions")


def test_default_precision_must_be_listed() -> None:
    data = _good()
    data["precisions"], data["int8"], data["default_precision"] = ["fp32", "fp16"], False, "int8"
    _refused(data, "default_precision")


def test_dla_with_fp32_only_is_refused() -> None:
    data = _good()
    data["precisions"], data["default_precision"], data["int8"] = ["fp32"], "fp32", False
    message = _refused(data, "dla_cores")
    assert "fp16/int8" in message


def test_dla_outside_jetson_is_refused() -> None:
    data = load_target("x86-tensorrt").to_json()
    data["dla_cores"] = 1
    _refused(data, "dla_cores")


def test_int8_flag_must_agree_with_precisions() -> None:
    data = _good()
    data["int8"] = False
    _refused(data, "int8")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("kind", "phone"),
        ("backend", "tflite"),
        ("dla_cores", True),
        ("dla_cores", -1),
        ("workspace_mib", "4G"),
        ("default_boundary", "bf16"),
        ("int8", "yes"),
        ("tensorrt", "ten"),
        ("name", "Jetson Orin"),
        ("description", ""),
    ],
)
def test_bad_values_are_refused_by_field(field: str, value: object) -> None:
    data = _good()
    data[field] = value
    _refused(data, field)


def test_cross_field_rules() -> None:
    data = _good()
    data["jetpack"] = None
    _refused(data, "jetpack")
    data = _good()
    data["backend"] = "onnxruntime"
    _refused(data, "backend")
    data = _good()
    data["tensorrt_version"] = None
    _refused(data, "tensorrt_version")
    data = _good()
    data["workspace_mib"] = 0
    _refused(data, "workspace_mib")
    data = load_target("cpu").to_json()
    data["tensorrt_version"] = "10.3"
    _refused(data, "tensorrt_version")
    data = _good()
    data["max_opset"] = OPSET - 1
    _refused(data, "max_opset")


def test_name_must_match_the_file_name() -> None:
    _refused(_good(), "name", source="jetson-orin-nano.json")


def test_not_an_object_is_refused() -> None:
    with pytest.raises(BadInputError, match=r"broken\.json"):
        validate_profile([], "broken.json")  # type: ignore[arg-type]


def test_unreadable_profile_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    monkeypatch.setattr(target_names, "profiles_folder", lambda: tmp_path)
    with pytest.raises(BadInputError, match=r"bad target profile bad\.json: not readable JSON"):
        load_target("bad")


def test_profiles_and_calibration_are_package_data_a_wheel_carries() -> None:
    """One folder each inside the package, and pyproject's package-data globs name every file in them."""
    import ast
    import fnmatch
    import re

    assert Path(str(target_names.profiles_folder())) == TARGETS_DIR
    root = TARGETS_DIR.parents[1]
    pyproject = (root / "pyproject.toml").read_text(encoding="utf-8")  # no tomllib on Python 3.10
    package_data = pyproject.split("[tool.setuptools.package-data]", 1)[1]
    found = re.search(r'^"isplit_export" = (\[.*\])$', package_data, re.MULTILINE)
    assert found, "pyproject.toml declares no package data for isplit_export"
    globs = ast.literal_eval(found.group(1))
    for folder in ("profiles", "calibration"):
        files = sorted((root / "isplit_export" / folder).iterdir())
        assert files, folder
        for f in files:
            rel = f"{folder}/{f.name}"
            assert any(fnmatch.fnmatch(rel, g) for g in globs), f"{rel} is not package data"
    assert not (root / "targets").exists() and not (root / "calibration").exists()


def test_targets_command_shows_each_tensorrt_version(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.support.helpers import run_cli

    code, out, _ = run_cli(capsys, "targets")
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    for profile in list_targets():
        expected = f"TensorRT {profile.tensorrt_version}" if profile.tensorrt_version else "onnxruntime"
        assert expected in rows[profile.name], rows[profile.name]
