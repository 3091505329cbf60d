"""isplit-export: I-Split split-point ranking and verified head/tail export for edge split computing.

Public API (imported lazily, so ``import isplit_export`` and :func:`verify_bundle` need no PyTorch)::

    rank(options | model, **fields)   -> api.RankResult               the I-Split ranking of every valid cut
    export(options | model, **fields) -> jobs.export.ExportResult     a verified, reproducible bundle
    verify_bundle(path, ...)          -> verification.outcome.BundleVerification  (torch-free)
    study(options | model, **fields)  -> bottleneck.study.StudyResult  bottleneck at each cut, measured vs CUI/CDE
    plan(bundle, link=..., ...)       -> bundle.planning.PlanResult    re-plan a bundle for a link (torch-free)
    RankOptions, ExportOptions        the frozen options objects (options.py) every job reads
    StudyOptions, BottleneckOptions   the study's options and the learned bottleneck's (``bottleneck=``)
    Constraints                       the selection's constraints (``constraints=``)

The implementation is grouped by pipeline stage: ``ranking`` -> ``exporting`` (+ ``bottleneck``) ->
``targets`` -> ``verification`` -> ``bundle``; shared pieces (``options``, ``models``, ``data``,
``distributed``, ``plots``, ``files``, ``numbers``, ``errors``, ``version``) sit at the top level next
to ``api`` and ``cli``. The stage map and the import rule: ``docs/architecture.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from isplit_export.version import __version__

__all__ = [
    "BottleneckOptions",
    "Constraints",
    "ExportOptions",
    "RankOptions",
    "StudyOptions",
    "__version__",
    "export",
    "plan",
    "rank",
    "study",
    "verify_bundle",
]

if TYPE_CHECKING:
    from isplit_export.api import rank
    from isplit_export.bottleneck.study import study
    from isplit_export.bundle.planning import plan
    from isplit_export.jobs.export import export
    from isplit_export.options import Constraints, ExportOptions, RankOptions, StudyOptions
    from isplit_export.options_bottleneck import BottleneckOptions
    from isplit_export.verification.verify import verify_bundle

_LAZY = {
    "rank": "api",
    "export": "jobs.export",
    "verify_bundle": "verification.verify",
    "RankOptions": "options",
    "ExportOptions": "options",
    "study": "bottleneck.study",
    "StudyOptions": "options",
    "BottleneckOptions": "options_bottleneck",
    "plan": "bundle.planning",
    "Constraints": "options",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'isplit_export' has no attribute {name!r}")
