"""Rounding for the JSON the tool writes: one helper, so every file rounds the same way.

Every float the tool writes into a JSON file goes through :func:`rounded` (no bare ``round``): nine
significant digits for measured metrics (checks, studies: with ``finite=True`` where a non-finite
value becomes null), six for ``run.json``, and a fixed number of places for quantities with a unit of
their own (shares and probabilities 6, cost milliseconds 6, latencies 4, DLA fractions 4, seconds 3).

Rounded numbers keep manifests, studies and plans byte-reproducible across machines (the last bits
of a float64 sum differ between BLAS builds; nine significant digits do not).
"""

from __future__ import annotations

import math
from typing import Literal, overload


@overload
def rounded(
    v: float, digits: int = 9, *, decimals: bool = False, finite: Literal[False] = False
) -> float: ...
@overload
def rounded(
    v: float | None, digits: int = 9, *, decimals: bool = False, finite: bool = False
) -> float | None: ...
def rounded(
    v: float | None, digits: int = 9, *, decimals: bool = False, finite: bool = False
) -> float | None:
    """``v`` to ``digits`` significant digits, or with ``decimals`` to ``digits`` places after the point.

    ``None`` stays ``None``; with ``finite`` a nan or infinity becomes ``None`` too (JSON has neither),
    without it a non-finite value is passed through unchanged.
    """
    if v is None or (finite and not math.isfinite(v)):
        return None
    return round(v, digits) if decimals else float(f"{v:.{digits}g}")
