"""Choose which candidate cuts to export: an objective (``cui``, ``latency``, ``balanced``) and constraints.

Torch-free, and free of any cost model: it works on plain rows (one per cut) with the keys ``index``,
``node``, ``cui``, ``rank`` (I-Split's rank, ``None`` for a cut that is not a local maximum of the CUI
curve), ``head_flops_share``, ``bytes`` (the boundary as sent) and ``total_ms`` (end-to-end latency,
``None`` without a link).

- ``cui`` (default): I-Split's ranking, unchanged: local maxima by CUI.
- ``latency``: local maxima by end-to-end latency (ties: higher CUI first). A cut that is not a local
  maximum is never selected, but the note says when one is faster than the fastest candidate, and by how
  much.
- ``probe``: candidates by the probe's held-out score at the ``--bottleneck`` budget
  (:mod:`isplit_export.bottleneck.probe`; ties: I-Split's rank); needs no link.
- ``balanced``: the Pareto front of (CUI high, latency low) among the candidates, best CUI first; when
  the front has fewer than K cuts, the next front follows (non-dominated sorting).

Constraints drop candidates before the top K are taken; when they drop all of them the error names the
tightest one (the constraint that alone drops the most candidates).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from isplit_export.errors import BadInputError
from isplit_export.options import OBJECTIVES as OBJECTIVES  # the vocabulary lives with the options
from isplit_export.options import Constraints


def _measure(row: Mapping[str, Any], flag: str) -> float | None:
    """The row's value that ``flag`` bounds (None: unknown, e.g. latency without a link)."""
    if flag == "--max-head-flops":
        return float(row["head_flops_share"])
    if flag == "--max-boundary-kib":
        return float(row["bytes"]) / 1024.0
    value = row.get("total_ms")
    return None if value is None else float(value)


def violations(row: Mapping[str, Any], constraints: Constraints) -> list[str]:
    """The flags of ``constraints`` that ``row`` breaks."""
    out = []
    for flag, bound in constraints.active():
        value = _measure(row, flag)
        if value is None:
            raise BadInputError(f"{flag} needs the end-to-end latency: pass --link")
        if value > bound + 1e-12:
            out.append(flag)
    return out


def pareto_layers(points: Sequence[tuple[float, float]]) -> list[int]:
    """Non-dominated sorting of (cui, ms) points, higher CUI and lower ms better: 0 = the Pareto front."""
    n = len(points)
    layer = [-1] * n
    remaining = set(range(n))
    k = 0
    while remaining:
        front = {
            i
            for i in remaining
            if not any(
                points[j][0] >= points[i][0] and points[j][1] <= points[i][1] and points[j] != points[i]
                for j in remaining
            )
        }
        for i in front:
            layer[i] = k
        remaining -= front
        k += 1
    return layer


@dataclass
class Selection:
    """The chosen cut indices (best first), the Pareto front among the candidates and a note for people."""

    objective: str
    selected: list[int]
    pareto: list[int] = field(default_factory=list)
    excluded: dict[int, list[str]] = field(default_factory=dict)
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "objective": self.objective,
            "selected": self.selected,
            "pareto": self.pareto,
            "excluded": {str(k): v for k, v in sorted(self.excluded.items())},
            "note": self.note,
        }


def _no_cut_left(candidates: list[Mapping[str, Any]], constraints: Constraints) -> BadInputError:
    """One line naming the tightest constraint: the one that alone drops the most candidates."""
    best: tuple[int, str, float, float] | None = None
    for flag, bound in constraints.active():
        values = [_measure(r, flag) or 0.0 for r in candidates]
        dropped = sum(v > bound + 1e-12 for v in values)
        if best is None or dropped > best[0]:
            best = (dropped, flag, bound, min(values))
    assert best is not None
    dropped, flag, bound, smallest = best
    unit = {"--max-head-flops": "", "--max-boundary-kib": " KiB", "--max-latency-ms": " ms"}[flag]
    return BadInputError(
        f"the constraints leave no candidate split: {flag} {bound:g} is the tightest (it alone drops {dropped} of "
        f"{len(candidates)} candidates; the smallest candidate value is {smallest:.4g}{unit}): relax it"
    )


def select(
    rows: Sequence[Mapping[str, Any]], objective: str, constraints: Constraints, top: int | None
) -> Selection:
    """Apply ``constraints`` to the candidates (rows with a rank), order them by ``objective``, take ``top``."""
    if objective not in OBJECTIVES:
        raise BadInputError(f"unknown --objective {objective!r}: choose {', '.join(OBJECTIVES)}")
    needs_ms = objective not in ("cui", "probe")
    if needs_ms and any(r.get("total_ms") is None for r in rows):
        raise BadInputError(f"--objective {objective} needs the end-to-end latency: pass --link")
    candidates = [r for r in rows if r.get("rank") is not None]
    if not candidates:
        raise BadInputError("the ranking has no candidate split (no local maximum of the CUI curve)")
    excluded = {int(r["index"]): v for r in rows if (v := violations(r, constraints))}
    kept = [r for r in candidates if int(r["index"]) not in excluded]
    if not kept:
        raise _no_cut_left(candidates, constraints)

    pareto: list[int] = []
    if all(r.get("total_ms") is not None for r in kept):
        layers = pareto_layers([(float(r["cui"]), float(r["total_ms"])) for r in kept])
        pareto = sorted(int(r["index"]) for r, layer in zip(kept, layers, strict=True) if layer == 0)
    if objective == "cui":
        ordered = sorted(kept, key=lambda r: int(r["rank"]))
    elif objective == "probe":
        if any(not isinstance(r.get("probe"), Mapping) for r in kept):
            raise BadInputError(
                "--objective probe needs the probe's scores: add --bottleneck SIZE (e.g. 64B)"
            )
        ordered = sorted(kept, key=lambda r: (-float(r["probe"]["value"]), int(r["rank"])))
    elif objective == "latency":
        ordered = sorted(kept, key=lambda r: (float(r["total_ms"]), -float(r["cui"]), int(r["index"])))
    else:
        layer_of = dict(zip((int(r["index"]) for r in kept), layers, strict=True))
        ordered = sorted(kept, key=lambda r: (layer_of[int(r["index"])], -float(r["cui"]), int(r["index"])))
    chosen = [int(r["index"]) for r in (ordered[:top] if top else ordered)]
    note = _faster_note(rows, kept, excluded) if needs_ms else None
    return Selection(objective, chosen, pareto, excluded, note)


def _faster_note(
    rows: Sequence[Mapping[str, Any]], kept: list[Mapping[str, Any]], excluded: dict[int, list[str]]
) -> str | None:
    """Say when a cut that is not a candidate (not a local maximum) beats the fastest candidate."""
    fastest = min(kept, key=lambda r: float(r["total_ms"]))
    others = [r for r in rows if r.get("rank") is None and int(r["index"]) not in excluded]
    if not others:
        return None
    best = min(others, key=lambda r: (float(r["total_ms"]), int(r["index"])))
    gain = float(fastest["total_ms"]) - float(best["total_ms"])
    if gain <= 0:
        return None
    return (
        f"cut {best['index']} ({best['node']}) is not a local maximum of the CUI, so it is never selected, but it is "
        f"{gain:.3f} ms faster end to end than the fastest candidate, cut {fastest['index']} ({fastest['node']})"
    )
