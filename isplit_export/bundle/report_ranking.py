"""The report's ranking sections: the ranked candidates of ``ranking.json`` (with their bootstrap
intervals when the ranking has them) and, when the export was given ``--link``, the cost of each cut.
"""

from __future__ import annotations

from isplit_export.bundle import markdown as md
from isplit_export.bundle.cost_table import cost_table_rows
from isplit_export.bundle.split_verdict import verdict_lines
from isplit_export.contract import Candidate, Manifest, RankingFile

RANKING_ROWS = 10
"""The ranking table lists at least this many ranked candidates (more when ``top`` is larger)."""


def _interval(c: Candidate) -> str:
    if c.cui_ci is None:
        return "-"
    return f"[{md.sig(c.cui_ci[0], 3)}, {md.sig(c.cui_ci[1], 3)}]"


def ranking_section(manifest: Manifest, ranking: RankingFile | None) -> list[str]:
    lines = ["## Ranking", ""]
    if ranking is None:
        return [*lines, "No ranking data."]
    candidates = ranking.candidates
    ranked = sorted((c for c in candidates if c.rank is not None), key=lambda c: (c.rank or 0, c.index))
    top = ranking.top or manifest.ranking_top or 0
    limit = max(RANKING_ROWS, int(top))
    exported = {(s.index, s.node): s.dir.rsplit("/", 1)[-1] for s in manifest.splits}
    lines.append(
        f"{len(candidates)} valid cut points, {len(ranked)} local maxima of the CUI curve (candidates), ranked by CUI."
    )
    lines.append("")
    boot = ranking.bootstrap
    rank_of = {c.index: c.rank for c in ranked}
    rows = []
    for c in ranked[:limit]:
        row = [
            c.rank,
            c.index,
            f"`{c.node}`",
            f"`{c.module or '?'}`",
            md.dims(c.shape) + (f" {c.layout}" if c.layout else ""),
            md.kib(c.boundary_bytes),
            md.pct(c.head_flops_share),
            md.sig(c.cui, 4),
            md.sig(c.log10_cui, 4),
        ]
        if boot is not None:
            ties = [str(rank_of.get(i, "?")) for i in c.ties]
            row += [_interval(c), md.pct(c.rank_stability, 0), ", ".join(ties) or "-"]
        rows.append([*row, exported.get((c.index, c.node), "")])
    header = ["rank", "cut", "node", "module", "shape", "boundary KiB", "head FLOPs", "CUI", "log10 CUI"]
    if boot is not None:
        header += ["CUI 95 % CI", "stable", "tied with ranks"]
    lines += md.table([*header, "exported"], rows)
    if len(ranked) > limit:
        lines += ["", f"{len(ranked) - limit} more candidates in `ranking.json`."]
    if boot is not None:
        lines += [
            "",
            f"Intervals and stability from a Poisson bootstrap of {boot.replicates} replicates over the "
            f"images: *stable* is how often a candidate keeps its rank; candidates tied with each other swap "
            f"order in more than {md.pct(boot.flip_threshold, 0)} of the replicates and cannot be told "
            "apart with these images.",
        ]
    return lines


def cost_section(ranking: RankingFile | None) -> list[str]:
    """The cost section (the ranking's ``cost`` block, written when the export was given ``--link``) and tradeoff.png."""
    cost = ranking.cost if ranking is not None else None
    if ranking is None or cost is None:
        return []
    lk, dev, srv = cost.link, cost.device, cost.server
    header, rows = cost_table_rows(ranking)
    lines = [
        "## Cost: device, link and server",
        "",
        f"Objective `{cost.objective}`; link `{lk.name}` ({lk.mbit_s} Mbit/s up, RTT "
        f"{lk.rtt_ms} ms; {lk.source}); head on `{dev.target}` {dev.unit} "
        f"{dev.precision} ({dev.gflops} GFLOP/s effective), tail on `{srv.target}` "
        f"{srv.unit} {srv.precision} ({srv.gflops} GFLOP/s); boundary `{cost.encoding}`.",
        "Every candidate (local maximum of the CUI) and every selected cut (`sel` #N, in export order), then the two "
        "Neurosurgeon baselines. Milliseconds per image at batch 1; estimated unless the last column says measured.",
        "",
        *md.table(header, rows),
        "",
        *verdict_lines(ranking),
        "Assumptions: " + "; ".join(cost.assumptions) + ".",
    ]
    constraints = {k: v for k, v in cost.constraints.items() if v is not None}
    if constraints:
        lines.append("Constraints: " + ", ".join(f"`{k}` {v}" for k, v in constraints.items()) + ".")
    if cost.note:
        lines.append(f"Note: {cost.note}.")
    lines += ["", "![CUI vs latency](tradeoff.png)"]
    return lines
