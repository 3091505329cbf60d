"""The study's terminal table: one row per cut, the predictors' correlations, the regret and the verdict.

Plain string formatting of ``study.json`` (``isplit.study/1``), printed by ``isplit-export study``.
"""

from __future__ import annotations

import math
from typing import Any, cast


def format_study(data: dict[str, object]) -> str:
    """The study as a terminal table plus its summary lines."""
    d = cast("dict[str, Any]", data)
    metric = d["summary"]["metric"]
    rows = [f"{'cut':>4}  {'node':24} {'log10 CUI':>9}  {'fp32 B':>8}  {'code B':>7}  {metric + ' [95% CI]':>24}"]
    for c in d["cuts"]:
        m = c["measured"]
        ci = f"{m['value']:.1%} [{m['ci95'][0]:.1%}, {m['ci95'][1]:.1%}]"
        lc = math.log10(c["cui"]) if c["cui"] else float("nan")
        rows.append(f"{c['index']:>4}  {c['node'][:24]:24} {lc:>9.3f}  {c['boundary_bytes']:>8}  {c['code_bytes']:>7}  {ci:>24}")
    p = d["summary"]["predictors"]
    for name in ("cui", "cde", "random"):
        q = p[name]
        sci, kci = q["spearman_ci95"], q["kendall_ci95"]
        rows.append(
            f"{name.upper():6} Spearman {_f(q['spearman'])} {_fci(sci)}  Kendall {_f(q['kendall'])} {_fci(kci)}"
        )
    s = d["summary"]
    if "regret" in s:
        rows.append(f"regret of CUI's top pick (cut {s['cui_top_pick']['index']}): {s['regret']:.1%} "
                    f"(best: cut {s['best']['index']}, {s['best']['value']:.1%})")  # fmt: skip
    rows.append(s["note"])
    return "\n".join(rows)


def _f(v: object) -> str:
    return "n/a" if v is None else f"{float(v):+.3f}"  # type: ignore[arg-type]


def _fci(ci: object) -> str:
    if not isinstance(ci, list) or ci[0] is None:
        return "[n/a]"
    return f"[{ci[0]:+.2f}, {ci[1]:+.2f}]"
