"""isplit-export: I-Split split-point ranking and verified head/tail export for edge split computing.

Public API (imported lazily, so ``import isplit_export`` and :func:`verify_bundle` need no PyTorch)::

    rank(options | model, **fields)   -> api.RankResult       the I-Split ranking of every valid cut
    export(options | model, **fields) -> bundle.ExportResult   a verified, reproducible bundle
    verify_bundle(path, ...)          -> verify.BundleVerification
    study(options | model, **fields)  -> study.StudyResult     bottleneck at each cut, measured vs CUI/CDE
    plan(bundle, link=..., ...)       -> planning.PlanResult   re-plan a bundle for a link (torch-free)
    RankOptions, ExportOptions        the frozen options objects (options.py) every job reads
    StudyOptions, BottleneckOptions   the study's options and the learned bottleneck's (``bottleneck=``)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = [
    "BottleneckOptions", "Constraints", "ExportOptions", "RankOptions", "StudyOptions", "__version__", "export", "plan",
    "rank", "study", "verify_bundle",
]  # fmt: skip

if TYPE_CHECKING:
    from .api import rank
    from .bottleneck import BottleneckOptions
    from .bundle import export
    from .options import ExportOptions, RankOptions
    from .planning import plan
    from .selection import Constraints
    from .study import StudyOptions, study
    from .verify import verify_bundle

_LAZY = {"rank": "api", "export": "bundle", "verify_bundle": "verify", "RankOptions": "options", "ExportOptions": "options",
         "study": "study", "StudyOptions": "study", "BottleneckOptions": "bottleneck", "plan": "planning",
         "Constraints": "selection"}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'isplit_export' has no attribute {name!r}")
