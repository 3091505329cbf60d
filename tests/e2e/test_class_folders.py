"""``rank`` and ``study`` on class folders with names of their own (the digits as "zero".."nine"): labelled
through ``--class-map``, agreement with the full model (said once) without it, and a mismatch refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.support.helpers import DIGITS, run_cli

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(scope="module")
def named_digits(tmp_path_factory: pytest.TempPathFactory, digits_dir: Path) -> tuple[Path, Path]:
    """The 200 held-out digits with their folders renamed to words, and the class map back to indices."""
    root = tmp_path_factory.mktemp("named")
    data = root / "digits"
    for i, word in enumerate(WORDS):
        shutil.copytree(digits_dir / str(i), data / word)
    cmap = root / "classes.json"
    cmap.write_text(json.dumps({w: i for i, w in enumerate(WORDS)}))
    return data, cmap


def _note_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if "measuring agreement with the full model" in ln]


@pytest.mark.e2e
def test_rank_on_named_folders(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    digits_weights: Path,
    digits_dir: Path,
    named_digits: tuple[Path, Path],
) -> None:
    """With the map the named folders rank exactly as the numbered ones (class-specific, on the labels);
    without it the images are unlabelled, and the ranking says so."""
    data, cmap = named_digits
    common = ["rank", DIGITS, "--weights", digits_weights, "--score", "label", "--bootstrap", "0"]
    code, _, err = run_cli(capsys, *common, "--data", digits_dir, "--classes", "2,3", "--out", tmp_path / "n")
    assert code == 0, err
    code, _, err = run_cli(
        capsys,
        *common,
        "--data",
        data,
        "--class-map",
        cmap,
        "--classes",
        "two,three",
        "--out",
        tmp_path / "w",
    )
    assert code == 0, err
    numbered = json.loads((tmp_path / "n" / "ranking.json").read_text())
    named = json.loads((tmp_path / "w" / "ranking.json").read_text())
    assert numbered["labels"] == "folder_names" and named["labels"] == "class_map"
    assert named["images"] == numbered["images"] < 200
    assert [c["cui"] for c in named["candidates"]] == [c["cui"] for c in numbered["candidates"]]
    # without the map: no labels, so --score label is refused; --score top runs on agreement and says so
    code, _, err = run_cli(capsys, *common, "--data", data, "--classes", "two,three")
    assert code == 2 and "--score label needs labelled images" in err
    code, _, err = run_cli(
        capsys, "rank", DIGITS, "--weights", digits_weights, "--data", data, "--out", tmp_path / "u"
    )
    assert code == 0, err
    assert len(_note_lines(err)) == 1, err
    assert json.loads((tmp_path / "u" / "ranking.json").read_text())["labels"] == "none"
    # a folder missing from the map: one line, exit 2, nothing written
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({w: i for i, w in enumerate(WORDS[:9])}))
    code, _, err = run_cli(
        capsys,
        "rank",
        DIGITS,
        "--weights",
        digits_weights,
        "--data",
        data,
        "--class-map",
        partial,
        "--out",
        tmp_path / "x",
    )
    assert code == 2 and [ln for ln in err.splitlines() if ln.strip()] == [
        f"error: --class-map {partial} does not map class folder(s) 'nine' of {data}: "
        "add them (every class folder needs a class index)"
    ]
    assert not (tmp_path / "x").exists()


@pytest.mark.e2e
def test_study_classes_on_named_folders(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, digits_weights: Path, named_digits: tuple[Path, Path]
) -> None:
    """``study --classes two,three``: accuracy on the chosen folders with the map, agreement (said once, and
    named in study.json) without it; a class with no folder is refused before any work."""
    data, cmap = named_digits
    common = ["study", DIGITS, "--weights", digits_weights, "--data", data, "--classes", "two,three"]
    fast = ["--train-steps", "10", "--repeats", "1"]
    code, _, err = run_cli(capsys, *common, "--class-map", cmap, *fast, "--out", tmp_path / "m")
    assert code == 0, err
    mapped = json.loads((tmp_path / "m" / "study.json").read_text())
    assert mapped["images"]["labels"] == "class_map" and mapped["images"]["labelled"] is True
    assert mapped["summary"]["classes"]["metric"] == "accuracy" and not _note_lines(err)
    for cut in mapped["cuts"]:
        assert 0 < cut["class_measured"]["images"] < cut["measured"]["images"]
        assert cut["class_measured"]["metric"] == "accuracy"
    code, _, err = run_cli(capsys, *common, *fast, "--out", tmp_path / "a")
    assert code == 0, err
    assert len(_note_lines(err)) == 1, err
    unmapped = json.loads((tmp_path / "a" / "study.json").read_text())
    assert unmapped["images"]["labels"] == "none" and unmapped["summary"]["classes"]["metric"] == "agreement"
    assert [c["class_measured"]["images"] for c in unmapped["cuts"]] == [
        c["class_measured"]["images"] for c in mapped["cuts"]
    ]
    code, _, err = run_cli(capsys, *common[:-1], "two,ten", "--out", tmp_path / "x")
    assert code == 2 and "class 'ten' has no class folder" in err and not (tmp_path / "x").exists()
