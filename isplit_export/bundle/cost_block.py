"""The cost block of ``ranking.json`` and the cuts it selects: :func:`build_cost`, and the export hook
:func:`choose_cuts` (``jobs.export.export``), torch-free.

The block holds the link, device and server figures, the selection (objective, constraints, Pareto
front), the two Neurosurgeon baselines and one cost row per cut (``per_cut``). :func:`choose_cuts`
stores it in ``ranking.json`` at export; :func:`isplit_export.jobs.plan.plan` recomputes it on a
bundle.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from isplit_export.bundle.selection import CutRow, Selection, select
from isplit_export.contract import Candidate, CutCost, RankingFile
from isplit_export.links import Link, parse_link
from isplit_export.options import Constraints
from isplit_export.targets.cost import Compute, boundary_bytes, compute_for, cost_rows
from isplit_export.targets.profiles import TargetProfile, load_target

if TYPE_CHECKING:
    from isplit_export.options import ExportOptions
    from isplit_export.ranking.graph import Cut
    from isplit_export.ranking.ranked import RankResult

ASSUMPTIONS = (
    "batch 1; FLOPs = 2 x MACs of conv/linear + one per output element of other ops (graph.py)",
    "device and server times are FLOPs / effective GFLOP/s of the target profiles unless measured",
    "link ms = boundary bytes x 8 / bandwidth + RTT; the result's way back is inside the RTT",
    "all on device: nothing is sent; all on server: the preprocessed input tensor is sent under the boundary encoding",
    "device energy = power budget x device ms (compute only, no radio)",
)


def build_cost(
    ranking: RankingFile,
    device: Compute,
    server: Compute,
    link: Link,
    encoding: str,
    *,
    objective: str,
    constraints: Constraints,
    top: int | None,
    bytes_override: Mapping[int, int] | None = None,
    measured: Mapping[Any, Mapping[str, Any]] | None = None,
) -> tuple[dict[str, Any], Selection]:
    """The ``cost`` block of ranking.json (with ``per_cut``) and the selection it leads to."""
    per_cut, baselines = cost_rows(
        ranking, device, server, link, encoding, bytes_override=bytes_override, measured=measured
    )
    costs = [CutCost.from_json(pc, "ranking", f"candidates[{i}].cost") for i, pc in enumerate(per_cut)]
    rows = [selection_row(c, pc.bytes, pc.total_ms) for c, pc in zip(ranking.candidates, costs, strict=True)]
    sel = select(rows, objective, constraints, top)
    block = {
        "link": link.to_json(),
        "device": device.to_json(),
        "server": server.to_json(),
        "encoding": encoding,
        "total_flops": ranking.total_flops,
        "constraints": constraints.to_json(),
        "top": top,
        **sel.to_json(),
        "baselines": baselines,
        "assumptions": list(ASSUMPTIONS),
        "per_cut": per_cut,
    }
    return block, sel


def selection_row(c: Candidate, nbytes: int, total_ms: float | None) -> CutRow:
    """What :func:`~isplit_export.bundle.selection.select` weighs of one candidate: its place, CUI, rank,
    head FLOPs, probe score, boundary bytes and end-to-end milliseconds (None without a link)."""
    return CutRow(
        index=c.index,
        node=c.node,
        cui=c.cui,
        rank=c.rank,
        head_flops_share=c.head_flops_share,
        bytes=nbytes,
        total_ms=total_ms,
        probe=c.probe_value,
    )


def choose_cuts(ranked: RankResult, opts: ExportOptions, profile: TargetProfile, encoding: str) -> list[Cut]:
    """The export hook: the cuts to export. Without a link or constraints, I-Split's top K unchanged.

    With a link, the cost block goes into ``ranked.ranking.cost`` (ranking.json, report, tradeoff.png).
    """
    ranking = ranked.ranking
    if opts.link is None and not opts.constraints.active() and opts.objective == "cui":
        return ranking.ranked(opts.top)
    written = RankingFile.from_json(ranking.to_json(), "ranking")
    if opts.link is None:  # head FLOPs / boundary constraints only: no latency column
        rows = [selection_row(c, boundary_bytes(list(c.shape), encoding), None) for c in written.candidates]
        sel = select(rows, opts.objective, opts.constraints, opts.top)
    else:
        block, sel = build_cost(
            written,
            compute_for(profile, head=True),
            compute_for(load_target(opts.server), head=False),
            parse_link(opts.link),
            encoding,
            objective=opts.objective,
            constraints=opts.constraints,
            top=opts.top,
        )
        ranking.cost_rows = block.pop("per_cut")
        ranking.cost = block
    return [ranking.cuts[i] for i in sel.selected]
