"""The learned bottleneck on the trained digits CNN end to end: training, exact export, held-out split, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from isplit_export.bottleneck import core as bn
from isplit_export.cli import main
from isplit_export.exporting.onnx_export import to_onnx
from isplit_export.exporting.onnx_utils import save_model
from isplit_export.jobs.verify import verify_bundle
from isplit_export.options_bottleneck import BottleneckOptions
from tests.support.helpers import DIGITS, digits_cut, run_cli, run_cli_without_torch

FAST = ("--latency-runs", "2", "--train-steps", "40")


@pytest.fixture(scope="module")
def seen(digits_weights: Path) -> dict[str, list[torch.Tensor]]:
    return {"train": []}


@pytest.fixture(scope="module")
def bn_bundle(
    tmp_path_factory: pytest.TempPathFactory,
    digits_weights: Path,
    digits_dir: Path,
    seen: dict[str, list[torch.Tensor]],
) -> Path:
    """A 1/8 bottleneck bundle of the top 2 digits splits; records what each training saw."""
    real_train = bn.train

    def spy(*args: object, **kwargs: object) -> bn.TrainedBottleneck:
        seen["train"].append(args[3].clone())  # type: ignore[union-attr]  # x_train
        return real_train(*args, **kwargs)  # type: ignore[arg-type]

    mp = pytest.MonkeyPatch()
    mp.setattr(bn, "train", spy)
    out = tmp_path_factory.mktemp("bn") / "bundle"
    try:
        code = main(
            [
                DIGITS,
                "--weights",
                str(digits_weights),
                "--data",
                str(digits_dir),
                "--top",
                "2",
                "--bottleneck",
                "1/8",
                "--out",
                str(out),
                *FAST,
            ]
        )
    finally:
        mp.undo()
    assert code == 0
    return out


@pytest.mark.e2e
def test_bottleneck_bundle_is_exact_and_measures_held_out_accuracy(bn_bundle: Path) -> None:
    m = json.loads((bn_bundle / "manifest.json").read_text())
    assert m["boundary_encoding"] == "int8" and m["verification"]["passed"]
    values = []
    for split in m["splits"]:
        b, cfg = split["boundary"], split["bottleneck"]
        assert b["dtype"] == "uint8" and b["bytes_per_image"] * 8 <= b["fp32_bytes_per_image"] // 4
        assert b["bytes_per_image"] == cfg["code_bytes_per_image"] == int(np.prod(b["shape"][1:]))
        assert cfg["spec"] == "1/8" and cfg["training"]["steps"] >= 1 and cfg["training"]["final_loss"] > 0
        check = split["verification"]["checks"]["int8"]
        # tier 1: the exported pair is the PyTorch pair with its bottleneck, within the fp32 gate
        assert check["gate"]["name"] == "fp32" and check["gate"]["passed"]
        assert check["metrics"]["max_abs_rel"] <= 1e-4 and check["metrics"]["code_max_step"] <= 1
        # tier 2: held-out accuracy against the full model, with a Wilson CI
        task = check["task"]
        assert task["metric"] == "accuracy" and task["held_out"] and task["images"] == 50
        assert task["ci95"][0] <= task["value"] <= task["ci95"][1] and task["value"] > 0.5
        values.append(task["value"])
    assert len(set(values)) == len(values), values  # the cuts measure differently
    assert set(m["run"]["bottleneck_train_seconds"]) == {s["dir"] for s in m["splits"]}
    assert "bottleneck_train_seconds" not in json.dumps({k: v for k, v in m.items() if k != "run"})
    report = (bn_bundle / "report.md").read_text()
    assert "too few to conclude anything" in report and "95 % CI" in report


@pytest.mark.e2e
def test_held_out_images_are_never_trained_on(bn_bundle: Path, seen: dict[str, list[torch.Tensor]]) -> None:
    golden = np.load(
        bn_bundle / json.loads((bn_bundle / "manifest.json").read_text())["splits"][0]["files"]["golden"]
    )
    held = torch.from_numpy(golden["input"]).flatten(1)
    assert len(seen["train"]) == 2
    for x_train in seen["train"]:
        assert len(x_train) == 150
        flat = x_train.flatten(1)
        for row in held:  # no held-out image is among the training images
            assert not bool((flat == row).all(1).any())


@pytest.mark.e2e
def test_verify_runs_without_torch_on_the_bottleneck_bundle(bn_bundle: Path) -> None:
    assert verify_bundle(bn_bundle, write=False).passed
    proc = run_cli_without_torch("verify", bn_bundle)
    assert proc.returncode == 0, proc.stderr
    assert "onnxruntime: passed" in proc.stdout


@pytest.mark.e2e
def test_same_seed_gives_byte_identical_onnx(
    digits_model: tuple[torch.nn.Module, float], tmp_path: Path
) -> None:
    from isplit_export.zoo import digits_arrays, digits_tensor

    images, _ = digits_arrays()
    x = digits_tensor(images[1500:1540])
    cut, head, tail = digits_cut(digits_model[0], 2)
    opts = BottleneckOptions(size="1/8", train_steps=15)
    blobs = []
    for i, seed in enumerate((7, 7, 8)):
        t = bn.train(cut, head, tail, x, opts, seed=seed)  # type: ignore[arg-type]
        path = tmp_path / f"head{i}.onnx"
        save_model(to_onnx(t.head, x[:1], "input", "boundary"), path)
        to_onnx(t.tail, torch.from_numpy(t.code(x[:1])), "boundary", "logits")
        blobs.append(path.read_bytes())
        # the export must leave both halves in eval mode (it restores the top module's mode recursively)
        assert not any(m.training for part in (t.head, t.tail) for m in part.modules())
    assert blobs[0] == blobs[1] and blobs[0] != blobs[2]


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (("--bottleneck", "0"), "a ratio must be in (0, 1]"),
        (("--bottleneck", "1.5"), "a ratio must be in (0, 1]"),
        (("--bottleneck", "64KiB"), "is larger than cut 0 (features_1)'s boundary"),
        (("--bottleneck", "1B"), "smallest code there is 4 B"),
        (("--bottleneck", "1/8", "--finetune", "all"), "unknown --finetune 'all': choose one of none, tail"),
        (("--finetune", "tail"), "add --bottleneck"),
    ],
)
def test_bad_inputs_one_line_exit_2(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    digits_weights: Path,
    digits_dir: Path,
    args: tuple[str, ...],
    expect: str,
) -> None:
    code, _, err = run_cli(
        capsys,
        DIGITS,
        "--weights",
        digits_weights,
        "--data",
        digits_dir,
        "--top",
        "6",
        "--out",
        tmp_path / "b",
        *args,
    )
    assert code == 2 and expect in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "b").exists()


@pytest.mark.e2e
def test_finetune_tail_adapts_the_tail_and_none_keeps_it(digits_model: tuple[torch.nn.Module, float]) -> None:
    from isplit_export.zoo import digits_arrays, digits_tensor

    images, _ = digits_arrays()
    x = digits_tensor(images[1500:1530])
    cut, head, tail = digits_cut(digits_model[0], 4)
    before = {k: v.clone() for k, v in tail.state_dict().items()}
    for mode, changed in (("none", False), ("tail", True)):
        t = bn.train(cut, head, tail, x, BottleneckOptions(size="1/8", finetune=mode, train_steps=5), seed=0)  # type: ignore[arg-type]
        after = t.tail.tail.state_dict()
        assert any(not torch.equal(before[k], after[k]) for k in before) is changed
        assert all(
            torch.equal(before[k], v) for k, v in tail.state_dict().items()
        )  # the model itself is untouched


@pytest.mark.e2e
@pytest.mark.parametrize(("model", "layout"), [("channels_last_net", "nhwc"), ("tiny_vit", "tokens")])
def test_bottleneck_on_nhwc_and_token_cuts_exports_exactly(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, model: str, layout: str
) -> None:
    """A Swin/ConvNeXt-like channels-last map and a ViT token sequence get a bottleneck too."""
    out = tmp_path / "b"
    code, _, err = run_cli(
        capsys,
        f"tests.support.layout_models:{model}",
        "--weights",
        "none",
        "--top",
        "4",
        "--bottleneck",
        "1/4",
        "--train-steps",
        "4",
        "--latency-runs",
        "1",
        "--out",
        out,
    )
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    ranking = {c["index"]: c for c in json.loads((out / "ranking.json").read_text())["candidates"]}
    layouts = [ranking[s["index"]]["layout"] for s in manifest["splits"]]
    assert layout in layouts
    for s in manifest["splits"]:
        b, cut_layout = s["boundary"], ranking[s["index"]]["layout"]
        assert s["bottleneck"]["layout"] == cut_layout and b["layout"] == "nchw"
        assert b["bytes_per_image"] * 16 <= b["fp32_bytes_per_image"]  # 1/4 of the elements, 1 byte each
        assert s["verification"]["passed"], s["verification"]["failures"]
    assert verify_bundle(out).outcome == "passed"
