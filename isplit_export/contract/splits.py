"""The manifest's split entries as typed values: :class:`Split`, its :class:`Boundary`, its pair :class:`Check`\\ s.

The writer (``jobs/export.py``) builds a :class:`Split` per exported cut and serialises it with
:meth:`Split.to_json`; every reader receives the :class:`Split` that :meth:`Split.from_json` validated
(hostile input: types, ranges, bounded sizes, contained paths), so no module outside ``contract/``
subscripts the manifest's JSON. Each value keeps the JSON block it was read from (``raw``) and writes
it back unchanged: the fields typed here are the ones the tools read, the rest travels as written
(the byte-reproducible bundle of SPEC section 5 does not depend on this module's field order).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from isplit_export.contract.jsonio import _bad, _rebuild, opt_dict, req_dict, req_int, req_number, req_str
from isplit_export.contract.paths import check_rel
from isplit_export.contract.schema import MAX_ELEMENTS, MAX_FLOPS
from isplit_export.errors import BadInputError

MAX_CHECKS = 16
"""Most pair checks a split records (``fp32``, ``int8-qdq``, ...)."""
MAX_FAILURES = 64
"""Most gate-failure lines a split or check records."""
MAX_REASON = 500
"""Longest gate-failure line."""
MAX_FILES = 64
"""Most files a split entry lists."""


def _frozen(d: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(d))


def _lines(v: Any, src: str, f: str) -> tuple[str, ...]:
    if not isinstance(v, list) or len(v) > MAX_FAILURES:
        raise _bad(src, f, f"a list of at most {MAX_FAILURES} lines", v)
    for i, line in enumerate(v):
        if not isinstance(line, str) or len(line) > MAX_REASON:
            raise _bad(src, f"{f}[{i}]", f"a string of at most {MAX_REASON} characters", line)
    return tuple(v)


def ci95(ci: Any, src: str, f: str) -> tuple[float, float] | None:
    """A 95 % interval ``[lo, hi]`` of two numbers, or None when not recorded."""
    if ci is None:
        return None
    if (
        not isinstance(ci, list)
        or len(ci) != 2
        or any(isinstance(c, bool) or not isinstance(c, (int, float)) for c in ci)
    ):
        raise _bad(src, f, "two numbers", ci)
    return (float(ci[0]), float(ci[1]))


@dataclass(frozen=True)
class Boundary:
    """A split's ``boundary`` block: how the tensor between head and tail travels."""

    encoding: str | None
    dtype: str | None
    shape: tuple[int | str, ...]
    bytes_per_image: int | None
    fp32_bytes_per_image: int | None
    scale: float | None
    zero_point: int | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, b: Mapping[str, Any], src: str = "manifest.json", f: str = "boundary") -> Boundary:
        """Validate a ``boundary`` block (every field optional: hand-made bundles may omit them)."""
        shape = b.get("shape", [])
        if (
            not isinstance(shape, list)
            or len(shape) > 8
            or any(
                isinstance(d, bool) or not isinstance(d, (int, str)) or (isinstance(d, str) and len(d) > 64)
                for d in shape
            )
        ):
            raise _bad(src, f"{f}.shape", "a list of at most 8 dimensions", shape)
        return cls(
            encoding=req_str(b, "encoding", src, f"{f}.encoding", optional=True),
            dtype=req_str(b, "dtype", src, f"{f}.dtype", optional=True),
            shape=tuple(shape),
            bytes_per_image=req_int(
                b, "bytes_per_image", src, f"{f}.bytes_per_image", hi=MAX_ELEMENTS * 8, optional=True
            ),
            fp32_bytes_per_image=req_int(
                b,
                "fp32_bytes_per_image",
                src,
                f"{f}.fp32_bytes_per_image",
                hi=MAX_ELEMENTS * 8,
                optional=True,
            ),
            scale=req_number(b, "scale", src, f"{f}.scale", hi=1e30, positive=True, optional=True),
            zero_point=req_int(b, "zero_point", src, f"{f}.zero_point", hi=255, optional=True),
            raw=_frozen(b),
        )

    def to_json(self) -> dict[str, Any]:
        """The block as written."""
        return dict(self.raw)


