"""Markdown cells and tables for ``report.md``: numbers as text, ``-`` for anything missing or not finite."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def num(v: Any) -> float | None:
    """``v`` as a finite float, else None (bools are not numbers here)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def sig(v: Any, digits: int = 3) -> str:
    f = num(v)
    return "-" if f is None else f"{f:.{digits}g}"


def pct(v: Any, digits: int = 1) -> str:
    f = num(v)
    return "-" if f is None else f"{100 * f:.{digits}f} %"


def pp(v: Any) -> str:
    """A difference of two fractions in percentage points."""
    f = num(v)
    return "-" if f is None else f"{100 * f:.1f} pp"


def kib(v: Any) -> str:
    f = num(v)
    return "-" if f is None else f"{f / 1024:.1f}"


def ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def dims(v: Any) -> str:
    if isinstance(v, Sequence) and not isinstance(v, str):
        return "x".join(str(d) for d in v)
    return "-" if v is None else str(v)


def cell(v: Any) -> str:
    """A Markdown table cell: pipes escaped, newlines flattened."""
    return str(v).replace("|", "\\|").replace("\n", " ")


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return lines
