"""``ranking.json`` as typed values: :class:`RankingFile`, its :class:`Candidate` cuts and their :class:`CutCost`.

The ranking stage writes the file (``ranking/candidates.py``); the cost stage adds a :class:`CostBlock`
(``bundle/cost_block.py``, ``isplit-export plan``). Every reader, at export and on a bundle, receives the
:class:`RankingFile` that :meth:`RankingFile.from_json` validated (types, ranges, bounded sizes), so no
module outside ``contract/`` subscripts the ranking's JSON. Like :class:`~isplit_export.contract.Split`,
each value keeps the block it was read from (``raw``) and :meth:`~RankingFile.to_json` writes it back
unchanged: the fields typed here are the ones the tools read; the rest (bootstrap, curves, probe
details) travels as written.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from isplit_export.contract.jsonio import _bad, _rebuild, opt_dict, req_dict, req_int, req_number, req_str
from isplit_export.contract.schema import MAX_DIM, MAX_ELEMENTS, MAX_FLOPS, RANKING_SCHEMA_PREFIX
from isplit_export.errors import BadInputError

MAX_CANDIDATES = 4096
"""Most cuts a ranking lists (a model's valid cut points)."""
MAX_NOTE = 4096
"""Longest note or assumption line of a cost block."""
MEASURED_SOURCES = ("device", "link", "server")
"""The figures a cost row may flag as measured."""


def _frozen(d: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(d))


def _indices(v: Any, src: str, f: str) -> tuple[int, ...]:
    if not isinstance(v, list) or len(v) > MAX_CANDIDATES:
        raise _bad(src, f, f"a list of at most {MAX_CANDIDATES} cut indices", v)
    for i, d in enumerate(v):
        if isinstance(d, bool) or not isinstance(d, int) or not 0 <= d <= 1 << 20:
            raise _bad(src, f"{f}[{i}]", "a cut index", d)
    return tuple(v)


def _ms(c: Mapping[str, Any], key: str, src: str, f: str) -> float | None:
    return req_number(c, key, src, f"{f}.{key}", hi=MAX_FLOPS, optional=True)


@dataclass(frozen=True)
class CutCost:
    """One cost row (``candidates[i].cost``, or a baseline): per image at batch 1, estimated unless ``measured``."""

    head_flops: int | None
    bytes: int
    device_ms: float | None
    transfer_ms: float | None
    link_ms: float | None
    server_ms: float | None
    total_ms: float | None
    device_energy_mj: float | None
    measured: Mapping[str, str]
    """The figures a measurement replaced (``device``, ``link``, ``server``) -> their source."""
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, c: Any, src: str, f: str) -> CutCost:
        """Validate a cost row: non-negative bounded figures, ``measured`` naming known figures."""
        if not isinstance(c, Mapping):
            raise _bad(src, f, "an object", c)
        meas = opt_dict(c, "measured", src, f"{f}.measured")
        for k in meas:
            if k not in MEASURED_SOURCES:
                raise _bad(src, f"{f}.measured", f"keys among {', '.join(MEASURED_SOURCES)}", k)
            req_str(meas, k, src, f"{f}.measured.{k}")
        return cls(
            head_flops=req_int(c, "head_flops", src, f"{f}.head_flops", hi=int(MAX_FLOPS), optional=True),
            bytes=int(req_int(c, "bytes", src, f"{f}.bytes", hi=MAX_ELEMENTS * 8) or 0),
            device_ms=_ms(c, "device_ms", src, f),
            transfer_ms=_ms(c, "transfer_ms", src, f),
            link_ms=_ms(c, "link_ms", src, f),
            server_ms=_ms(c, "server_ms", src, f),
            total_ms=_ms(c, "total_ms", src, f),
            device_energy_mj=_ms(c, "device_energy_mj", src, f),
            measured=_frozen(meas),
            raw=_frozen(c),
        )

    def to_json(self) -> dict[str, Any]:
        """The row as written."""
        return dict(self.raw)


@dataclass(frozen=True)
class ComputeFigures:
    """Where one side of the split runs (``cost.device``, ``cost.server``) and its effective rate."""

    target: str
    unit: str
    precision: str
    gflops: float

    @classmethod
    def from_json(cls, c: Mapping[str, Any], src: str, f: str) -> ComputeFigures:
        """Validate a ``device`` / ``server`` block."""
        return cls(
            target=str(req_str(c, "target", src, f"{f}.target")),
            unit=str(req_str(c, "unit", src, f"{f}.unit")),
            precision=str(req_str(c, "precision", src, f"{f}.precision")),
            gflops=float(req_number(c, "gflops", src, f"{f}.gflops", positive=True) or 0.0),
        )


