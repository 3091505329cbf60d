"""The probe's rate-accuracy grid on the terminal (``rank --budgets``): one row per probed cut, one column per
budget, each cell the held-out score and its Wilson 95 % CI. Torch-free."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from isplit_export.contract.rate_accuracy import GridPoint, RateAccuracyGrid, grid_of
from isplit_export.text_table import text_table


def budget_text(nbytes: int) -> str:
    """``64B``, ``1KiB``, ``1.5KiB``, ``2MiB``: a budget as the ladder writes it."""
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= size:
            return f"{nbytes / size:g}{unit}"
    return f"{nbytes}B"


def _cell(p: GridPoint | None) -> str:
    """``96.5 [91,99]`` (percent; ``-`` where the cut cannot reach the budget)."""
    if p is None:
        return "-"
    lo, hi = p.ci95
    return f"{100 * p.value:.1f} [{100 * lo:.0f},{100 * hi:.0f}]"


def format_grid(grid: RateAccuracyGrid) -> str:
    """The grid as a text table (cuts in network order) and one line naming the metric and the full model."""
    head = ("cut", "node", "CUI rank", *(budget_text(b) for b in grid.budgets))
    rows: list[tuple[str, ...]] = [head]
    for c in grid.cuts:
        at = {p.budget: p for p in c.points}
        rows.append(
            (
                str(c.index),
                c.node,
                "-" if c.cui_rank is None else str(c.cui_rank),
                *(_cell(at.get(b)) for b in grid.budgets),
            )
        )
    full = "" if grid.full_model is None else f"; full model {100 * grid.full_model:.1f}%"
    title = (
        f"the probe's held-out {grid.metric} (%, Wilson 95% CI) per code budget ({grid.ladder}, "
        f"{grid.encoding}){full}; '-': the cut cannot reach that budget"
    )
    return "\n".join([title, *text_table(rows)])


def grid_lines(ranking: Mapping[str, Any]) -> list[str]:
    """The grid's lines for a ranking dict with a ``rate_accuracy`` block (none without one)."""
    grid = grid_of(ranking)
    return [] if grid is None else format_grid(grid).splitlines()
