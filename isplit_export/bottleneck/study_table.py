"""The study's terminal table: one row per cut, the predictors' correlations, the regret and the verdict.

Plain string formatting of ``study.json`` (``isplit.study/2``), printed by ``isplit-export study``.
"""

from __future__ import annotations

import math
from typing import Any, cast


def format_study(data: dict[str, object]) -> str:
    """The study as a terminal table (per cut: CUI, sizes, the probe, the trained mean, its spread and CI)
    plus each predictor's correlations, regret and the differences that decide ``conclusive``."""
    d = cast("dict[str, Any]", data)
    s = d["summary"]
    metric = s["metric"] or "measured"
    rows = [
        f"{'cut':>4}  {'node':24} {'log10 CUI':>9}  {'fp32 B':>8}  {'code B':>7}  {'probe':>6}  "
        f"{metric + ' mean [95% CI]':>25}  {'sd':>5}  {'R':>2}"
    ]
    for c in d["cuts"]:
        m = c["measured"]
        ci = f"{m['value']:.1%} [{m['ci95'][0]:.1%}, {m['ci95'][1]:.1%}]"
        lc = math.log10(c["cui"]) if c["cui"] else float("nan")
        pv = c.get("probe") or {}
        probe = f"{pv['value']:.1%}" if pv.get("value") is not None else "-"
        sd = f"{100 * m['sd']:.1f}" if m.get("sd") is not None else "-"
        rows.append(
            f"{c['index']:>4}  {c['node'][:24]:24} {lc:>9.3f}  {c['boundary_bytes']:>8}  {c['code_bytes']:>7}  "
            f"{probe:>6}  {ci:>25}  {sd:>5}  {m.get('repeats', 1):>2}"
        )
    for name, q in s["predictors"].items():
        sci, kci = q["spearman_ci95"], q["kendall_ci95"]
        pick = q.get("top_pick") or {}
        regret = (
            f"  top pick cut {pick['index']}, regret {q['regret']:.1%}"
            if pick and q.get("regret") is not None
            else ""
        )
        sep = q.get("separated_pairs")
        pairs = (
            f"  separated pairs right {sep['right']}/{sum(sep.values())}" if sep and sum(sep.values()) else ""
        )
        rows.append(
            f"{name.upper():6} Spearman {_f(q['spearman'])} {_fci(sci)}  Kendall {_f(q['kendall'])} {_fci(kci)}{regret}{pairs}"
        )
    for key, diff in (s.get("differences") or {}).items():
        a, b = key.split("-")
        verdict = (
            f"conclusive: {diff['better']} better" if diff["conclusive"] else "CI contains 0: inconclusive"
        )
        rows.append(
            f"Spearman {a.upper()} - {b.upper()} = {_f(diff['spearman_difference'])} {_fci(diff['ci95'])}  {verdict}"
        )
    if "best" in s:
        rows.append(f"best measured cut: {s['best']['index']} ({s['best']['value']:.1%})")
    rows.append(s["note"])
    return "\n".join(rows)


def _f(v: object) -> str:
    return "n/a" if v is None else f"{float(v):+.3f}"  # type: ignore[arg-type]


def _fci(ci: object) -> str:
    if not isinstance(ci, list) or ci[0] is None:
        return "[n/a]"
    return f"[{ci[0]:+.2f}, {ci[1]:+.2f}]"