@dataclass(frozen=True)
class LinkFigures:
    """The link a cost block assumed (``cost.link``): a preset, a ``Mbit/s,RTT`` pair, or the measured one."""

    name: str
    mbit_s: float
    rtt_ms: float
    source: str | None

    @classmethod
    def from_json(cls, c: Mapping[str, Any], src: str, f: str) -> LinkFigures:
        """Validate a ``link`` block."""
        return cls(
            name=str(req_str(c, "name", src, f"{f}.name")),
            mbit_s=float(req_number(c, "mbit_s", src, f"{f}.mbit_s", positive=True) or 0.0),
            rtt_ms=float(req_number(c, "rtt_ms", src, f"{f}.rtt_ms") or 0.0),
            source=req_str(c, "source", src, f"{f}.source", optional=True),
        )


@dataclass(frozen=True)
class CostBlock:
    """The top-level ``cost`` block: the figures assumed, the selection and the two baselines."""

    link: LinkFigures
    device: ComputeFigures
    server: ComputeFigures
    encoding: str
    objective: str | None
    selected: tuple[int, ...]
    pareto: tuple[int, ...]
    exported: tuple[int, ...] | None
    """The cut indices of the bundle's splits (``plan.json`` only)."""
    constraints: Mapping[str, Any]
    baselines: Mapping[str, CutCost]
    assumptions: tuple[str, ...]
    note: str | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, c: Any, src: str, f: str = "cost") -> CostBlock:
        """Validate a cost block (both baselines, bounded lists and notes)."""
        if not isinstance(c, Mapping):
            raise _bad(src, f, "an object", c)
        base = req_dict(c, "baselines", src, f"{f}.baselines")
        baselines = {
            k: CutCost.from_json(base.get(k), src, f"{f}.baselines.{k}")
            for k in ("device_only", "server_only")
        }
        notes = c.get("assumptions", [])
        if not isinstance(notes, list) or len(notes) > 64:
            raise _bad(src, f"{f}.assumptions", "a list of at most 64 lines", notes)
        for i, line in enumerate(notes):
            if not isinstance(line, str) or len(line) > MAX_NOTE:
                raise _bad(src, f"{f}.assumptions[{i}]", f"a string of at most {MAX_NOTE} characters", line)
        exported = c.get("exported")
        note = c.get("note")
        if note is not None and (not isinstance(note, str) or len(note) > MAX_NOTE):
            raise _bad(src, f"{f}.note", f"a string of at most {MAX_NOTE} characters or null", note)
        return cls(
            link=LinkFigures.from_json(req_dict(c, "link", src, f"{f}.link"), src, f"{f}.link"),
            device=ComputeFigures.from_json(req_dict(c, "device", src, f"{f}.device"), src, f"{f}.device"),
            server=ComputeFigures.from_json(req_dict(c, "server", src, f"{f}.server"), src, f"{f}.server"),
            encoding=str(req_str(c, "encoding", src, f"{f}.encoding")),
            objective=req_str(c, "objective", src, f"{f}.objective", optional=True),
            selected=_indices(c.get("selected", []), src, f"{f}.selected"),
            pareto=_indices(c.get("pareto", []), src, f"{f}.pareto"),
            exported=None if exported is None else _indices(exported, src, f"{f}.exported"),
            constraints=_frozen(opt_dict(c, "constraints", src, f"{f}.constraints")),
            baselines=MappingProxyType(baselines),
            assumptions=tuple(notes),
            note=note,
            raw=_frozen(c),
        )

    def to_json(self) -> dict[str, Any]:
        """The block as written."""
        return dict(self.raw)


