"""Choose which candidate cuts to export: an objective (``cui``, ``latency``, ``balanced``) and constraints.

Torch-free, and free of any cost model: it works on one :class:`CutRow` per cut (its index, node, CUI,
I-Split rank (``None`` for a cut that is not a local maximum of the CUI curve), head FLOPs share, the
boundary bytes as sent, the end-to-end latency (``None`` without a link) and the probe's score).

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

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from isplit_export.errors import BadInputError
from isplit_export.options import OBJECTIVES as OBJECTIVES  # the vocabulary lives with the options
from isplit_export.options import Constraints


@dataclass(frozen=True)
class CutRow:
    """What the selection weighs of one cut."""

    index: int
    node: str
    cui: float
    rank: int | None
    """I-Split's rank; None for a cut that is not a local maximum of the CUI curve (never selected)."""
    head_flops_share: float
    bytes: int
    """The boundary as sent, per image."""
    total_ms: float | None = None
    """End-to-end latency per image; None without a link."""
    probe: float | None = None
    """The probe's held-out score at the ``--bottleneck`` budget; None when not probed."""


def _measure(row: CutRow, flag: str) -> float | None:
    """The row's value that ``flag`` bounds (None: unknown, e.g. latency without a link)."""
    if flag == "--max-head-flops":
        return row.head_flops_share
    if flag == "--max-boundary-kib":
        return row.bytes / 1024.0
    return row.total_ms


def violations(row: CutRow, constraints: Constraints) -> list[str]:
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


def _no_cut_left(candidates: list[CutRow], constraints: Constraints) -> BadInputError:
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


def select(rows: Sequence[CutRow], objective: str, constraints: Constraints, top: int | None) -> Selection:
    """Apply ``constraints`` to the candidates (rows with a rank), order them by ``objective``, take ``top``."""
    if objective not in OBJECTIVES:
        raise BadInputError(f"unknown --objective {objective!r}: choose {', '.join(OBJECTIVES)}")
    needs_ms = objective not in ("cui", "probe")
    if needs_ms and any(r.total_ms is None for r in rows):
        raise BadInputError(f"--objective {objective} needs the end-to-end latency: pass --link")
    candidates = [r for r in rows if r.rank is not None]
    if not candidates:
        raise BadInputError("the ranking has no candidate split (no local maximum of the CUI curve)")
    excluded = {r.index: v for r in rows if (v := violations(r, constraints))}
    kept = [r for r in candidates if r.index not in excluded]
    if not kept:
        raise _no_cut_left(candidates, constraints)

    pareto: list[int] = []
    times = [r.total_ms for r in kept]
    if all(t is not None for t in times):
        layers = pareto_layers([(r.cui, float(t or 0.0)) for r, t in zip(kept, times, strict=True)])
        pareto = sorted(r.index for r, layer in zip(kept, layers, strict=True) if layer == 0)
    if objective == "cui":
        ordered = sorted(kept, key=lambda r: r.rank or 0)
    elif objective == "probe":
        if any(r.probe is None for r in kept):
            raise BadInputError(
                "--objective probe needs the probe's scores: add --bottleneck SIZE (e.g. 64B)"
            )
        ordered = sorted(kept, key=lambda r: (-(r.probe or 0.0), r.rank or 0))
    elif objective == "latency":
        ordered = sorted(kept, key=lambda r: (r.total_ms or 0.0, -r.cui, r.index))
    else:
        layer_of = dict(zip((r.index for r in kept), layers, strict=True))
        ordered = sorted(kept, key=lambda r: (layer_of[r.index], -r.cui, r.index))
    chosen = [r.index for r in (ordered[:top] if top else ordered)]
    note = _faster_note(rows, kept, excluded) if needs_ms else None
    return Selection(objective, chosen, pareto, excluded, note)


def _faster_note(rows: Sequence[CutRow], kept: list[CutRow], excluded: dict[int, list[str]]) -> str | None:
    """Say when a cut that is not a candidate (not a local maximum) beats the fastest candidate."""
    fastest = min(kept, key=lambda r: r.total_ms or 0.0)
    others = [r for r in rows if r.rank is None and r.index not in excluded]
    if not others:
        return None
    best = min(others, key=lambda r: (r.total_ms or 0.0, r.index))
    gain = (fastest.total_ms or 0.0) - (best.total_ms or 0.0)
    if gain <= 0:
        return None
    return (
        f"cut {best.index} ({best.node}) is not a local maximum of the CUI, so it is never selected, but it is "
        f"{gain:.3f} ms faster end to end than the fastest candidate, cut {fastest.index} ({fastest.node})"
    )
