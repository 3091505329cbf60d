"""The bootstrap through `rank` and the CLI: same seed, same bytes; the --bootstrap flag."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from isplit_export import rank


@pytest.mark.e2e
def test_same_seed_same_bytes(digits_weights: Path, digits_dir: Path, tmp_path: Path) -> None:
    common = dict(weights=str(digits_weights), data=digits_dir, images=40, top=3)
    outs = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        rank("isplit_export.zoo:digits_cnn", out=tmp_path / name, seed=seed, **common)
        outs.append(tmp_path / name)
    for f in ("ranking.json", "cui.png"):
        assert (outs[0] / f).read_bytes() == (outs[1] / f).read_bytes()
    a, c = (json.loads((o / "ranking.json").read_text()) for o in (outs[0], outs[2]))
    assert a["bootstrap"]["seed"] == 0 and c["bootstrap"]["seed"] == 1
    assert [r["cui"] for r in a["candidates"]] == [r["cui"] for r in c["candidates"]]
    assert [r["cui_ci"] for r in a["candidates"]] != [r["cui_ci"] for r in c["candidates"]]
    off = rank("isplit_export.zoo:digits_cnn", bootstrap=0, **common).ranking.to_json()
    assert "bootstrap" not in off and all("cui_ci" not in r for r in off["candidates"])


@pytest.mark.e2e
def test_cli_bootstrap_flag(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, digits_weights: Path, digits_dir: Path
) -> None:
    from isplit_export.cli import main

    common = [
        "rank",
        "isplit_export.zoo:digits_cnn",
        "--weights",
        str(digits_weights),
        "--data",
        str(digits_dir),
        "--images",
        "30",
    ]
    assert main([*common, "--bootstrap", "50", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].split()[-2:] == ["stable", "ties"]
    assert json.loads((tmp_path / "ranking.json").read_text())["bootstrap"]["replicates"] == 50
    assert main([*common, "--bootstrap", "0"]) == 0
    assert "stable" not in capsys.readouterr().out
    assert main([*common, "--bootstrap", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--bootstrap -1" in err[0]