@dataclass(frozen=True)
class Candidate:
    """One cut of ``ranking.json`` (``candidates[i]``): where it is, its CUI, its rank and (with a link) its cost."""

    index: int
    node: str
    module: str | None
    cui: float
    log10_cui: float | None
    rank: int | None
    """Its I-Split rank among the local maxima of the CUI; None for the other cuts."""
    head_flops_share: float
    head_flops: int | None
    shape: tuple[int, ...]
    cost: CutCost | None
    probe_value: float | None = field(metadata={"json": "probe.value"})
    """The training-free probe's score at this cut (``rank --bottleneck``); None when not probed."""
    layout: str | None
    """The boundary tensor's layout (``nchw``, ``nc``...)."""
    boundary_bytes: int | None
    """fp32 bytes of the boundary tensor of one image."""
    cui_ci: tuple[float | None, float | None] | None
    """(bootstrap) the CUI's 95 % interval."""
    rank_stability: float | None
    """(bootstrap) how often the candidate keeps its rank over the replicates."""
    ties: tuple[int, ...]
    """(bootstrap) the cut indices of the candidates it cannot be told apart from."""
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, c: Any, src: str, f: str, total_flops: int | None = None) -> Candidate:
        """Validate one candidate: bounded shape, shares in [0, 1], head FLOPs within the total."""
        if not isinstance(c, Mapping):
            raise _bad(src, f, "an object", c)
        shape = c.get("shape")
        if (
            not isinstance(shape, list)
            or not shape
            or len(shape) > 8
            or any(isinstance(d, bool) or not isinstance(d, int) or not 0 < d <= MAX_DIM for d in shape)
            or math.prod(shape) > MAX_ELEMENTS
        ):
            raise _bad(src, f"{f}.shape", "a list of 1-8 positive dimensions", shape)
        cost = c.get("cost")
        probe = opt_dict(c, "probe", src, f"{f}.probe")
        hi = float(total_flops) if total_flops is not None else MAX_FLOPS
        return cls(
            index=int(req_int(c, "index", src, f"{f}.index", hi=1 << 20) or 0),
            node=str(req_str(c, "node", src, f"{f}.node")),
            module=req_str(c, "module", src, f"{f}.module", optional=True),
            cui=float(req_number(c, "cui", src, f"{f}.cui", hi=1e30) or 0.0),
            log10_cui=req_number(c, "log10_cui", src, f"{f}.log10_cui", lo=-1e6, hi=1e6, optional=True),
            rank=req_int(c, "rank", src, f"{f}.rank", lo=1, optional=True),
            head_flops_share=float(
                req_number(c, "head_flops_share", src, f"{f}.head_flops_share", hi=1.0) or 0.0
            ),
            head_flops=_int_flops(req_number(c, "head_flops", src, f"{f}.head_flops", hi=hi, optional=True)),
            shape=tuple(shape),
            cost=None if cost is None else CutCost.from_json(cost, src, f"{f}.cost"),
            probe_value=req_number(
                probe, "value", src, f"{f}.probe.value", lo=-MAX_FLOPS, hi=MAX_FLOPS, optional=True
            ),
            layout=req_str(c, "layout", src, f"{f}.layout", optional=True),
            boundary_bytes=req_int(
                c, "boundary_bytes", src, f"{f}.boundary_bytes", hi=MAX_ELEMENTS * 8, optional=True
            ),
            cui_ci=_interval(c.get("cui_ci"), src, f"{f}.cui_ci"),
            rank_stability=req_number(c, "rank_stability", src, f"{f}.rank_stability", hi=1.0, optional=True),
            ties=_indices(c.get("ties", []), src, f"{f}.ties"),
            raw=_frozen(c),
        )

    def to_json(self) -> dict[str, Any]:
        """The candidate as written."""
        return dict(self.raw)

    def plan_row(self) -> dict[str, Any]:
        """Its row in ``plan.json``'s ``cuts``: where it is, its CUI and rank, and its cost."""
        keys = ("index", "node", "module", "cui", "rank", "head_flops_share")
        return {k: self.raw.get(k) for k in keys} | {
            "cost": None if self.cost is None else self.cost.to_json()
        }


def _interval(v: Any, src: str, f: str) -> tuple[float | None, float | None] | None:
    if v is None:
        return None
    if (
        not isinstance(v, list)
        or len(v) != 2
        or any(isinstance(x, bool) or not isinstance(x, (int, float, type(None))) for x in v)
    ):
        raise _bad(src, f, "two numbers (or nulls)", v)
    return (None if v[0] is None else float(v[0]), None if v[1] is None else float(v[1]))


