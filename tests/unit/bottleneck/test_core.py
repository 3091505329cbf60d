"""The learned bottleneck's pieces without training it: held-out split, size specs, code shapes, channel views, bad inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from isplit_export.bottleneck import core as bn
from isplit_export.bottleneck.holdout import minimum_images, split_holdout
from isplit_export.bottleneck.pca import channels_first, from_channels_first
from isplit_export.errors import BadInputError
from isplit_export.options_bottleneck import BottleneckOptions, SizeSpec, parse_size
from isplit_export.zoo import write_digits_imagefolder
from tests.support.helpers import DIGITS, digits_cut, run_cli


def test_split_holdout_is_deterministic_disjoint_and_by_name() -> None:
    names = [f"img{i:03d}.png" for i in range(40)]
    train, held = split_holdout(names, 0.25, seed=0)
    assert sorted(train + held) == list(range(40)) and not set(train) & set(held) and len(held) == 10
    assert split_holdout(names, 0.25, seed=0) == (train, held)
    assert split_holdout(names, 0.25, seed=1) != (train, held)
    _rev_train, rev_held = split_holdout(names[::-1], 0.25, seed=0)
    assert sorted(names[::-1][i] for i in rev_held) == sorted(names[i] for i in held)
    with pytest.raises(BadInputError, match=f"at least {minimum_images(0.25)} needed"):
        split_holdout(names[:5], 0.25, seed=0)


def test_size_specs() -> None:
    assert parse_size("1/16") == SizeSpec("ratio", 0.0625, "1/16")
    assert parse_size("0.0625").value == 0.0625 and parse_size("1").value == 1.0
    assert parse_size("2KiB") == SizeSpec("bytes", 2048.0, "2KiB")
    assert parse_size("64B").value == 64 and parse_size("1MB").value == 1e6
    for bad in ("0", "-1/8", "1.5", "2048", "nope", "1/0"):
        with pytest.raises(BadInputError):
            parse_size(bad)


def test_plan_reaches_a_fixed_size_with_a_stride(digits_model: tuple[torch.nn.Module, float]) -> None:
    cut, _, _ = digits_cut(digits_model[0], 0)  # 16x16x16
    p = bn.code_shape(cut, parse_size("64B"), "int8")  # type: ignore[arg-type]
    assert p.code_shape == (1, 8, 8) and p.stride == 2 and p.code_bytes == 64
    p = bn.code_shape(cut, parse_size("1/8"), "int8")  # type: ignore[arg-type]
    assert p.code_shape == (2, 16, 16) and p.stride == 1


def test_too_few_images_names_the_minimum(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, digits_weights: Path
) -> None:
    data = write_digits_imagefolder(tmp_path / "few", start=0, count=5)
    code, _, err = run_cli(
        capsys,
        DIGITS,
        "--weights",
        digits_weights,
        "--data",
        data,
        "--bottleneck",
        "1/8",
        "--out",
        tmp_path / "b",
    )
    assert (
        code == 2 and f"at least {minimum_images(0.25)} needed" in err and len(err.strip().splitlines()) == 1
    )
    assert not (tmp_path / "b").exists()


def test_api_takes_a_size_spec_or_options() -> None:
    from isplit_export import ExportOptions

    opts = ExportOptions(model=DIGITS, bottleneck="1/16")
    assert (
        opts.bottleneck == BottleneckOptions(size="1/16") and opts.to_json()["bottleneck"]["size"] == "1/16"
    )
    assert ExportOptions(model=DIGITS).bottleneck is None
    with pytest.raises(BadInputError, match="a ratio must be in"):
        ExportOptions(model=DIGITS, bottleneck="0")
    with pytest.raises(BadInputError, match="--finetune"):
        BottleneckOptions(finetune="head")


@pytest.mark.parametrize(
    ("layout", "shape", "view", "code"),
    [
        ("nhwc", (14, 14, 384), (384, 14, 14), (24, 14, 14)),
        ("tokens", (197, 768), (768, 197, 1), (48, 197, 1)),
    ],
)
def test_nhwc_and_token_cuts_are_viewed_channels_first(
    layout: str, shape: tuple[int, ...], view: tuple[int, ...], code: tuple[int, ...]
) -> None:
    from types import SimpleNamespace

    cut = SimpleNamespace(index=3, node="blocks_3", shape=shape, layout=layout)
    p = bn.code_shape(cut, parse_size("1/16"), "int8")  # type: ignore[arg-type]
    assert (p.boundary_shape, p.code_shape, p.stride, p.layout) == (view, code, 1, layout)
    a = torch.randn(2, *shape)
    assert torch.equal(from_channels_first(channels_first(a, layout), layout), a)
    assert tuple(channels_first(a, layout).shape[1:]) == view
    bad = (7, 7) if layout == "nhwc" else (7, 7, 7)
    with pytest.raises(
        BadInputError,
        match=rf"cut 3 \(blocks_3\) has boundary shape \[{', '.join(map(str, bad))}\] \({layout}\)",
    ):
        bn.code_shape(
            SimpleNamespace(index=3, node="blocks_3", shape=bad, layout=layout), parse_size("1/16"), "int8"
        )  # type: ignore[arg-type]
