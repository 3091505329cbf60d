"""The manifest's provenance blocks as typed values: the export's options (:class:`RecordedOptions`),
the model (:class:`ModelInfo`), the weights layout (:class:`WeightsInfo`), and the measured
milliseconds of a split (:class:`Latency`; ``verify.json``'s rows: :class:`VerifyLatency`).

:class:`~isplit_export.contract.Manifest` hands them out (``manifest.options``, ``manifest.model``,
``manifest.weights``), validated by ``from_json`` (types, bounded strings, known constraint names), so
``plan``, the CI summary and the benchmarks read them without subscripting the manifest's JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from isplit_export.contract.jsonio import _bad, opt_dict, req_int, req_number, req_str
from isplit_export.contract.schema import MANIFEST_FILE, MAX_MS

CONSTRAINTS = ("max_head_flops", "max_boundary_kib", "max_latency_ms")
"""The constraint names an export records (``options.constraints``)."""


@dataclass(frozen=True)
class RecordedOptions:
    """The export's options as recorded (``manifest.options``): what ``plan`` re-uses by default."""

    model: str | None
    weights: str | None
    data: str | None
    seed: int | None
    verify_images: int | None
    top: int | None
    link: str | None
    objective: str | None
    server: str | None
    constraints: Mapping[str, float | None]
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, o: Mapping[str, Any], src: str = MANIFEST_FILE, f: str = "options") -> RecordedOptions:
        """Validate the ``options`` block (every field optional: hand-made bundles may omit it)."""
        cons = opt_dict(o, "constraints", src, f"{f}.constraints")
        for k in cons:
            if k not in CONSTRAINTS:
                raise _bad(src, f"{f}.constraints", f"an object of {', '.join(CONSTRAINTS)}", k)
            req_number(cons, k, src, f"{f}.constraints.{k}", optional=True)
        return cls(
            model=req_str(o, "model", src, f"{f}.model", optional=True),
            weights=req_str(o, "weights", src, f"{f}.weights", optional=True),
            data=req_str(o, "data", src, f"{f}.data", optional=True),
            seed=req_int(o, "seed", src, f"{f}.seed", optional=True),
            verify_images=req_int(o, "verify_images", src, f"{f}.verify_images", optional=True),
            top=req_int(o, "top", src, f"{f}.top", lo=1, optional=True),
            link=req_str(o, "link", src, f"{f}.link", optional=True),
            objective=req_str(o, "objective", src, f"{f}.objective", optional=True),
            server=req_str(o, "server", src, f"{f}.server", optional=True),
            constraints=MappingProxyType(dict(cons)),
            raw=MappingProxyType(dict(o)),
        )


@dataclass(frozen=True)
class ModelInfo:
    """The exported model (``manifest.model``): its name and where its weights came from."""

    name: str | None
    weights: str | None

    @classmethod
    def from_json(cls, m: Mapping[str, Any], src: str = MANIFEST_FILE) -> ModelInfo:
        """Validate the ``model`` block."""
        return cls(
            name=req_str(m, "name", src, "model.name", optional=True),
            weights=req_str(m, "weights", src, "model.weights", optional=True),
        )


@dataclass(frozen=True)
class WeightsInfo:
    """The weights layout (``manifest.weights``): ``shared`` packs under ``dir``, or ``inline``."""

    layout: str
    dir: str

    @classmethod
    def from_json(cls, w: Mapping[str, Any], src: str = MANIFEST_FILE) -> WeightsInfo:
        """Validate the ``weights`` block (``inline`` and ``weights`` when not recorded)."""
        return cls(
            layout=req_str(w, "layout", src, "weights.layout", optional=True) or "inline",
            dir=req_str(w, "dir", src, "weights.dir", optional=True) or "weights",
        )


@dataclass(frozen=True)
class Latency:
    """Measured milliseconds of one split (``run.latency_ms.<dir>``, a ``verify.json`` row's ``latency_ms``)."""

    head_ms: float | None
    tail_ms: float | None
    full_ms: float | None

    @classmethod
    def from_json(cls, lat: Mapping[str, Any], src: str, f: str) -> Latency:
        """Validate a latency block: finite, positive, at most :data:`MAX_MS` each."""
        return cls(
            *(
                req_number(lat, k, src, f"{f}.{k}", hi=MAX_MS, positive=True, optional=True)
                for k in ("head_ms", "tail_ms", "full_ms")
            )
        )


@dataclass(frozen=True)
class VerifyLatency:
    """One ``verify.json`` row that carries ``latency_ms``: which split, on which backend and precision."""

    dir: str
    backend: str
    precision: str
    latency: Latency = field(metadata={"json": "latency_ms"})