@dataclass(frozen=True)
class Bootstrap:
    """How the ranking's intervals were computed (``ranking.json``'s ``bootstrap`` block)."""

    replicates: int | None
    flip_threshold: float | None
    """A pair of candidates is a tie when its order flips in more than this fraction of replicates."""

    @classmethod
    def from_json(cls, b: Mapping[str, Any], src: str, f: str = "bootstrap") -> Bootstrap:
        """Validate the block's figures the report quotes."""
        return cls(
            replicates=req_int(b, "replicates", src, f"{f}.replicates", optional=True),
            flip_threshold=req_number(b, "flip_threshold", src, f"{f}.flip_threshold", hi=1.0, optional=True),
        )


def _int_flops(v: float | None) -> int | None:
    return None if v is None else int(v)


@dataclass(frozen=True)
class RankingFile:
    """A validated ``ranking.json`` (``isplit.ranking/N``): its cuts and, with a link, its cost block."""

    schema: str | None
    model: str | None
    weights: str | None
    top: int | None
    total_flops: int | None
    """FLOPs of the whole model at batch 1 (``isplit.ranking/2``; None in ``/1``)."""
    input_bytes: int | None
    """Bytes of the fp32 input tensor of one image."""
    candidates: tuple[Candidate, ...]
    cost: CostBlock | None
    images: int | None
    classes: tuple[int, ...] | None
    """The class subset the importance was computed over; None for all classes."""
    score: str | None
    """The Grad-CAM target (``top``, ``label``)."""
    bootstrap: Bootstrap | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, r: Any, src: str = "ranking.json") -> RankingFile:
        """Validate a ranking: schema, bounded candidates with unique indices, the cost block when present."""
        if not isinstance(r, Mapping):
            raise _bad(src, "ranking", "an object", r)
        schema = r.get("schema")
        if schema is not None and (
            not isinstance(schema, str) or not schema.startswith(RANKING_SCHEMA_PREFIX)
        ):
            raise _bad(src, "schema", f"{RANKING_SCHEMA_PREFIX}N", schema)
        total = req_int(r, "total_flops", src, lo=1, hi=int(MAX_FLOPS), optional=True)
        cands = r.get("candidates")
        if not isinstance(cands, list) or not cands or len(cands) > MAX_CANDIDATES:
            raise _bad(src, "candidates", f"a non-empty list of at most {MAX_CANDIDATES}", cands)
        typed = tuple(Candidate.from_json(c, src, f"candidates[{i}]", total) for i, c in enumerate(cands))
        seen: set[int] = set()
        for i, c in enumerate(typed):
            if c.index in seen:
                raise BadInputError(
                    f"{src}: field 'candidates[{i}].index' repeats cut {c.index}: {_rebuild(src)}"
                )
            seen.add(c.index)
        cost = r.get("cost")
        boot = opt_dict(r, "bootstrap", src)
        classes = r.get("classes")
        return cls(
            schema=schema,
            model=req_str(r, "model", src, optional=True),
            weights=req_str(r, "weights", src, optional=True),
            top=req_int(r, "top", src, lo=1, optional=True),
            total_flops=total,
            input_bytes=req_int(r, "input_bytes", src, lo=4, hi=MAX_ELEMENTS * 4, optional=True),
            candidates=typed,
            cost=None if cost is None else CostBlock.from_json(cost, src),
            images=req_int(r, "images", src, optional=True),
            classes=None if classes is None else _indices(classes, src, "classes"),
            score=req_str(r, "score", src, optional=True),
            bootstrap=Bootstrap.from_json(boot, src) if boot else None,
            raw=_frozen(r),
        )

    def to_json(self) -> dict[str, Any]:
        """The ranking as written."""
        return dict(self.raw)

    def with_cost(self, per_cut: Sequence[Mapping[str, Any]], cost: Mapping[str, Any]) -> RankingFile:
        """This ranking with one cost row per candidate (in order) and the top-level ``cost`` block."""
        candidates = [{**c.raw, "cost": dict(pc)} for c, pc in zip(self.candidates, per_cut, strict=True)]
        return RankingFile.from_json({**self.raw, "candidates": candidates, "cost": dict(cost)}, "ranking")

    def require_flops(self, src: str = "ranking.json") -> tuple[int, int]:
        """``(total_flops, input_bytes)``, which the cost model needs (``isplit.ranking/2``); one line when absent."""
        if self.total_flops is None or self.input_bytes is None:
            raise BadInputError(
                f"{src} has no total_flops or input_bytes (schema isplit.ranking/1): "
                "re-export the bundle with this isplit-export version"
            )
        return self.total_flops, self.input_bytes
