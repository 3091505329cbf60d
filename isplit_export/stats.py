"""Deprecated shim (removed at the end of the bottleneck branch): use :mod:`isplit_export.metrics`."""

from __future__ import annotations

from .metrics import bootstrap_ci, kendall_tau, proportion_ci

__all__ = ["bootstrap_ci", "kendall_tau", "proportion_ci"]
