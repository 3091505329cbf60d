"""The one terminal-table helper: rows of cells as left-aligned columns, two spaces apart.

Used by ``verify`` (:func:`isplit_export.verification.outcome.format_verification`), the ranking
(:meth:`isplit_export.ranking.candidates.Ranking.table`) and the cost table
(:func:`isplit_export.bundle.cost_table.format_cost_table`); Markdown tables are ``bundle/markdown.py``.
"""

from __future__ import annotations

from collections.abc import Sequence


def text_table(rows: Sequence[Sequence[str]]) -> list[str]:
    """One line per row (the first is usually the header): each column as wide as its widest cell,
    cells left-aligned and two spaces apart, trailing spaces stripped. Every row has the same length."""
    if not rows:
        return []
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