@dataclass(frozen=True)
class Task:
    """A check's task metric (accuracy or top-1 agreement with the full model) on the verified images."""

    metric: str | None
    value: float | None
    ci95: tuple[float, float] | None
    images: int | None
    full_model: float | None
    """The full model's value of the same metric on the same images."""
    drop: float | None
    """``full_model - value``."""
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, t: Mapping[str, Any], src: str, f: str) -> Task:
        """Validate a ``task`` block."""
        return cls(
            metric=req_str(t, "metric", src, f"{f}.metric", optional=True),
            value=req_number(t, "value", src, f"{f}.value", hi=1.0, optional=True),
            ci95=ci95(t.get("ci95"), src, f"{f}.ci95"),
            images=req_int(t, "images", src, f"{f}.images", optional=True),
            full_model=req_number(t, "full_model", src, f"{f}.full_model", hi=1.0, optional=True),
            drop=req_number(t, "drop", src, f"{f}.drop", lo=-1.0, hi=1.0, optional=True),
            raw=_frozen(t),
        )

    def to_json(self) -> dict[str, Any]:
        """The block as written."""
        return dict(self.raw)


def _limit(gate: Mapping[str, Any], key: str, src: str, f: str) -> float | None:
    return req_number(gate, key, src, f"{f}.gate.{key}", lo=-1.0, hi=1e30, optional=True)


@dataclass(frozen=True)
class Check:
    """One pair's check at export (``splits[i].verification.checks.<name>``): its metrics, gate and task."""

    name: str = field(metadata={"json": None})
    """The check's key in ``verification.checks`` (``fp32``, ``int8-qdq``...)."""
    passed: bool = field(metadata={"json": "gate.passed"})
    gate: str = field(metadata={"json": "gate.name"})
    failures: tuple[str, ...] = field(metadata={"json": "gate.failures"})
    metrics: Mapping[str, float | None]
    task: Task
    min_top1_agreement: float | None = field(metadata={"json": "gate.min_top1_agreement"})
    """The gate's limits (None: not gated on that metric)."""
    max_abs_rel: float | None = field(metadata={"json": "gate.max_abs_rel"})
    min_cosine: float | None = field(metadata={"json": "gate.min_cosine"})
    reference: str | None
    """What the gate compared against when not the full model (``fp32 pair with its bottleneck``...)."""
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, name: str, c: Any, src: str = "manifest.json", f: str = "check") -> Check:
        """Validate a check block: ``gate.passed`` a boolean, failures bounded, metrics numbers or null."""
        if not isinstance(c, Mapping) or len(name) > 64:
            raise _bad(src, f, "an object", c)
        gate = c.get("gate")
        ok = gate.get("passed") if isinstance(gate, Mapping) else None
        if not isinstance(gate, Mapping) or not isinstance(ok, bool):
            raise _bad(src, f"{f}.gate.passed", "true or false", ok)
        metrics = opt_dict(c, "metrics", src, f"{f}.metrics")
        for k in metrics:
            req_number(
                metrics,
                k,
                src,
                f"{f}.metrics.{k}",
                lo=-sys.float_info.max,
                hi=sys.float_info.max,
                optional=True,
            )
        return cls(
            name=name,
            passed=ok,
            gate=str(req_str(gate, "name", src, f"{f}.gate.name", optional=True) or name),
            failures=_lines(gate.get("failures", []), src, f"{f}.gate.failures"),
            metrics=_frozen(metrics),
            task=Task.from_json(opt_dict(c, "task", src, f"{f}.task"), src, f"{f}.task"),
            min_top1_agreement=_limit(gate, "min_top1_agreement", src, f),
            max_abs_rel=_limit(gate, "max_abs_rel", src, f),
            min_cosine=_limit(gate, "min_cosine", src, f),
            reference=req_str(c, "reference", src, f"{f}.reference", optional=True),
            raw=_frozen(c),
        )

    def to_json(self) -> dict[str, Any]:
        """The block as written."""
        return dict(self.raw)

    def metric(self, name: str) -> float | None:
        """The metric ``name`` (``cosine``, ``top1_agreement``, ...); None when not recorded."""
        return self.metrics.get(name)


@dataclass(frozen=True)
class Verification:
    """A split's gates at export: one :class:`Check` per pair; ``passed`` is their outcome."""

    passed: bool
    failures: tuple[str, ...]
    checks: Mapping[str, Check]
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, v: Any, src: str = "manifest.json", f: str = "verification") -> Verification:
        """Validate a ``verification`` block: ``passed`` consistent with its checks and failures."""
        if not isinstance(v, Mapping):
            raise _bad(src, f, "an object", v)
        passed = v.get("passed")
        if not isinstance(passed, bool):
            raise _bad(src, f"{f}.passed", "true or false", passed)
        failures = _lines(v.get("failures"), src, f"{f}.failures")
        checks = v.get("checks")
        if not isinstance(checks, Mapping) or len(checks) > MAX_CHECKS:
            raise _bad(src, f"{f}.checks", f"an object of at most {MAX_CHECKS} checks", checks)
        typed = {
            str(k): Check.from_json(str(k), c, src, f"{f}.checks.{str(k)[:64]}") for k, c in checks.items()
        }
        if passed != (all(c.passed for c in typed.values()) and not failures):
            raise _bad(src, f"{f}.passed", "the outcome of its checks", passed)
        return cls(passed, failures, MappingProxyType(typed), _frozen(v))

    def to_json(self) -> dict[str, Any]:
        """The block as written."""
        return dict(self.raw)


