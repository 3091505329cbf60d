"""The cost table of a ranking dict with a ``cost`` block: its rows (:func:`cost_table_rows`, also the
report's cost section) and the terminal table (:func:`format_cost_table`: ``isplit-export`` and
``isplit-export plan``), torch-free.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from isplit_export.bundle.split_verdict import split_verdict
from isplit_export.text_table import text_table


def _ms(v: Any) -> str:
    return "-" if v is None else f"{float(v):.2f}"


def cost_table_rows(ranking: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: every candidate (local maximum) and every selected cut, then the two baselines."""
    cost = ranking["cost"]
    selected = list(cost.get("selected") or [])
    pareto = set(cost.get("pareto") or [])
    exported = set(cost.get("exported") or [])
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
    cands = [c for c in ranking["candidates"] if c.get("rank") is not None or int(c["index"]) in selected]
    cands.sort(key=lambda c: (c.get("rank") is None, c.get("rank") or 0, c["index"]))
    for c in cands:
        pc = c["cost"]
        i = int(c["index"])
        mark = f"#{selected.index(i) + 1}" if i in selected else ""
        if i in exported and cost.get("exported") is not None:
            mark += "*"
        meas = pc.get("measured") or {}
        figures = "measured " + "+".join(sorted(meas)) if meas else "estimated"
        log10 = c.get("log10_cui")
        rows.append(
            [
                mark,
                str(c.get("rank") or "-"),
                str(i),
                str(c["node"]),
                f"{100 * float(c['head_flops_share']):.1f}%",
                str(pc["bytes"]),
                _ms(pc["device_ms"]),
                _ms(pc["link_ms"]),
                _ms(pc["server_ms"]),
                _ms(pc["total_ms"]),
                _ms(pc["device_energy_mj"]),
                "-inf" if log10 is None else f"{log10:.3f}",
                "yes" if i in pareto else "",
                figures,
            ]
        )
    for name, label in (("device_only", "all on device"), ("server_only", "all on server")):
        b = cost["baselines"][name]
        meas = b.get("measured") or {}
        rows.append(
            [
                "",
                "-",
                "-",
                label,
                "100.0%" if name == "device_only" else "0.0%",
                str(b["bytes"]),
                _ms(b["device_ms"]),
                _ms(b["link_ms"]),
                _ms(b["server_ms"]),
                _ms(b["total_ms"]),
                _ms(b["device_energy_mj"]),
                "-",
                "",
                "measured " + "+".join(sorted(meas)) if meas else "estimated",
            ]
        )
    return header, rows


def format_cost_table(ranking: Mapping[str, Any]) -> str:
    """The terminal table of a ranking dict with a ``cost`` block: a one-line header, the table, whether
    splitting pays (:func:`~isplit_export.bundle.split_verdict.split_verdict`) and the note."""
    cost = ranking["cost"]
    lk, dev, srv = cost["link"], cost["device"], cost["server"]
    head = (
        f"objective {cost['objective']}; link {lk['name']} ({lk['mbit_s']:g} Mbit/s, RTT {lk['rtt_ms']:g} ms); "
        f"device {dev['target']} {dev['unit']} {dev['precision']} ({dev['gflops']:g} GFLOP/s); "
        f"server {srv['target']} {srv['unit']} {srv['precision']} ({srv['gflops']:g} GFLOP/s); "
        f"boundary {cost['encoding']}"
    )
    header, rows = cost_table_rows(ranking)
    lines = [head, *text_table([header, *rows])]
    lines.append(
        "sel: #N = selected in that order" + ("; * = exported in the bundle" if cost.get("exported") else "")
    )
    verdict = split_verdict(cost, ranking["candidates"])
    if verdict is not None:
        lines.append(verdict.line())
    if cost.get("note"):
        lines.append(f"note: {cost['note']}")
    return "\n".join(lines)
