"""`isplit-export study` on the trained digits CNN end to end: schema, seeding per cut, classes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from isplit_export.bottleneck.study_measure import measure_cut
from isplit_export.cli import main
from isplit_export.jobs.study import SCHEMA, study_context
from isplit_export.options import StudyOptions
from tests.support.helpers import DIGITS, run_cli


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory: pytest.TempPathFactory, digits_weights: Path, digits_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("study") / "s"
    assert (
        main(
            [
                "study",
                DIGITS,
                "--weights",
                str(digits_weights),
                "--data",
                str(digits_dir),
                "--cuts",
                "all",
                "--bottleneck",
                "64B",
                "--train-steps",
                "30",
                "--repeats",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out


@pytest.mark.e2e
def test_study_json_schema(study_dir: Path) -> None:
    data = json.loads((study_dir / "study.json").read_text())
    assert data["schema"] == SCHEMA and data["options"]["cuts"] == "all"
    assert data["options"]["bottleneck"]["size"] == "64B"
    assert data["images"] == {
        "source": data["images"]["source"],
        "train": 150,
        "held_out": 50,
        "labelled": True,
        "labels": "folder_names",
    }
    assert len(data["cuts"]) == 6 == len(data["curve"]["cui"])
    for c in data["cuts"]:
        assert set(c) >= {
            "index",
            "node",
            "cui",
            "boundary_bytes",
            "code_bytes",
            "measured",
            "training",
            "probe",
            "repeats",
        }
        assert len(c["repeats"]) == 2 == c["measured"]["repeats"] and c["measured"]["sd"] >= 0
        assert c["probe"]["ci95"][0] <= c["probe"]["value"] <= c["probe"]["ci95"][1]
        assert c["code_bytes"] <= 64 < c["boundary_bytes"]
        m = c["measured"]
        assert m["metric"] == "accuracy" and m["images"] == 50 and m["ci95"][0] <= m["value"] <= m["ci95"][1]
    assert len({c["measured"]["value"] for c in data["cuts"]}) > 1  # the cuts measure differently
    s = data["summary"]
    for name in ("cui", "cde", "random"):
        p = s["predictors"][name]
        assert set(p) == {
            "spearman",
            "spearman_ci95",
            "kendall",
            "kendall_ci95",
            "top_pick",
            "regret",
            "separated_pairs",
        }
        assert p["spearman"] is None or -1 <= p["spearman"] <= 1
        assert sum(p["separated_pairs"].values()) == len(s["separated_pairs"]["pairs"])
    assert s["separated_pairs"]["of"] == 15 and all(a < b for a, b in s["separated_pairs"]["pairs"])
    assert (
        s["regret"] >= 0 and s["cui_top_pick"]["index"] in range(6) and isinstance(s["cui_beats_cde"], bool)
    )
    assert s["cuts"] == 6 and s["repeats"] == 2 and set(s["differences"]) == {"probe-cui", "cui-cde"}
    assert s["conclusive"] == any(d["conclusive"] for d in s["differences"].values())
    assert set(data["run"]["train_seconds"]) == {str(i) for i in range(6)}
    assert "train_seconds" not in json.dumps({k: v for k, v in data.items() if k != "run"})
    assert (study_dir / "study.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.e2e
def test_measure_cut_depends_on_the_cut_not_on_the_order(digits_weights: Path, digits_dir: Path) -> None:
    opts = StudyOptions(
        model=DIGITS,
        weights=str(digits_weights),
        data=digits_dir,
        cuts="all",
        images=80,
        bottleneck="1/8",
        repeats=2,
    )
    ctx = study_context(opts)
    first = measure_cut(ctx, ctx.cuts[4]).to_json()
    measure_cut(ctx, ctx.cuts[1])
    torch.manual_seed(1234)  # global state must not matter
    torch.rand(10)
    assert measure_cut(ctx, ctx.cuts[4]).to_json() == first


@pytest.mark.e2e
def test_classes_set_class_and_all_class_cui_against_class_accuracy(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, digits_weights: Path, digits_dir: Path
) -> None:
    code, out, err = run_cli(
        capsys,
        "study",
        DIGITS,
        "--weights",
        digits_weights,
        "--data",
        digits_dir,
        "--cuts",
        "all",
        "--classes",
        "0,1",
        "--train-steps",
        "10",
        "--repeats",
        "1",
        "--out",
        tmp_path / "s",
    )
    assert code == 0, err
    data = json.loads((tmp_path / "s" / "study.json").read_text())
    cls = data["summary"]["classes"]
    assert set(cls) == {"metric", "class_cui", "all_class_cui"} and cls["metric"] == "accuracy"
    for c in data["cuts"]:
        assert 0 < c["class_measured"]["images"] < c["measured"]["images"] and c["cui_all_classes"] > 0
    assert "CUI" in out and "Spearman" in out
