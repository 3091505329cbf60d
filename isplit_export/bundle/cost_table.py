"""The cost table of a :class:`~isplit_export.contract.RankingFile` with a ``cost`` block: its rows (:func:`cost_table_rows`, also the
report's cost section) and the terminal table (:func:`format_cost_table`: ``isplit-export`` and
``isplit-export plan``), torch-free.
"""

from __future__ import annotations

from typing import Any

from isplit_export.bundle.split_verdict import split_verdict
from isplit_export.contract import CostBlock, CutCost, RankingFile
from isplit_export.errors import BadInputError
from isplit_export.text_table import text_table


def _ms(v: Any) -> str:
    return "-" if v is None else f"{float(v):.2f}"


def _cost_cells(pc: CutCost) -> list[str]:
    return [
        str(pc.bytes),
        _ms(pc.device_ms),
        _ms(pc.link_ms),
        _ms(pc.server_ms),
        _ms(pc.total_ms),
        _ms(pc.device_energy_mj),
    ]


def _figures(pc: CutCost) -> str:
    return "measured " + "+".join(sorted(pc.measured)) if pc.measured else "estimated"


def _cost(ranking: RankingFile) -> CostBlock:
    if ranking.cost is None:
        raise BadInputError("the ranking has no cost block: pass --link")
    return ranking.cost


def cost_table_rows(ranking: RankingFile) -> tuple[list[str], list[list[str]]]:
    """Header and rows: every candidate (local maximum) and every selected cut, then the two baselines."""
    cost = _cost(ranking)
    selected = list(cost.selected)
    pareto = set(cost.pareto)
    exported = set(cost.exported or ())
    header = [
        "sel",
        "rank",
        "cut",
        "node",
        "head FLOPs",
        "bytes",
        "device ms",
        "link ms",
        "server ms",
        "end-to-end ms",
        "energy mJ",
        "log10 CUI",
        "pareto",
        "figures",
    ]
    rows = []
    cands = [c for c in ranking.candidates if c.rank is not None or c.index in selected]
    cands.sort(key=lambda c: (c.rank is None, c.rank or 0, c.index))
    for c in cands:
        if c.cost is None:
            raise BadInputError(f"ranking candidate {c.index} has no cost row: re-run the plan")
        i = c.index
        mark = f"#{selected.index(i) + 1}" if i in selected else ""
        if i in exported and cost.exported is not None:
            mark += "*"
        rows.append(
            [
                mark,
                str(c.rank or "-"),
                str(i),
                c.node,
                f"{100 * c.head_flops_share:.1f}%",
                *_cost_cells(c.cost),
                "-inf" if c.log10_cui is None else f"{c.log10_cui:.3f}",
                "yes" if i in pareto else "",
                _figures(c.cost),
            ]
        )
    for name, label in (("device_only", "all on device"), ("server_only", "all on server")):
        b = cost.baselines[name]
        rows.append(
            [
                "",
                "-",
                "-",
                label,
                "100.0%" if name == "device_only" else "0.0%",
                *_cost_cells(b),
                "-",
                "",
                _figures(b),
            ]
        )
    return header, rows


def format_cost_table(ranking: RankingFile) -> str:
    """The terminal table of a ranking with a ``cost`` block: a one-line header, the table, whether
    splitting pays (:func:`~isplit_export.bundle.split_verdict.split_verdict`) and the note."""
    cost = _cost(ranking)
    lk, dev, srv = cost.link, cost.device, cost.server
    head = (
        f"objective {cost.objective}; link {lk.name} ({lk.mbit_s:g} Mbit/s, RTT {lk.rtt_ms:g} ms); "
        f"device {dev.target} {dev.unit} {dev.precision} ({dev.gflops:g} GFLOP/s); "
        f"server {srv.target} {srv.unit} {srv.precision} ({srv.gflops:g} GFLOP/s); "
        f"boundary {cost.encoding}"
    )
    header, rows = cost_table_rows(ranking)
    lines = [head, *text_table([header, *rows])]
    lines.append(
        "sel: #N = selected in that order" + ("; * = exported in the bundle" if cost.exported else "")
    )
    verdict = split_verdict(cost, ranking.candidates)
    if verdict is not None:
        lines.append(verdict.line())
    if cost.note:
        lines.append(f"note: {cost.note}")
    return "\n".join(lines)
