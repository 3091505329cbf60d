"""`isplit-export study`'s statistics and bad inputs, without measuring a cut."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from isplit_export.bottleneck.study_measure import CutResult
from isplit_export.bottleneck.study_summary import summarize_study
from tests.support.helpers import DIGITS, run_cli


def _result(index: int, cui: float, nbytes: int, value: float) -> CutResult:
    return CutResult(
        index,
        f"n{index}",
        f"m{index}",
        (1, 1, 1),
        cui,
        None,
        nbytes,
        (1, 1, 1),
        1,
        {"metric": "accuracy", "value": value, "ci95": [0, 1]},
        None,
        {},
        0.0,
    )


def test_summary_statistics_match_hand_computed_values() -> None:
    # CUI ranks 1,2,3,4 vs measured ranks 1,3,2,4: d^2 = 0+1+1+0 -> rho = 1 - 6*2/(4*15) = 0.8;
    # pairs: 5 concordant, 1 discordant -> tau = 4/6. CDE ranks 4,3,2,1 (reversed): rho = -0.8, tau = -4/6.
    results = [
        _result(i, cui, nb, v)
        for i, (cui, nb, v) in enumerate([(1.0, 400, 0.1), (2.0, 300, 0.3), (3.0, 200, 0.2), (4.0, 100, 0.4)])
    ]
    s = summarize_study(results, seed=0, reps=200)
    assert s["predictors"]["cui"]["spearman"] == pytest.approx(0.8)
    assert s["predictors"]["cui"]["kendall"] == pytest.approx(4 / 6)
    assert s["predictors"]["cde"]["spearman"] == pytest.approx(-0.8)
    assert s["predictors"]["cde"]["kendall"] == pytest.approx(-4 / 6)
    assert s["regret"] == 0.0 and s["cui_top_pick"]["index"] == 3 and s["cui_beats_cde"] is True
    assert not s["conclusive"] and "too few to conclude" in s["note"]
    lo, hi = s["predictors"]["cui"]["spearman_ci95"]
    assert -1 <= lo <= hi <= 1
    assert summarize_study(results, seed=0, reps=200) == s  # seeded
    # CUI's top pick is not the best: regret is the gap
    results[3] = _result(3, 4.0, 100, 0.05)
    assert summarize_study(results, reps=50)["regret"] == pytest.approx(0.3 - 0.05)


def _with_outcomes(index: int, cui: float, probe: float, outcomes: list[list[int]]) -> CutResult:
    out = np.array(outcomes, dtype=np.float64)
    r = CutResult(
        index,
        f"n{index}",
        f"m{index}",
        (1, 1, 1),
        cui,
        None,
        100 * (index + 1),
        (1, 1, 1),
        1,
        {"metric": "accuracy", "value": float(out.mean())},
        None,
        [],
        0.0,
        outcomes=out,
        probe={"value": probe},
    )
    return r


def test_conclusive_only_where_a_difference_ci_excludes_zero() -> None:
    # 6 cuts, 3 repeats, 40 images; measured accuracy rises with the cut index (0.2 .. 0.7), noise-free.
    def outcomes(p: float) -> list[list[int]]:
        return [[1 if i < round(40 * p) else 0 for i in range(40)] for _ in range(3)]

    accs = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    # CUI and the probe both order the cuts exactly as measured: their difference is 0, its CI contains 0;
    # CDE (100, 200, ...) also orders them so: nothing is decided.
    same = [_with_outcomes(i, float(i + 1), float(i + 1), outcomes(p)) for i, p in enumerate(accs)]
    s = summarize_study(same, seed=0, reps=300)
    d = s["differences"]["probe-cui"]
    assert d["spearman_difference"] == 0.0 and d["ci95"][0] <= 0.0 <= d["ci95"][1] and not d["conclusive"]
    assert not s["conclusive"] and s["concludes_for"] is None and "inconclusive" in s["note"]
    # the probe orders them right, CUI reversed: the difference's CI is above 0, the study concludes for the probe
    apart = [_with_outcomes(i, float(6 - i), float(i + 1), outcomes(p)) for i, p in enumerate(accs)]
    s = summarize_study(apart, seed=0, reps=300)
    d = s["differences"]["probe-cui"]
    assert d["ci95"][0] > 0 and d["conclusive"] and d["better"] == "probe"
    assert s["conclusive"] and s["concludes_for"] == "probe" and "probe predicts better than cui" in s["note"]
    assert s["predictors"]["probe"]["regret"] == 0.0 and s["predictors"]["cui"]["regret"] == pytest.approx(
        0.5
    )


def test_separated_pairs_count_only_differences_outside_the_noise() -> None:
    # 40 images, 2 repeats. Cuts 0 and 1 are right on the same 30 images (no difference), cut 3 on 29 of
    # them (one image apart from 0 and 1: inside the noise), cut 2 on 10 (20 images apart from all three).
    def outcomes(right: int) -> list[list[int]]:
        return [[1 if i < right else 0 for i in range(40)] for _ in range(2)]

    rights, probe, cui = [30, 30, 10, 29], [4.0, 3.0, 1.0, 2.0], [1.0, 2.0, 3.0, 0.5]
    results = [_with_outcomes(i, cui[i], probe[i], outcomes(r)) for i, r in enumerate(rights)]
    s = summarize_study(results, seed=0, reps=400)
    assert s["separated_pairs"]["pairs"] == [[0, 2], [1, 2], [2, 3]] and s["separated_pairs"]["of"] == 6
    assert s["predictors"]["probe"]["separated_pairs"] == {"right": 3, "wrong": 0, "tied": 0}
    assert s["predictors"]["cui"]["separated_pairs"] == {"right": 0, "wrong": 3, "tied": 0}
    assert s["predictors"]["cde"]["separated_pairs"] == {
        "right": 1,
        "wrong": 2,
        "tied": 0,
    }  # 100, 200, 300, 400
    assert "3 of 6 cut pairs differ outside the noise, ordered right by CUI 0, CDE 1, PROBE 3" in s["note"]


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (("--cuts", "some"), "--cuts 'some'"),
        (("--bottleneck", "2"), "a ratio must be in (0, 1]"),
        (("--finetune", "head"), "--finetune 'head'"),
        (("--repeats", "0"), "--repeats 0"),
    ],
)
def test_bad_study_inputs(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    digits_weights: Path,
    args: tuple[str, ...],
    expect: str,
) -> None:
    code, _, err = run_cli(
        capsys, "study", DIGITS, "--weights", digits_weights, "--out", tmp_path / "s", *args
    )
    assert code == 2 and expect in err and len(err.strip().splitlines()) == 1, err
