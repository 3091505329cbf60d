"""How ``rank --budgets`` chooses a (cut, budget) pair of its rate-accuracy grid: :class:`PairChoice` (the link, the
device and server profiles, and at most one target: ``--max-latency-ms`` or ``--min-accuracy``). Torch-free; the
choice itself is :mod:`isplit_export.bundle.grid_choice`."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from isplit_export.errors import BadInputError
from isplit_export.links import parse_link
from isplit_export.options import ExportOptions
from isplit_export.target_names import profile_name


def _export_default(name: str) -> Any:
    """The export's default of option ``name`` (written once, in :class:`ExportOptions`)."""
    return next(f.default for f in dataclasses.fields(ExportOptions) if f.name == name)


@dataclass(frozen=True)
class AccuracyFloor:
    """A parsed ``--min-accuracy``: an absolute score (``0.9``) or a share of the full model's (``99%``)."""

    text: str
    value: float
    relative: bool

    def of(self, full_model: float | None) -> float:
        """The score a pair must reach, given the full model's held-out score."""
        if not self.relative:
            return self.value
        if full_model is None:
            raise BadInputError(
                f"--min-accuracy {self.text}: the grid has no full-model score to take a share of; pass an "
                "absolute score (e.g. 0.9)"
            )
        return self.value * full_model


def parse_accuracy_floor(text: str) -> AccuracyFloor:
    """``0.9`` (a score in (0, 1]) or ``99%`` (a share in (0, 100] of the full model's score)."""
    t = str(text).strip()
    relative = t.endswith("%")
    try:
        v = float(t[:-1] if relative else t)
    except ValueError:
        v = math.nan
    share = v / 100 if relative else v
    if not (math.isfinite(share) and 0.0 < share <= 1.0):
        raise BadInputError(
            f"--min-accuracy {t!r}: pass a score in (0, 1] (e.g. 0.9) or a share of the full model's (e.g. 99%)"
        )
    return AccuracyFloor(t, share, relative)


@dataclass(frozen=True)
class PairChoice:
    """The (cut, budget) choice on the grid: every pair priced on ``link`` (head on ``target``, tail on
    ``server``, :mod:`isplit_export.targets.cost`); ``max_latency_ms`` picks the most accurate pair within it,
    ``min_accuracy`` the fastest pair reaching it; with neither, the Pareto front."""

    link: str
    target: str = _export_default("target")
    server: str = _export_default("server")
    max_latency_ms: float | None = None
    min_accuracy: str | None = None

    def __post_init__(self) -> None:
        parse_link(self.link)
        profile_name(self.target)
        profile_name(self.server)
        if self.max_latency_ms is not None and not (
            math.isfinite(self.max_latency_ms) and self.max_latency_ms > 0
        ):
            raise BadInputError(f"--max-latency-ms {self.max_latency_ms}: pass a positive number")
        if self.min_accuracy is not None:
            parse_accuracy_floor(self.min_accuracy)
        if self.max_latency_ms is not None and self.min_accuracy is not None:
            raise BadInputError(
                "--max-latency-ms and --min-accuracy choose a pair in opposite ways: pass one of them"
            )

    @property
    def floor(self) -> AccuracyFloor | None:
        return None if self.min_accuracy is None else parse_accuracy_floor(self.min_accuracy)


def export_pair(opts: ExportOptions) -> PairChoice | None:
    """The (cut, budget) choice an export asks for (``--budgets`` with ``--link`` and ``--max-latency-ms`` or
    ``--min-accuracy``), its flags checked together; None without ``--budgets``.

    The chosen pair is the bundle's one split (``--top`` only sets the ranking table's length); its bottleneck
    is ``opts.bottleneck``'s training settings at the chosen budget, so ``--bottleneck``, ``--objective`` and
    the other constraints, which choose cuts or sizes themselves, are refused with it.
    """
    if opts.budgets is None:
        if opts.min_accuracy is not None:
            raise BadInputError(
                "--min-accuracy chooses on the probe's rate-accuracy grid: add --budgets 16B..1KiB"
            )
        return None
    latency = opts.constraints.max_latency_ms
    if opts.link is None or (latency is None) == (opts.min_accuracy is None):
        raise BadInputError(
            "export --budgets exports the (cut, budget) a target chooses: pass --link L and one of "
            "--max-latency-ms T or --min-accuracy A (rank --budgets --link L prints the Pareto front)"
        )
    others = [
        flag
        for flag, given in (
            ("--objective", opts.objective != _export_default("objective")),
            ("--max-head-flops", opts.constraints.max_head_flops is not None),
            ("--max-boundary-kib", opts.constraints.max_boundary_kib is not None),
        )
        if given
    ]
    if others:
        raise BadInputError(
            f"export --budgets chooses the cut and the code size by the target: drop {', '.join(others)}"
        )
    return PairChoice(
        link=opts.link,
        target=opts.target,
        server=opts.server,
        max_latency_ms=latency,
        min_accuracy=opts.min_accuracy,
    )
