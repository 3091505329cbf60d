"""The manifest's ``grid_choice`` block as typed values (:class:`GridExport`, :class:`PairFigures`): the (cut,
budget) an export chose on the probe's rate-accuracy grid, what was predicted for it and what was measured after
training, side by side. Written by :mod:`isplit_export.bundle.grid_export`; validated on read (one line naming
the field); the schema is in docs/bundle.md."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from isplit_export.contract.jsonio import req_int, req_number, req_str
from isplit_export.contract.schema import MANIFEST_FILE
from isplit_export.errors import BadInputError

FIELD = "grid_choice"
MODES = ("max_latency_ms", "min_accuracy")
"""How the pair was chosen: the most accurate within ``limit`` ms, or the fastest reaching score ``limit``."""
MAX_MS = 1e9
MAX_BYTES = 1 << 40
_MS = ("device_ms", "link_ms", "server_ms", "total_ms")


def _bad(field: str, want: str) -> BadInputError:
    name = f"{FIELD}.{field}" if field else FIELD
    return BadInputError(f"{MANIFEST_FILE}: field '{name}' must be {want}: rebuild the bundle")


@dataclass(frozen=True)
class PairFigures:
    """A pair's figures: its code bytes, accuracy with 95 % CI and the cost model's milliseconds (head, link,
    server, total) for that code size."""

    code_bytes: int
    accuracy: float
    ci95: tuple[float, float]
    images: int | None
    device_ms: float
    link_ms: float
    server_ms: float
    total_ms: float

    @classmethod
    def from_json(cls, v: Any, where: str) -> PairFigures:
        """Validate one side (``predicted`` or ``measured``): bounded numbers, the CI around the score, the total
        the sum of its parts."""
        if not isinstance(v, Mapping):
            raise _bad(where, "an object")
        src = MANIFEST_FILE
        f = f"{FIELD}.{where}"
        ci = v.get("ci95")
        if (
            not isinstance(ci, list)
            or len(ci) != 2
            or any(isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c) for c in ci)
        ):
            raise _bad(f"{where}.ci95", "two finite numbers")
        acc = req_number(v, "accuracy", src, f"{f}.accuracy", hi=1.0) or 0.0
        if not 0.0 <= ci[0] <= acc <= ci[1] <= 1.0:
            raise _bad(f"{where}.ci95", f"an interval in [0, 1] around the accuracy {acc:g}")
        ms = {k: req_number(v, k, src, f"{f}.{k}", hi=MAX_MS) or 0.0 for k in _MS}
        parts = ms["device_ms"] + ms["link_ms"] + ms["server_ms"]
        if not math.isclose(ms["total_ms"], parts, rel_tol=1e-3, abs_tol=1e-3):
            raise _bad(f"{where}.total_ms", f"device_ms + link_ms + server_ms ({parts:g})")
        return cls(
            code_bytes=req_int(v, "code_bytes", src, f"{f}.code_bytes", lo=1, hi=MAX_BYTES) or 1,
            accuracy=acc,
            ci95=(float(ci[0]), float(ci[1])),
            images=req_int(v, "images", src, f"{f}.images", lo=1, optional=True),
            device_ms=ms["device_ms"],
            link_ms=ms["link_ms"],
            server_ms=ms["server_ms"],
            total_ms=ms["total_ms"],
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "code_bytes": self.code_bytes,
            "accuracy": self.accuracy,
            "ci95": list(self.ci95),
            "images": self.images,
            "device_ms": self.device_ms,
            "link_ms": self.link_ms,
            "server_ms": self.server_ms,
            "total_ms": self.total_ms,
        }


@dataclass(frozen=True)
class GridExport:
    """The (cut, budget) an export chose on the grid: the target, the predicted and the measured figures, and
    whether the target was met as measured."""

    mode: str
    """``max_latency_ms`` (``limit`` is T in ms) or ``min_accuracy`` (``limit`` is the score to reach)."""
    target: str
    """The flag as given, e.g. ``--max-latency-ms 80`` or ``--min-accuracy 99%``."""
    limit: float
    link: str
    metric: str
    split: str
    """The exported split's folder (split 1, the only one)."""
    cut: int
    node: str
    budget: int
    predicted: PairFigures
    """The probe's held-out score at the grid point (untrained PCA code) and the cost model at its code bytes."""
    measured: PairFigures
    """The trained pair's held-out score, and the cost model at the exported code's bytes (milliseconds stay
    estimates)."""
    met: bool
    """Whether the target holds for the measured figures (``measured.total_ms <= limit`` or
    ``measured.accuracy >= limit``)."""

    @classmethod
    def from_json(cls, v: Any) -> GridExport:
        """Validate the block; a malformed one is one line naming the field (:class:`BadInputError`)."""
        if not isinstance(v, Mapping):
            raise _bad("", "an object")
        src = MANIFEST_FILE
        mode = req_str(v, "mode", src, f"{FIELD}.mode")
        if mode not in MODES:
            raise _bad("mode", " or ".join(MODES))
        hi = MAX_MS if mode == "max_latency_ms" else 1.0
        limit = req_number(v, "limit", src, f"{FIELD}.limit", hi=hi, positive=True) or 0.0
        met = v.get("met")
        if not isinstance(met, bool):
            raise _bad("met", "true or false")
        measured = PairFigures.from_json(v.get("measured"), "measured")
        holds = measured.total_ms <= limit if mode == "max_latency_ms" else measured.accuracy >= limit
        if met != holds:
            raise _bad("met", f"{str(holds).lower()} for the measured figures")
        return cls(
            mode=str(mode),
            target=str(req_str(v, "target", src, f"{FIELD}.target")),
            limit=limit,
            link=str(req_str(v, "link", src, f"{FIELD}.link")),
            metric=str(req_str(v, "metric", src, f"{FIELD}.metric")),
            split=str(req_str(v, "split", src, f"{FIELD}.split")),
            cut=req_int(v, "cut", src, f"{FIELD}.cut", hi=1 << 20) or 0,
            node=str(req_str(v, "node", src, f"{FIELD}.node")),
            budget=req_int(v, "budget", src, f"{FIELD}.budget", lo=1, hi=MAX_BYTES) or 1,
            predicted=PairFigures.from_json(v.get("predicted"), "predicted"),
            measured=measured,
            met=met,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "target": self.target,
            "limit": self.limit,
            "link": self.link,
            "metric": self.metric,
            "split": self.split,
            "cut": self.cut,
            "node": self.node,
            "budget": self.budget,
            "predicted": self.predicted.to_json(),
            "measured": self.measured.to_json(),
            "met": self.met,
        }


def grid_export_of(manifest: Mapping[str, Any]) -> GridExport | None:
    """The manifest's ``grid_choice`` block, typed; None when the export chose no pair."""
    block = manifest.get(FIELD)
    return None if block is None else GridExport.from_json(block)
