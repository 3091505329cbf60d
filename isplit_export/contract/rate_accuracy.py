"""The ``rate_accuracy`` block of ``ranking.json`` as typed values (:class:`RateAccuracyGrid`, :class:`GridPoint`),
validated by :meth:`RateAccuracyGrid.from_json`: the one reader of the grid (the terminal table, the (cut,
budget) choice and ``plan`` use it). Written by :mod:`isplit_export.bottleneck.rate_accuracy`; the schema is
in docs/bundle.md."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from isplit_export.contract.jsonio import req_int, req_number, req_str
from isplit_export.errors import BadInputError

SOURCE = "ranking.json rate_accuracy"


@dataclass(frozen=True)
class GridPoint:
    """One (cut, budget) of the grid: the code's bytes and the probe's held-out score with its Wilson 95 % CI."""

    cut: int
    node: str
    cui_rank: int | None
    head_flops: int
    budget: int
    code_bytes: int
    value: float
    ci95: tuple[float, float]
    images: int | None = None
    """The held-out images the score was measured on (None where not written)."""

    @property
    def label(self) -> str:
        """``cut 2 @ 64B``: how a point is named on the terminal and in plots."""
        return f"cut {self.cut} @ {self.code_bytes}B"


@dataclass(frozen=True)
class GridCut:
    """One probed cut: its reachable points (budget ascending) and the budgets it cannot reach."""

    index: int
    node: str
    cui_rank: int | None
    head_flops: int
    log10_cui: float | None
    points: tuple[GridPoint, ...]
    unreachable: tuple[int, ...]


@dataclass(frozen=True)
class RateAccuracyGrid:
    """The probe's rate-accuracy grid: the ladder's budgets, the metric, the full model's score and the cuts."""

    ladder: str
    budgets: tuple[int, ...]
    encoding: str
    metric: str
    full_model: float | None
    total_flops: int
    cuts: tuple[GridCut, ...]

    @property
    def points(self) -> list[GridPoint]:
        """Every reachable (cut, budget), cuts in network order, budgets ascending."""
        return [p for c in self.cuts for p in c.points]

    @classmethod
    def from_json(cls, block: Mapping[str, Any]) -> RateAccuracyGrid:
        """Validate the block; a malformed one is one line naming the field (:class:`BadInputError`)."""
        budgets = block.get("budgets")
        if not isinstance(budgets, list) or not all(isinstance(b, int) and b > 0 for b in budgets):
            raise BadInputError(f"{SOURCE}: field 'budgets' must be a list of positive integers")
        ladder = block.get("ladder")
        spec = req_str(ladder, "spec", SOURCE, "ladder.spec") if isinstance(ladder, Mapping) else None
        encoding = req_str(block, "encoding", SOURCE)
        metric = req_str(block, "metric", SOURCE, optional=True) or "accuracy"
        full = req_number(block, "full_model", SOURCE, lo=0.0, hi=1.0, optional=True)
        total = req_int(block, "total_flops", SOURCE) or 0
        rows = block.get("cuts")
        if not isinstance(rows, list):
            raise BadInputError(f"{SOURCE}: field 'cuts' must be a list")
        cuts = tuple(_cut(r, total) for r in rows)
        return cls(spec or "?", tuple(budgets), encoding or "int8", metric, full, total, cuts)


def grid_of(ranking: Mapping[str, Any]) -> RateAccuracyGrid | None:
    """The ``rate_accuracy`` block of a ranking (``ranking.json``) as a grid; None without one."""
    block = ranking.get("rate_accuracy")
    if block is None:
        return None
    if not isinstance(block, Mapping):
        raise BadInputError(f"{SOURCE}: field 'rate_accuracy' must be an object")
    return RateAccuracyGrid.from_json(block)


def _cut(row: Any, total_flops: int) -> GridCut:
    if not isinstance(row, Mapping):
        raise BadInputError(f"{SOURCE}: every entry of 'cuts' must be an object")
    index = req_int(row, "index", SOURCE, "cuts[].index") or 0
    node = req_str(row, "node", SOURCE, "cuts[].node") or ""
    rank = req_int(row, "cui_rank", SOURCE, "cuts[].cui_rank", lo=1, optional=True)
    head = req_int(row, "head_flops", SOURCE, "cuts[].head_flops", hi=total_flops) or 0
    log10 = req_number(row, "log10_cui", SOURCE, "cuts[].log10_cui", lo=-1e6, hi=1e6, optional=True)
    points = row.get("points")
    unreachable = row.get("unreachable")
    if not isinstance(points, list) or not isinstance(unreachable, list):
        raise BadInputError(f"{SOURCE}: cut {index} needs lists 'points' and 'unreachable'")
    return GridCut(
        index,
        node,
        rank,
        head,
        log10,
        tuple(_point(p, index, node, rank, head) for p in points),
        tuple(int(b) for b in unreachable if isinstance(b, int)),
    )


def _point(p: Any, cut: int, node: str, rank: int | None, head_flops: int) -> GridPoint:
    if not isinstance(p, Mapping):
        raise BadInputError(f"{SOURCE}: every point of cut {cut} must be an object")
    where = f"cuts[{cut}].points[]"
    ci = p.get("ci95")
    if not isinstance(ci, list) or len(ci) != 2 or not all(isinstance(v, (int, float)) for v in ci):
        raise BadInputError(f"{SOURCE}: field '{where}.ci95' must be a pair of numbers")
    return GridPoint(
        cut,
        node,
        rank,
        head_flops,
        req_int(p, "budget", SOURCE, f"{where}.budget", lo=1) or 1,
        req_int(p, "code_bytes", SOURCE, f"{where}.code_bytes", lo=1) or 1,
        req_number(p, "value", SOURCE, f"{where}.value", lo=0.0, hi=1.0) or 0.0,
        (float(ci[0]), float(ci[1])),
        req_int(p, "images", SOURCE, f"{where}.images", lo=1, optional=True),
    )
