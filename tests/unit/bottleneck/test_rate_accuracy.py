"""The probe's rate-accuracy grid (:mod:`isplit_export.bottleneck.rate_accuracy`): the ``--budgets`` ladder, the
nested codes (a smaller budget's PCA is the prefix of a larger one's), the grid against the one-budget probe
on the committed digits CNN (no training: PCA fits on a few images), and its JSON, table and plot."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from isplit_export.bottleneck.pca import CovarianceSums, PatchPCA, PcaDecoder, fit, patches
from isplit_export.bottleneck.probe import run_probe
from isplit_export.bottleneck.rate_accuracy import decode_linear, run_grid
from isplit_export.bundle.grid_table import format_grid, grid_lines
from isplit_export.contract.rate_accuracy import RateAccuracyGrid
from isplit_export.errors import BadInputError
from isplit_export.options import RankOptions
from isplit_export.options_bottleneck import parse_ladder, parse_size
from isplit_export.plots_rate import plot_rate_accuracy
from isplit_export.ranking.graph import trace
from isplit_export.zoo import DIGITS_PREPROCESSING, digits_arrays, digits_tensor
from tests.support.helpers import DIGITS, run_cli


@pytest.mark.parametrize(
    ("text", "fp16_bytes", "budgets"),
    [
        ("16B..1KiB", 0, [16, 32, 64, 128, 256, 512, 1024]),
        ("16B..1KiB*4", 0, [16, 64, 256, 1024]),
        ("16B..1000B*4", 0, [16, 64, 256]),
        ("1KiB,16B,64B,16B", 0, [16, 64, 1024]),
        ("64B", 0, [64]),
        ("16B..", 300, [16, 32, 64, 128, 256]),
        ("1KiB..4KiB", 0, [1024, 2048, 4096]),
    ],
)
def test_ladders_list_their_budgets(text: str, fp16_bytes: int, budgets: list[int]) -> None:
    assert parse_ladder(text).budgets(fp16_bytes) == budgets


@pytest.mark.parametrize(
    "text",
    [
        "1/16..1KiB",
        "16B..8B",
        "16B..1KiB*1",
        "16B..1KiB*x",
        "16B*2",
        "",
        "16B,,32B",
        "0.5,64B",
        ",".join(f"{i}B" for i in range(1, 70)),
    ],
)
def test_a_bad_ladder_is_one_line_naming_the_flag(text: str) -> None:
    with pytest.raises(BadInputError) as err:
        parse_ladder(text)
    assert "--budgets" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(BadInputError, match="--budgets"):
        RankOptions(budgets=text)


def test_cli_refuses_a_bad_ladder_before_any_model_work(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "rank", DIGITS, "--weights", "nosuch.pt", "--budgets", "1KiB..16B")
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1 and "--budgets 1KiB..16B" in lines[0], err


def _sums(seed: int, d: int) -> CovarianceSums:
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(40, 3, 8, 8, generator=gen) * torch.linspace(0.2, 3.0, 3).reshape(1, 3, 1, 1)
    sums = CovarianceSums(d)
    sums.add(patches(a, 2))
    return sums


def test_a_smaller_budgets_pca_is_the_prefix_of_a_larger_ones() -> None:
    sums = _sums(0, 12)
    large = fit(sums, 2, 10, (3, 8, 8))  # the full eigh (10 * 4 > 12)
    for k in (1, 2, 3):  # the top-k solver (k * 4 <= 12)
        small = fit(sums, 2, k, (3, 8, 8))
        prefix = large.prefix(k)
        assert torch.allclose(prefix.components, small.components, atol=1e-10)
        assert torch.allclose(prefix.eigenvalues, small.eigenvalues, rtol=1e-10)
        assert torch.equal(prefix.mean, small.mean)
    lo, hi = -torch.arange(1.0, 11.0), torch.arange(1.0, 11.0) * 2
    large.set_ranges(lo, hi)
    small = fit(sums, 2, 4, (3, 8, 8))
    small.set_ranges(lo[:4], hi[:4])
    prefix = large.prefix(4)
    assert (
        prefix.mid is not None
        and prefix.half is not None
        and small.mid is not None
        and small.half is not None
    )
    assert torch.equal(prefix.mid, small.mid) and torch.equal(prefix.half, small.half)


@pytest.mark.parametrize(
    ("shape", "k", "channels", "layout"), [((5, 9, 7), 2, 3, "nchw"), ((6, 8, 8), 4, 5, "nhwc")]
)
def test_the_grids_decoder_computes_what_the_pca_decoder_does(
    shape: tuple[int, int, int], k: int, channels: int, layout: str
) -> None:
    gen = torch.Generator().manual_seed(1)
    d = shape[0] * k * k
    v = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))[0][:channels]
    pca = PatchPCA(
        shape,
        k,
        v,
        torch.ones(channels, dtype=torch.float64),
        torch.randn(d, generator=gen, dtype=torch.float64),
        True,
        layout=layout,
    )
    pca.set_ranges(-torch.rand(channels, generator=gen) - 0.5, torch.rand(channels, generator=gen) + 0.5)
    dec = PcaDecoder(pca, residual=False).eval()
    z = torch.randn(3, channels, shape[1] // k, shape[2] // k, generator=gen)
    with torch.no_grad():
        assert torch.allclose(decode_linear(dec, z), dec(z), atol=1e-5)


@pytest.fixture(scope="module")
def digits_grid(digits_model: tuple[torch.nn.Module, float]) -> tuple[Any, Any, Any]:
    """The grid (16B, 64B, 256B, over all cuts) and the one-budget probe at 64B on 160 train and 80 held-out
    digits (the last quarter, which the committed CNN never saw)."""
    model, _ = digits_model
    traced = trace(model, DIGITS_PREPROCESSING.input_shape)
    images, labels = digits_arrays()
    x = digits_tensor(images[-240:])
    x_train, x_held, lab = x[:160], x[160:], labels[-80:].astype(np.int64)
    grid = run_grid(traced, traced.cuts, parse_ladder("16B,64B,256B"), x_train, x_held, lab)
    probe = run_probe(traced, traced.cuts, parse_size("64B"), x_train, x_held, None, lab)
    return traced, grid, probe


def test_the_grid_at_a_budget_is_the_one_budget_probe(digits_grid: tuple[Any, Any, Any]) -> None:
    traced, grid, probe = digits_grid
    assert grid.budgets == [16, 64, 256] and sorted(grid.points) == [c.index for c in traced.cuts]
    groups = {(i, p["kernel"]) for i, pts in grid.points.items() for p in pts}
    assert grid.groups == len(groups) < sum(len(pts) for pts in grid.points.values())  # each (cut, k) once
    for i, pts in grid.points.items():
        at = {p["budget"]: p for p in pts}
        want = probe.scores[i]
        got = at[64]
        assert got["code_shape"] == want["code_shape"] and got["kernel"] == want["kernel"]
        assert got["images"] == want["images"] == 80
        assert abs(got["value"] - want["value"]) <= 1 / 80, (i, got, want)  # a float32 rounding may flip one
        assert [p["budget"] for p in pts] == sorted(p["budget"] for p in pts)
        assert all(p["code_bytes"] <= p["budget"] for p in pts)


def test_the_grid_block_reads_back_and_prints_and_draws(
    digits_grid: tuple[Any, Any, Any], tmp_path: Path
) -> None:
    traced, grid, _ = digits_grid
    n = len(traced.cuts)
    block = grid.to_json([1 if i == 2 else None for i in range(n)], [-2.0 - 0.1 * i for i in range(n)])
    typed = RateAccuracyGrid.from_json(block)
    assert typed.budgets == (16, 64, 256) and len(typed.cuts) == n and typed.cuts[2].cui_rank == 1
    assert len(typed.points) == sum(len(c["points"]) for c in block["cuts"])
    lines = format_grid(typed).splitlines()
    assert len(lines) == 2 + n and lines[1].split()[-3:] == ["16B", "64B", "256B"]
    assert grid_lines({"rate_accuracy": block}) == lines and grid_lines({}) == []
    ranking = {"model": "digits", "rate_accuracy": block}
    plot_rate_accuracy(ranking, tmp_path / "a.png")
    plot_rate_accuracy(copy.deepcopy(ranking), tmp_path / "b.png")
    png = (tmp_path / "a.png").read_bytes()
    assert png.startswith(b"\x89PNG") and png == (tmp_path / "b.png").read_bytes()
    bad = copy.deepcopy(block)
    bad["cuts"][0]["points"][0]["ci95"] = [0.5]
    with pytest.raises(BadInputError, match="ci95"):
        RateAccuracyGrid.from_json(bad)


def test_a_rank_output_with_the_grids_plots_is_still_a_rank_output(tmp_path: Path) -> None:
    from isplit_export.outdir import replaceable

    (tmp_path / "ranking.json").write_text('{"schema": "isplit.ranking/2"}')
    for name in ("cui.png", "cde.png", "rate_accuracy.png", "pareto.png"):
        (tmp_path / name).write_bytes(b"\x89PNG")
    assert replaceable(tmp_path)  # rank --out DIR --force may replace it
    (tmp_path / "other.txt").write_text("x")
    assert not replaceable(tmp_path)
