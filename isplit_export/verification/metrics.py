"""Numerical comparison of logits and task accuracy (numpy only).

Torch-free on purpose: :mod:`isplit_export.verification.verify` uses these on a Jetson without PyTorch.
All arithmetic runs in float64 so the metric itself adds no error to what it measures.
"""

from __future__ import annotations

import numpy as np

REL_FLOOR = 1e-3
"""Floor of the denominator of ``max_rel``, as a fraction of the largest absolute reference logit.

Plain elementwise relative error explodes on logits near zero (an error of 1e-6 on a logit of 1e-9
reads as 1000x). Dividing by ``max(|ref|, REL_FLOOR * max|ref|)`` keeps the metric relative for
the logits that matter and bounds it by ``max_abs_rel / REL_FLOOR`` for the tiny ones."""

_TINY = 1e-30  # guards divisions when the reference is all zeros


def _as_rows(x: np.ndarray) -> np.ndarray:
    """``x`` as a float64 ``[N, K]`` matrix (a 1-D vector is one row; extra dims are flattened)."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 0:
        return a.reshape(1, 1)
    if a.ndim == 1:
        return a.reshape(1, -1)
    return a.reshape(a.shape[0], -1)


def compare_logits(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """Compare ``got`` logits against reference logits ``ref`` (both ``[N, K]``).

    Returns:
        ``max_abs``: ``max |got - ref|``;
        ``max_abs_rel``: ``max_abs`` divided by the largest absolute reference logit (scale-free,
        the quantity the gates bound);
        ``max_rel``: ``max |got - ref| / max(|ref|, REL_FLOOR * max|ref|)`` elementwise (see
        :data:`REL_FLOOR`);
        ``mean_abs``: mean of ``|got - ref|``;
        ``cosine``: the *minimum* over rows of the cosine similarity of ``got[i]`` and ``ref[i]``
        (the worst image, not the average; two all-zero rows count as 1, one all-zero row as 0);
        ``top1_agreement``: fraction of rows whose argmax agrees.

    Non-finite values in ``got`` propagate as ``nan``/``inf``, which every gate rejects.

    Raises:
        ValueError: the shapes differ or there are no rows.
    """
    if np.shape(ref) != np.shape(got):
        raise ValueError(f"logit shapes differ: reference {np.shape(ref)} vs got {np.shape(got)}")
    if np.size(ref) == 0:
        raise ValueError("no logits to compare")
    r, g = _as_rows(ref), _as_rows(got)
    diff = np.abs(g - r)
    scale = float(np.max(np.abs(r)))
    max_abs = float(np.max(diff))
    floor = max(REL_FLOOR * scale, _TINY)
    rel = diff / np.maximum(np.abs(r), floor)

    nr, ng = np.linalg.norm(r, axis=1), np.linalg.norm(g, axis=1)
    dots = np.sum(r * g, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = dots / (nr * ng)
    both_zero = (nr == 0) & (ng == 0)
    one_zero = (nr == 0) ^ (ng == 0)
    cos = np.where(both_zero, 1.0, np.where(one_zero, 0.0, cos))
    cos = np.clip(cos, -1.0, 1.0)  # rounding can push |cos| a hair above 1

    return {
        "max_abs": max_abs,
        "max_abs_rel": max_abs / max(scale, _TINY),
        "max_rel": float(np.max(rel)),
        "mean_abs": float(np.mean(diff)),
        "cosine": float(np.min(cos)) if not np.isnan(cos).any() else float("nan"),
        "top1_agreement": float(np.mean(np.argmax(r, axis=1) == np.argmax(g, axis=1))),
    }


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float | None:
    """Top-1 accuracy of ``logits`` ``[N, K]`` over the rows whose label is known.

    Labels ``< 0`` mean "unknown" (the bundle stores -1 for unlabelled calibration photos) and are
    skipped. Returns ``None`` when no label is known, so callers fall back to agreement.
    """
    lab = np.asarray(labels).reshape(-1)
    rows = _as_rows(logits)
    if rows.shape[0] != lab.shape[0]:
        raise ValueError(f"{rows.shape[0]} logit rows but {lab.shape[0]} labels")
    known = lab >= 0
    if not known.any():
        return None
    pred = np.argmax(rows[known], axis=1)
    return float(np.mean(pred == lab[known]))
