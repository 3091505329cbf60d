"""The export's verdict as the bundle carries it: the gate outcome of every split and pair, and where it was measured.

``isplit-export`` gates each split's pairs when it exports (``splits[i].verification``: one check per
pair, e.g. ``fp32`` and ``int8-qdq``) and records the machine (``machine``, a
:class:`~isplit_export.contract.machine.Machine`). ``verify`` on another machine reports both next to
its own replay, so a bundle whose export gates failed never reads as a bare ``passed``. Old bundles
without a ``machine`` block read as "not recorded".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from isplit_export.contract.jsonio import _bad
from isplit_export.contract.machine import Machine
from isplit_export.contract.splits import Verification


@dataclass(frozen=True)
class ExportVerdict:
    """One split's gates at export: ``checks`` maps each pair's check (``fp32``, ``int8-qdq``...) to passed."""

    split: int
    dir: str
    passed: bool
    checks: tuple[tuple[str, bool], ...]
    failures: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """JSON form as written to ``verify.json`` (``export.splits``)."""
        return {
            "split": self.split,
            "dir": self.dir,
            "passed": self.passed,
            "checks": dict(self.checks),
            "failures": list(self.failures),
        }


def _verdict(pos: int, entry: Mapping[str, Any], src: str) -> ExportVerdict | None:
    v = entry.get("verification")
    if v is None:
        return None
    typed = Verification.from_json(
        v, src, f"splits[{pos - 1}].verification"
    )  # the one validation of the block
    checks = tuple((name, c.passed) for name, c in typed.checks.items())
    return ExportVerdict(pos, str(entry.get("dir", "")), typed.passed, checks, typed.failures)


def export_verdicts(manifest: Mapping[str, Any], src: str = "manifest.json") -> list[ExportVerdict]:
    """The export gates of every split that records them (validated: typed, bounded, ``passed`` consistent
    with its checks); a split without a ``verification`` block (a hand-made bundle) has none."""
    splits = manifest.get("splits")
    if not isinstance(splits, list):
        raise _bad(src, "splits", "a list", splits)
    found = (_verdict(pos, e, src) for pos, e in enumerate(splits, start=1) if isinstance(e, Mapping))
    return [v for v in found if v is not None]


def export_machine(manifest: Mapping[str, Any], src: str = "manifest.json") -> Machine | None:
    """The machine the export's gates were measured on; None for a bundle that does not record it."""
    block = manifest.get("machine")
    return None if block is None else Machine.from_json(block, src)
