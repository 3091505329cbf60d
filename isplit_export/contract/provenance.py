"""The manifest's provenance blocks as typed values: the export's options (:class:`RecordedOptions`),
the model (:class:`ModelInfo`), the weights layout (:class:`WeightsInfo`), the measured
milliseconds of a split (:class:`Latency`; ``verify.json``'s rows: :class:`VerifyLatency`), and what
``report.md``'s header names (:class:`Provenance`: the tool, target, input, calibration and ranking).

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

    def items(self) -> list[tuple[str, Any]]:
        """Every recorded option and its value, in the order written (report.md lists them all)."""
        return list(self.raw.items())


@dataclass(frozen=True)
class ModelInfo:
    """The exported model (``manifest.model``): its name and where its weights came from."""

    name: str | None
    weights: str | None
    weights_sha256: str | None = None
    num_classes: int | None = None

    @classmethod
    def from_json(cls, m: Mapping[str, Any], src: str = MANIFEST_FILE) -> ModelInfo:
        """Validate the ``model`` block."""
        return cls(
            name=req_str(m, "name", src, "model.name", optional=True),
            weights=req_str(m, "weights", src, "model.weights", optional=True),
            weights_sha256=req_str(m, "weights_sha256", src, "model.weights_sha256", optional=True),
            num_classes=req_int(m, "num_classes", src, "model.num_classes", optional=True),
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
    head_int8_ms: float | None = None
    """(INT8 pairs, at export) the QDQ head's milliseconds."""
    tail_int8_ms: float | None = None
    ratio: float | None = None
    """(at export) (head + tail) / full, the cost of splitting."""

    @classmethod
    def from_json(cls, lat: Mapping[str, Any], src: str, f: str) -> Latency:
        """Validate a latency block: finite, positive, at most :data:`MAX_MS` each."""
        return cls(
            *(
                req_number(lat, k, src, f"{f}.{k}", hi=MAX_MS, positive=True, optional=True)
                for k in ("head_ms", "tail_ms", "full_ms", "head_int8_ms", "tail_int8_ms", "ratio")
            )
        )


@dataclass(frozen=True)
class VerifyLatency:
    """One ``verify.json`` row that carries ``latency_ms``: which split, on which backend and precision."""

    dir: str
    backend: str
    precision: str
    latency: Latency = field(metadata={"json": "latency_ms"})


def _shape(v: Any, src: str, f: str) -> tuple[int | str, ...]:
    if v is None:
        return ()
    if (
        not isinstance(v, list)
        or len(v) > 8
        or any(isinstance(d, bool) or not isinstance(d, (int, str)) or len(str(d)) > 64 for d in v)
    ):
        raise _bad(src, f, "a list of at most 8 dimensions", v)
    return tuple(v)


def _classes(v: Any, src: str, f: str) -> tuple[int, ...] | None:
    if v is None:
        return None
    if (
        not isinstance(v, list)
        or len(v) > 100_000
        or any(isinstance(c, bool) or not isinstance(c, int) for c in v)
    ):
        raise _bad(src, f, "a list of class indices or null", v)
    return tuple(v)


@dataclass(frozen=True)
class TargetInfo:
    """The deployment target as recorded (``manifest.target``: the profile the export used)."""

    name: str | None
    description: str | None
    kind: str | None
    """``jetson``, ``tensorrt``, ``onnx``...: which next steps and guide apply."""
    backend: str | None
    jetpack: str | None
    tensorrt_version: str | None
    cuda: str | None

    @classmethod
    def from_json(cls, t: Mapping[str, Any], src: str = MANIFEST_FILE, f: str = "target") -> TargetInfo:
        """Validate the ``target`` block's descriptive fields (every one optional)."""
        keys = ("name", "description", "kind", "backend", "jetpack", "tensorrt_version", "cuda")
        return cls(*(req_str(t, k, src, f"{f}.{k}", optional=True) for k in keys))


@dataclass(frozen=True)
class InputInfo:
    """The model input (``manifest.input``): tensor name, shape with its batch axis, dtype and layout."""

    name: str | None
    shape: tuple[int | str, ...]
    dtype: str | None
    layout: str | None

    @classmethod
    def from_json(cls, i: Mapping[str, Any], src: str = MANIFEST_FILE, f: str = "input") -> InputInfo:
        """Validate the ``input`` block."""
        return cls(
            name=req_str(i, "name", src, f"{f}.name", optional=True),
            shape=_shape(i.get("shape"), src, f"{f}.shape"),
            dtype=req_str(i, "dtype", src, f"{f}.dtype", optional=True),
            layout=req_str(i, "layout", src, f"{f}.layout", optional=True),
        )


@dataclass(frozen=True)
class RankingInfo:
    """How the export ranked its cuts (``manifest.ranking``): the file, the images, the Grad-CAM target."""

    file: str | None
    images: int | None
    classes: tuple[int, ...] | None
    """The class subset the importance was computed over; None for all classes."""
    score: str | None
    top: int | None

    @classmethod
    def from_json(cls, r: Mapping[str, Any], src: str = MANIFEST_FILE, f: str = "ranking") -> RankingInfo:
        """Validate a ranking block (the manifest's, or ``ranking.json``'s own fields)."""
        return cls(
            file=req_str(r, "file", src, f"{f}.file", optional=True),
            images=req_int(r, "images", src, f"{f}.images", optional=True),
            classes=_classes(r.get("classes"), src, f"{f}.classes"),
            score=req_str(r, "score", src, f"{f}.score", optional=True),
            top=req_int(r, "top", src, f"{f}.top", lo=1, optional=True),
        )


@dataclass(frozen=True)
class Provenance:
    """What the bundle records about how it was made, beyond the model: report.md's header."""

    tool_name: str | None = field(metadata={"json": "tool.name"})
    tool_version: str | None = field(metadata={"json": "tool.version"})
    target: TargetInfo | None
    """None when the manifest has no ``target`` block."""
    input: InputInfo | None
    opset: int | None
    ranking: RankingInfo | None
    calibration_source: str | None = field(metadata={"json": "calibration.source"})
    calibration_count: int | None = field(metadata={"json": "calibration.count"})
    has_tool: bool = field(metadata={"json": None})
    has_calibration: bool = field(metadata={"json": None})
    has_triton: bool = field(metadata={"json": None})
    """Whether the bundle carries a Triton model repository of the tails (``triton``)."""

    @classmethod
    def from_json(cls, m: Mapping[str, Any], src: str = MANIFEST_FILE) -> Provenance:
        """Validate the manifest's ``tool``, ``target``, ``input``, ``opset``, ``ranking`` and ``calibration``."""
        tool, calib = opt_dict(m, "tool", src), opt_dict(m, "calibration", src)
        target, inp, ranking = (
            opt_dict(m, "target", src),
            opt_dict(m, "input", src),
            opt_dict(m, "ranking", src),
        )
        return cls(
            tool_name=req_str(tool, "name", src, "tool.name", optional=True),
            tool_version=req_str(tool, "version", src, "tool.version", optional=True),
            target=TargetInfo.from_json(target, src) if target else None,
            input=InputInfo.from_json(inp, src) if inp else None,
            opset=req_int(m, "opset", src, optional=True),
            ranking=RankingInfo.from_json(ranking, src) if ranking else None,
            calibration_source=req_str(calib, "source", src, "calibration.source", optional=True),
            calibration_count=req_int(calib, "count", src, "calibration.count", optional=True),
            has_tool=bool(tool),
            has_calibration=bool(calib),
            has_triton=bool(m.get("triton")),
        )
