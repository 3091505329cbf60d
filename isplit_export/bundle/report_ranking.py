"""The report's ranking sections: the ranked candidates of ``ranking.json`` (with their bootstrap
intervals when the ranking has them) and, when the export was given ``--link``, the cost of each cut.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from isplit_export.bundle import markdown as md
from isplit_export.bundle.cost_table import cost_table_rows
from isplit_export.bundle.split_verdict import verdict_lines
from isplit_export.contract import RankingFile

RANKING_ROWS = 10
"""The ranking table lists at least this many ranked candidates (more when ``top`` is larger)."""


def ranking_section(manifest: Mapping[str, Any], ranking: Mapping[str, Any]) -> list[str]:
    candidates = [md.as_dict(c) for c in md.as_list(ranking.get("candidates"))]
    ranked = [c for c in candidates if isinstance(c.get("rank"), int) and not isinstance(c.get("rank"), bool)]
    ranked.sort(key=lambda c: (int(c["rank"]), md.num(c.get("index")) or 0))
    lines = ["## Ranking", ""]
    if not candidates:
        return [*lines, "No ranking data."]
    top = md.num(ranking.get("top")) or md.num(md.as_dict(manifest.get("ranking")).get("top")) or 0
    limit = max(RANKING_ROWS, int(top))
    exported = {
        (s.get("index"), s.get("node")): str(s.get("dir", "")).rsplit("/", 1)[-1]
        for s in map(md.as_dict, md.as_list(manifest.get("splits")))
    }
    lines.append(
        f"{len(candidates)} valid cut points, {len(ranked)} local maxima of the CUI curve (candidates), ranked by CUI."
    )
    lines.append("")
    boot = md.as_dict(ranking.get("bootstrap"))
    rank_of = {c.get("index"): c.get("rank") for c in ranked}
    rows = []
    for c in ranked[:limit]:
        row = [
            c.get("rank"),
            c.get("index", "-"),
            f"`{c.get('node', '?')}`",
            f"`{c.get('module', '?')}`",
            md.dims(c.get("shape")) + (f" {c['layout']}" if c.get("layout") else ""),
            md.kib(c.get("boundary_bytes")),
            md.pct(c.get("head_flops_share")),
            md.sig(c.get("cui"), 4),
            md.sig(c.get("log10_cui"), 4),
        ]
        if boot:
            ci = md.as_list(c.get("cui_ci"))
            ties = [str(rank_of.get(i, "?")) for i in md.as_list(c.get("ties"))]
            row += [
                f"[{md.sig(ci[0], 3)}, {md.sig(ci[1], 3)}]" if len(ci) == 2 else "-",
                md.pct(c.get("rank_stability"), 0),
                ", ".join(ties) or "-",
            ]
        rows.append([*row, exported.get((c.get("index"), c.get("node")), "")])
    header = ["rank", "cut", "node", "module", "shape", "boundary KiB", "head FLOPs", "CUI", "log10 CUI"]
    if boot:
        header += ["CUI 95 % CI", "stable", "tied with ranks"]
    lines += md.table([*header, "exported"], rows)
    if len(ranked) > limit:
        lines += ["", f"{len(ranked) - limit} more candidates in `ranking.json`."]
    if boot:
        lines += [
            "",
            f"Intervals and stability from a Poisson bootstrap of {boot.get('replicates')} replicates over the "
            f"images: *stable* is how often a candidate keeps its rank; candidates tied with each other swap "
            f"order in more than {md.pct(boot.get('flip_threshold'), 0)} of the replicates and cannot be told "
            "apart with these images.",
        ]
    return lines


def cost_section(ranking: Mapping[str, Any]) -> list[str]:
    """The cost section (the ranking's ``cost`` block, written when the export was given ``--link``) and tradeoff.png."""
    cost = md.as_dict(ranking.get("cost"))
    if not cost or not ranking.get("candidates"):
        return []
    lk, dev, srv = (
        md.as_dict(cost.get("link")),
        md.as_dict(cost.get("device")),
        md.as_dict(cost.get("server")),
    )
    typed = RankingFile.from_json(ranking)
    header, rows = cost_table_rows(typed)
    lines = [
        "## Cost: device, link and server",
        "",
        f"Objective `{cost.get('objective')}`; link `{lk.get('name')}` ({lk.get('mbit_s')} Mbit/s up, RTT "
        f"{lk.get('rtt_ms')} ms; {lk.get('source')}); head on `{dev.get('target')}` {dev.get('unit')} "
        f"{dev.get('precision')} ({dev.get('gflops')} GFLOP/s effective), tail on `{srv.get('target')}` "
        f"{srv.get('unit')} {srv.get('precision')} ({srv.get('gflops')} GFLOP/s); boundary `{cost.get('encoding')}`.",
        "Every candidate (local maximum of the CUI) and every selected cut (`sel` #N, in export order), then the two "
        "Neurosurgeon baselines. Milliseconds per image at batch 1; estimated unless the last column says measured.",
        "",
        *md.table(header, rows),
        "",
        *verdict_lines(typed),
        "Assumptions: " + "; ".join(str(a) for a in md.as_list(cost.get("assumptions"))) + ".",
    ]
    constraints = {k: v for k, v in md.as_dict(cost.get("constraints")).items() if v is not None}
    if constraints:
        lines.append("Constraints: " + ", ".join(f"`{k}` {v}" for k, v in constraints.items()) + ".")
    if cost.get("note"):
        lines.append(f"Note: {cost['note']}.")
    lines += ["", "![CUI vs latency](tradeoff.png)"]
    return lines
