"""The statistics helpers the bottleneck and the study use (now in :mod:`isplit_export.metrics`)."""

from __future__ import annotations

from .metrics import bootstrap_ci, kendall_tau, proportion_ci

__all__ = ["bootstrap_ci", "kendall_tau", "proportion_ci"]
