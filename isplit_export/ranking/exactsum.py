"""Exact, order-independent sums of float64 values, so a sum is the same bytes in any order.

Every finite float64 is an integer multiple of 2**-1074, so it is held here as that integer (a
Python int: arbitrary precision). Adding such integers is exact, hence the total does not depend on
the order of the additions, on how the values were split into batches, or on how many processes
summed their parts before the parts were added. That is what lets a ranking computed by N
processes be byte-identical to the single-process one. Converting back (:func:`mean`) is one
correctly rounded division.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

SCALE_BITS = 1074
"""Values are stored as ``round(value * 2**SCALE_BITS)``, which is exact for every finite float64."""

_MANTISSA_BITS = 53


def to_fixed(values: np.ndarray) -> list[list[int]]:
    """Rows of a float64 matrix [N, M] as exact integers (units of 2**-1074)."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2:
        raise ValueError(f"expected a matrix, got shape {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError("cannot sum NaN or infinite values exactly")
    mantissa, exponent = np.frexp(v)  # v = mantissa * 2**exponent, 0.5 <= |mantissa| < 1
    m = (mantissa * float(1 << _MANTISSA_BITS)).astype(np.int64)  # exact: 53 bits
    shift = exponent.astype(np.int64) - _MANTISSA_BITS + SCALE_BITS  # < 0 only for subnormals
    return [
        [_shift(int(a), int(b)) for a, b in zip(mr, sr, strict=True)] for mr, sr in zip(m, shift, strict=True)
    ]


def _shift(mantissa: int, bits: int) -> int:
    """``mantissa * 2**bits``; for ``bits < 0`` (subnormals) the low bits are zero, so it is exact."""
    return mantissa << bits if bits >= 0 else mantissa >> -bits


def add_into(total: list[int], row: Sequence[int]) -> None:
    """``total += row``, element-wise, in place."""
    for j, value in enumerate(row):
        total[j] += value


def sum_rows(rows: Iterable[Sequence[int]], width: int) -> list[int]:
    """The element-wise sum of exact rows."""
    total = [0] * width
    for row in rows:
        add_into(total, row)
    return total


def to_float(row: Sequence[int], divisor: int = 1) -> np.ndarray:
    """``row / divisor`` as float64, each element correctly rounded (one division)."""
    den = divisor << SCALE_BITS
    return np.array([value / den for value in row], dtype=np.float64)
