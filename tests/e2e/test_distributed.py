"""Distributed ranking under torchrun (CPU, gloo), DataLoader decoding workers, exact sums.

The torchrun tests launch real process groups of 2 processes (``python -m torch.distributed.run
--standalone``) on the trained digits CNN and its labelled held-out digits.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from isplit_export.cli import main
from isplit_export.data import Shard, load_images
from isplit_export.distributed import merge_order
from isplit_export.ranking import exactsum
from isplit_export.ranking.graph import trace
from isplit_export.ranking.importance import compute_importance
from isplit_export.zoo import DIGITS_PREPROCESSING, DigitsCNN
from tests.support.helpers import DIGITS


def _torchrun(nproc: int, *args: object, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "ISPLIT_DIST_TIMEOUT_S": "60"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "isplit_export.cli",
        *map(str, args),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)


def _one_process(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun process
    try:
        code = main([*map(str, args)])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr()
    return code, out.out, out.err


def _two_and_one(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    *common: object,
    two: tuple[object, ...] = (),
    one: tuple[object, ...] = (),
) -> str:
    """Run ``common`` under torchrun (2 processes, ``--out tmp_path/two``) and in one process (``.../one``);
    both succeed and process 0 alone prints the single process's lines. Returns those lines."""
    run = _torchrun(2, *common, "--out", tmp_path / "two", *two)
    assert run.returncode == 0, run.stderr
    code, out_one, err = _one_process(capsys, *common, "--out", tmp_path / "one", *one)
    assert code == 0, err
    assert run.stdout.replace(str(tmp_path / "two"), str(tmp_path / "one")) == out_one
    return out_one


def _corrupt(path: Path) -> None:
    path.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")


@pytest.mark.e2e
def test_two_processes_give_the_single_process_ranking(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, digits_weights: Path, digits_dir: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(digits_dir, data)
    _corrupt(data / "9" / "zzzz_corrupt.png")  # the last image: skipped and counted once, by one process
    common = ("rank", DIGITS, "--weights", digits_weights, "--data", data, "--score", "label", "--top", "3")
    out_one = _two_and_one(capsys, tmp_path, *common, two=("--workers", "1"), one=("--workers", "0"))
    assert "200 images (1 unreadable files skipped)" in out_one

    one = json.loads((tmp_path / "one" / "ranking.json").read_text())
    two = json.loads((tmp_path / "two" / "ranking.json").read_text())
    assert "distributed" not in one
    assert two.pop("distributed") == {"world_size": 2, "backend": "gloo"}
    cui1 = np.array([c["cui"] for c in one["candidates"]])
    cui2 = np.array([c["cui"] for c in two["candidates"]])
    np.testing.assert_allclose(cui2, cui1, rtol=1e-6, atol=0)
    assert two == one  # in fact identical: exact sums, and every batch holds the same images
    for name in ("cui.png", "cde.png"):
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()


@pytest.mark.e2e
def test_two_processes_give_the_single_process_rate_accuracy_grid(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, digits_weights: Path, digits_dir: Path
) -> None:
    common = ("rank", DIGITS, "--weights", digits_weights, "--data", digits_dir, "--budgets", "16B,64B")
    out_one = _two_and_one(capsys, tmp_path, *common, "--workers", "0")
    assert "per code budget (16B,64B, int8)" in out_one
    one = json.loads((tmp_path / "one" / "ranking.json").read_text())
    two = json.loads((tmp_path / "two" / "ranking.json").read_text())
    assert two.pop("distributed") == {"world_size": 2, "backend": "gloo"}
    assert len(one["rate_accuracy"]["cuts"]) >= 2
    assert two == one
    for name in ("rate_accuracy.png", "cui.png"):
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()


@pytest.mark.e2e
def test_two_processes_share_the_study_cuts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, digits_weights: Path, digits_dir: Path
) -> None:
    common = (
        "study",
        DIGITS,
        "--weights",
        digits_weights,
        "--data",
        digits_dir,
        "--cuts",
        "all",
        "--train-steps",
        "16",
        "--workers",
        "0",
    )
    _two_and_one(capsys, tmp_path, *common)
    one = json.loads((tmp_path / "one" / "study.json").read_text())
    two = json.loads((tmp_path / "two" / "study.json").read_text())
    assert two.pop("distributed") == {"world_size": 2, "backend": "gloo"} and "distributed" not in one
    assert (
        set(one.pop("run")["train_seconds"])
        == set(two.pop("run")["train_seconds"])
        == {str(i) for i in range(6)}
    )
    assert two == one
    assert (tmp_path / "two" / "study.png").read_bytes() == (tmp_path / "one" / "study.png").read_bytes()