@dataclass(frozen=True)
class Split:
    """One exported split (``manifest.splits[i]``): where its files are, its boundary and its export gates."""

    dir: str
    rank: int | None
    index: int | None
    node: str | None
    module: str | None
    cui: float | None
    boundary: Boundary
    files: Mapping[str, str]
    verification: Verification | None
    holdout: float | None = field(metadata={"json": "bottleneck.holdout"})
    """(``--bottleneck``) the fraction of the images held out from the bottleneck's training."""
    cui_rank: int | None
    """Its rank among the CUI's local maxima (``rank`` when not recorded: splits are exported in CUI order)."""
    log10_cui: float | None
    head_flops_share: float | None
    probe_value: float | None = field(metadata={"json": "bottleneck.probe.value"})
    """(``--bottleneck``) the training-free probe's task value at this cut, on the held-out images."""
    probe_ci95: tuple[float, float] | None = field(metadata={"json": "bottleneck.probe.ci95"})
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, s: Any, i: int, src: str = "manifest.json") -> Split:
        """Validate ``splits[i]``: a contained ``dir`` and ``files``, ``rank`` equal to its position."""
        f = f"splits[{i}]"
        if not isinstance(s, Mapping):
            raise _bad(src, f, "an object", s)
        rel = str(req_str(s, "dir", src, f"{f}.dir"))
        check_rel(rel, f"{src} {f}.dir")
        files = req_dict(s, "files", src, f"{f}.files")
        if len(files) > MAX_FILES:
            raise _bad(src, f"{f}.files", f"an object of at most {MAX_FILES} files", files)
        for k, v in files.items():
            req_str(files, k, src, f"{f}.files.{k}")
            check_rel(v, f"{src} {f}.files.{k}")
        rank = req_int(s, "rank", src, f"{f}.rank", lo=1, optional=True)
        if rank is not None and rank != i + 1:
            raise BadInputError(
                f"{src}: field '{f}.rank' must be {i + 1} (splits are stored in rank order): {_rebuild(src)}"
            )
        v = s.get("verification")
        bn = opt_dict(s, "bottleneck", src, f"{f}.bottleneck")
        probe = opt_dict(bn, "probe", src, f"{f}.bottleneck.probe")
        return cls(
            dir=rel,
            rank=rank,
            index=req_int(s, "index", src, f"{f}.index", optional=True),
            node=req_str(s, "node", src, f"{f}.node", optional=True),
            module=req_str(s, "module", src, f"{f}.module", optional=True),
            cui=req_number(s, "cui", src, f"{f}.cui", lo=-MAX_FLOPS, optional=True),
            boundary=Boundary.from_json(opt_dict(s, "boundary", src, f"{f}.boundary"), src, f"{f}.boundary"),
            files=_frozen(files),
            verification=None if v is None else Verification.from_json(v, src, f"{f}.verification"),
            holdout=req_number(bn, "holdout", src, f"{f}.bottleneck.holdout", hi=1.0, optional=True),
            cui_rank=req_int(s, "cui_rank", src, f"{f}.cui_rank", lo=1, optional=True) or rank,
            log10_cui=req_number(s, "log10_cui", src, f"{f}.log10_cui", lo=-1e6, hi=1e6, optional=True),
            head_flops_share=req_number(
                s, "head_flops_share", src, f"{f}.head_flops_share", hi=1.0, optional=True
            ),
            probe_value=req_number(
                probe, "value", src, f"{f}.bottleneck.probe.value", lo=-1.0, hi=1.0, optional=True
            ),
            probe_ci95=ci95(probe.get("ci95"), src, f"{f}.bottleneck.probe.ci95"),
            raw=_frozen(s),
        )

    def to_json(self) -> dict[str, Any]:
        """The entry as written (``files`` as this value holds them)."""
        return {**self.raw, "files": dict(self.files)}

    def with_files(self, files: Mapping[str, str]) -> Split:
        """This split with its files moved (``--weights-layout shared`` renames them)."""
        return Split.from_json({**self.raw, "files": dict(files)}, (self.rank or 1) - 1)

    def task(self, check: str) -> Task:
        """The task metric of the pair check ``check`` (a KeyError names a check the split does not have)."""
        if self.verification is None:
            raise KeyError(check)
        return self.verification.checks[check].task
