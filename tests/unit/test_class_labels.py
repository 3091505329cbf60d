"""Class folders with names of their own: ``--class-map`` read and checked, folder names matched to the
model's class names, and every mismatch refused before the model is loaded (no model runs here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from isplit_export.class_labels import resolve_class_labels
from isplit_export.errors import BadInputError
from isplit_export.options import MAX_CLASS_MAP_ENTRIES, ClassMap, RankOptions, StudyOptions
from tests.support.helpers import DIGITS, run_cli_without_torch

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
MISSING_WEIGHTS = "no-such-weights.pt"
"""A weights path that does not exist: a refusal about classes proves the weights were never loaded."""


def folders(root: Path, names: list[str]) -> Path:
    for name in names:
        (root / name).mkdir(parents=True)
    return root


def write_map(path: Path, mapping: object) -> Path:
    path.write_text(json.dumps(mapping))
    return path


def test_class_map_reads_a_json_object_of_class_indices(tmp_path: Path) -> None:
    m = ClassMap.read(write_map(tmp_path / "m.json", {"two": 2, "one": 1}))
    assert m.mapping() == {"one": 1, "two": 2} and m.entries == (("one", 1), ("two", 2))
    assert RankOptions(model=DIGITS, class_map=m) == RankOptions(model=DIGITS, class_map=tmp_path / "m.json")
    assert RankOptions(model=DIGITS, class_map=m).to_json()["class_map"]["entries"] == [
        ["one", 1],
        ["two", 2],
    ]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("not json", "is not JSON"),
        ("[1, 2]", "non-empty JSON object"),
        ("{}", "non-empty JSON object"),
        ('{"a": 1, "a": 2}', "mapped twice"),
        ('{"a": -1}', "not a class index"),
        ('{"a": true}', "not a class index"),
        ('{"a": 1.5}', "not a class index"),
        ('{"a": "1"}', "not a class index"),
    ],
)
def test_a_bad_class_map_is_one_line(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "m.json"
    path.write_text(text)
    with pytest.raises(BadInputError, match=needle) as info:
        ClassMap.read(path)
    assert "\n" not in str(info.value) and "--class-map" in str(info.value)


def test_a_class_map_is_bounded(tmp_path: Path) -> None:
    big = {f"f{i}": i for i in range(MAX_CLASS_MAP_ENTRIES + 1)}
    with pytest.raises(BadInputError, match="entries, over"):
        ClassMap.read(write_map(tmp_path / "m.json", big))
    (tmp_path / "huge.json").write_bytes(b" " * (2 << 20))
    with pytest.raises(BadInputError, match="bytes"):
        ClassMap.read(tmp_path / "huge.json")
    with pytest.raises(BadInputError, match="cannot read"):
        ClassMap.read(tmp_path / "absent.json")


def test_named_folders_with_a_class_map_are_labelled(tmp_path: Path) -> None:
    data = folders(tmp_path / "d", WORDS)
    cmap = write_map(tmp_path / "m.json", {w: i for i, w in enumerate(WORDS)})
    got = resolve_class_labels(
        RankOptions(
            model=DIGITS, weights=MISSING_WEIGHTS, data=data, class_map=cmap, classes=("two", "Three")
        )
    )
    assert got.source == "class_map" and got.labels["seven"] == 7 and got.note is None
    assert got.keep == frozenset({"two", "three"})


def test_folders_named_after_the_classes_need_no_map(tmp_path: Path) -> None:
    data = folders(tmp_path / "d", [str(i) for i in range(10)])
    got = resolve_class_labels(RankOptions(model=DIGITS, weights=MISSING_WEIGHTS, data=data))
    assert got.source == "folder_names" and got.labels == {str(i): i for i in range(10)}


def test_named_folders_without_a_map_are_agreement_and_say_so(tmp_path: Path) -> None:
    data = folders(tmp_path / "d", WORDS)
    got = resolve_class_labels(StudyOptions(model=DIGITS, weights="none", data=data, classes=("two",)))
    assert got.source == "none" and got.labels == {} and got.keep == frozenset({"two"})
    assert got.note is not None and "agreement with the full model" in got.note and "--class-map" in got.note
    assert "--weights none" in got.note


@pytest.mark.parametrize(
    ("names", "mapping", "options", "needle"),
    [
        (WORDS, {w: i for i, w in enumerate(WORDS[:9])}, {}, "does not map class folder(s) 'nine'"),
        (
            WORDS,
            {**{w: i for i, w in enumerate(WORDS)}, "nine": 10},
            {},
            "maps to class 10, but the model has 10",
        ),
        (
            WORDS,
            {w: i for i, w in enumerate(WORDS)},
            {"classes": ("ten",)},
            "class 'ten' has no class folder",
        ),
        (WORDS, None, {"classes": ("two", "eleven")}, "class 'eleven' has no class folder"),
        (["0", "1", "cat"], None, {}, "'cat' of"),
    ],
)
def test_every_mismatch_is_refused_before_the_model_loads(
    tmp_path: Path, names: list[str], mapping: dict[str, int] | None, options: dict[str, object], needle: str
) -> None:
    data = folders(tmp_path / "d", names)
    cmap = None if mapping is None else write_map(tmp_path / "m.json", mapping)
    opts = RankOptions(model=DIGITS, weights=MISSING_WEIGHTS, data=data, class_map=cmap, **options)  # type: ignore[arg-type]
    with pytest.raises(BadInputError, match=needle.replace("(", r"\(").replace(")", r"\)")) as info:
        resolve_class_labels(opts)
    assert "\n" not in str(info.value)


def test_a_class_map_needs_class_folders(tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    cmap = write_map(tmp_path / "m.json", {"a": 1})
    with pytest.raises(BadInputError, match="has none: pass --data with one sub-folder per class"):
        resolve_class_labels(RankOptions(model=DIGITS, data=flat, class_map=cmap))


def test_without_class_names_only_indices_select_classes(tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    opts = RankOptions(model=DIGITS, weights="none", data=flat, classes=("two",))
    with pytest.raises(BadInputError, match="declares no class names"):
        resolve_class_labels(opts)
    assert resolve_class_labels(opts.replace(classes=("2",))).subset is None  # checked once loaded
    named = opts.replace(weights=MISSING_WEIGHTS)  # the digits CNN's classes are named "0".."9"
    assert resolve_class_labels(named.replace(classes=("2",))).subset == (2,)
    with pytest.raises(BadInputError, match="class 'two' is not a class of the model"):
        resolve_class_labels(named)


@pytest.mark.parametrize("command", ["rank", "study"])
def test_the_cli_refuses_a_map_without_the_folders_before_importing_torch(
    tmp_path: Path, command: str
) -> None:
    """The checks that need no class names run before torch is imported (the child cannot import it)."""
    data = folders(tmp_path / "d", WORDS)
    cmap = write_map(tmp_path / "m.json", {w: i for i, w in enumerate(WORDS[1:], start=1)})
    proc = run_cli_without_torch(
        command, DIGITS, "--weights", MISSING_WEIGHTS, "--data", data, "--class-map", cmap
    )
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines == [
        f"error: --class-map {cmap} does not map class folder(s) 'zero' of {data}: add them (every class folder needs a class index)"
    ]
    proc = run_cli_without_torch(command, DIGITS, "--data", data, "--classes", "ten", "--out", tmp_path / "o")
    assert proc.returncode == 2 and "class 'ten' has no class folder" in proc.stderr, proc.stderr
    assert not (tmp_path / "o").exists()