@pytest.mark.e2e
def test_a_failing_process_fails_the_job_and_writes_nothing(
    tmp_path: Path, digits_weights: Path, digits_dir: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(digits_dir, data)
    Image.new("1", (20000, 20000)).save(
        data / "0" / "zzz_bomb.png"
    )  # Pillow refuses it: an error, not a skip
    images = load_images(data, DIGITS_PREPROCESSING)
    bomb = next(i for i, it in enumerate(images.items) if it.name == "0/zzz_bomb.png")
    assert bomb in Shard(1, 2, 16).indices(len(images)), "the bad file must be in process 1's shard"
    out = tmp_path / "out"  # (an existing non-empty --out is refused before any work: outdir.check_out)
    run = _torchrun(
        2, "rank", DIGITS, "--weights", digits_weights, "--data", data, "--out", out, "--workers", "1"
    )
    assert run.returncode != 0
    lines = [ln for ln in run.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, run.stderr
    assert "process 1 of 2 (rank 1) failed" in lines[0] and "0/zzz_bomb.png" in lines[0], lines[0]
    assert "nothing was written" in lines[0]
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no temp dir, no lock
    assert run.stdout == ""


@pytest.mark.e2e
def test_distributed_flag_without_torchrun_is_a_world_of_one(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, digits_weights: Path, digits_dir: Path
) -> None:
    code, _, err = _one_process(
        capsys,
        "rank",
        DIGITS,
        "--weights",
        digits_weights,
        "--data",
        digits_dir,
        "--images",
        "40",
        "--workers",
        "0",
        "--out",
        tmp_path,
        "--distributed",
    )
    assert code == 0, err
    data = json.loads((tmp_path / "ranking.json").read_text())
    assert data["distributed"] == {"world_size": 1, "backend": "gloo"} and data["images"] == 40
    assert not torch.distributed.is_initialized()


def _digits_traced(digits_weights: Path) -> object:
    model = DigitsCNN()
    model.load_state_dict(torch.load(digits_weights))
    return trace(model.eval(), DIGITS_PREPROCESSING.input_shape)


@pytest.mark.e2e
def test_workers_give_the_same_cui_as_decoding_inline(digits_weights: Path, digits_dir: Path) -> None:
    traced = _digits_traced(digits_weights)
    images = load_images(digits_dir, DIGITS_PREPROCESSING)
    inline = compute_importance(traced, images, batch_size=16, workers=0)  # type: ignore[arg-type]
    workers = compute_importance(traced, images, batch_size=16, workers=2)  # type: ignore[arg-type]
    assert inline.images == workers.images == 200
    assert inline.counts == workers.counts
    np.testing.assert_array_equal(workers.cui(), inline.cui())


def test_unreadable_files_are_counted_once_with_workers(tmp_path: Path, digits_dir: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(digits_dir, data)
    _corrupt(data / "3" / "broken.png")
    _corrupt(data / "7" / "broken.png")
    images = load_images(data, DIGITS_PREPROCESSING)
    assert len(images) == 202
    for _ in range(2):  # read twice: still counted once each
        batches = list(images.indexed_batches(16, workers=2))
        assert [len(b) for b in batches] == [16] * 12 + [8]  # refilled to full batches around the gaps
        indices = torch.cat([b.indices for b in batches]).tolist()
        assert len(indices) == 200 and indices == sorted(indices)  # global indices, in order
    assert images.skipped == 2 and images.unreadable == {"3/broken.png", "7/broken.png"}
    names = [it.name for it in images.items]
    assert all(names[i] not in images.unreadable for i in indices)


_KILLED_WORKER = """
import os, signal, sys
from pathlib import Path
from isplit_export.data import ImageItem, ImageSet, load_images
from isplit_export.zoo import DIGITS_PREPROCESSING

def kill_this_process():
    os.kill(os.getpid(), signal.SIGKILL)

images = load_images(Path(sys.argv[1]), DIGITS_PREPROCESSING)
killer = ImageItem("0/killer.png", kill_this_process, 0, "0")  # runs in the worker (workers=1)
doomed = ImageSet([*images.items[:20], killer, *images.items[20:40]], DIGITS_PREPROCESSING, "test")
try:
    list(doomed.batches(8, workers=1))
except RuntimeError as err:
    print("caught:", err)
print("after")
"""


@pytest.mark.e2e
def test_a_killed_decoding_worker_is_an_error_not_a_hang(digits_dir: Path) -> None:
    # in a child process: the DataLoader's SIGCHLD handler must not fire inside pytest
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-c", _KILLED_WORKER, str(digits_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == 2 and lines[1] == "after", run.stdout
    # PyTorch words it either way, depending on whether the worker loop or the SIGCHLD handler sees it first
    assert lines[0].startswith("caught: DataLoader worker"), lines[0]
    assert "exited unexpectedly" in lines[0] or "killed by signal" in lines[0], lines[0]


def test_shards_partition_the_images_in_whole_batches() -> None:
    for world in (1, 2, 3, 5):
        shards = [Shard(r, world, 4).indices(23) for r in range(world)]
        assert sorted(i for s in shards for i in s) == list(range(23))
        for r, s in enumerate(shards):
            assert all((i // 4) % world == r for i in s)
    assert merge_order([[0, 2, 4], [1, 3]], 5, 2) == [0, 1, 2, 3, 4]


def test_exact_sums_do_not_depend_on_order_or_grouping() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.random(300) * 10.0 ** rng.integers(-12, 3, 300), [0.0, 1e-300, 5e-324]])
    rows = exactsum.to_fixed(values[:, None])
    total = exactsum.sum_rows(rows, 1)
    shuffled = rows[:]
    random.Random(0).shuffle(shuffled)
    halves = [exactsum.sum_rows(shuffled[:100], 1), exactsum.sum_rows(shuffled[100:], 1)]
    assert exactsum.sum_rows(shuffled, 1) == total == exactsum.sum_rows(halves, 1)
    # correctly rounded, like math.fsum; a float64 running sum is not, in general
    assert float(exactsum.to_float(total)[0]) == math.fsum(values.tolist())
    assert float(exactsum.to_float(total, 7)[0]) == pytest.approx(math.fsum(values.tolist()) / 7, rel=1e-15)
