"""The statistics helpers the bottleneck and the study use, from :mod:`isplit_export.metrics` when present."""

from __future__ import annotations

try:
    from .metrics import bootstrap_ci, kendall_tau, proportion_ci  # type: ignore[attr-defined]
except ImportError:  # until branch `bootstrap` is merged
    from ._pending_stats import bootstrap_ci, kendall_tau, proportion_ci

__all__ = ["bootstrap_ci", "kendall_tau", "proportion_ci"]
