"""isplit-export: I-Split split-point ranking and verified head/tail export for edge split computing.

Public API (imported lazily, so ``import isplit_export`` and :func:`verify_bundle` need no PyTorch)::

    rank(options | model, **fields)   -> ranking.ranked.RankResult    the I-Split ranking of every valid cut
    export(options | model, **fields) -> jobs.export.ExportResult       a verified, reproducible bundle
    verify_bundle(path, ...)          -> verification.outcome.BundleVerification  (torch-free)
    study(options | model, **fields)  -> jobs.study.StudyResult        bottleneck at each cut, measured vs CUI/CDE
    plan(bundle, link=..., ...)       -> jobs.plan.PlanResult          re-plan a bundle for a link (torch-free)
    RankOptions, ExportOptions        the frozen options objects (options.py) every job reads
    StudyOptions, BottleneckOptions   the study's options and the learned bottleneck's (``bottleneck=``)
    Constraints                       the selection's constraints (``constraints=``)

Each job is one module of ``jobs/``, a thin orchestration over the stage libraries (``ranking`` ->
``exporting`` + ``bottleneck`` -> ``targets`` -> ``verification`` -> ``bundle`` -> ``serving``); shared
pieces (``options``, ``models``, ``data``, ``distributed``, ``plots``, ``files``, ``numbers``, ``errors``,
``version``) sit at the top level next to ``cli``. The stage map and the import rule: ``docs/architecture.md``.
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
    from isplit_export.jobs.export import export
    from isplit_export.jobs.plan import plan
    from isplit_export.jobs.rank import rank
    from isplit_export.jobs.study import study
    from isplit_export.jobs.verify import verify_bundle
    from isplit_export.options import Constraints, ExportOptions, RankOptions, StudyOptions
    from isplit_export.options_bottleneck import BottleneckOptions

_LAZY = {
    "rank": "jobs.rank",
    "export": "jobs.export",
    "verify_bundle": "jobs.verify",
    "RankOptions": "options",
    "ExportOptions": "options",
    "study": "jobs.study",
    "StudyOptions": "options",
    "BottleneckOptions": "options_bottleneck",
    "plan": "jobs.plan",
    "Constraints": "options",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'isplit_export' has no attribute {name!r}")
