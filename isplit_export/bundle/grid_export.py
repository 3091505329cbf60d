"""The export of a (cut, budget) chosen on the probe's rate-accuracy grid, torch-free.

``isplit-export MODEL --budgets 16B..1KiB --link lte --max-latency-ms T`` (or ``--min-accuracy A``) ranks with
the grid, chooses the pair (:func:`isplit_export.bundle.grid_choice.choose_pair`: an unreachable target is one
line, exit 2, before any training and before anything is written) and exports it as the bundle's one split: a
bottleneck trained at the chosen cut with the chosen budget as its size, its encoder and decoder starting from the
probe's patch PCA (:mod:`isplit_export.bottleneck.core`). ``--top`` then only sets the ranking table's length.

The manifest's ``grid_choice`` block (:class:`isplit_export.contract.GridExport`) holds the grid point, its
predicted score (the probe's, with CI) and latency (head, link, server ms from the cost model), and the trained
pair's measured held-out score with the latency the cost model gives at the exported code's size, side by side;
``met`` says whether the target holds for the measured figures. :func:`report_section` writes it into report.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from isplit_export.bundle.grid_choice import GridChoice, PricedPoint, choose_pair
from isplit_export.contract import Split
from isplit_export.contract.grid_export import GridExport, PairFigures
from isplit_export.contract.rate_accuracy import grid_of
from isplit_export.errors import BadInputError
from isplit_export.options import ExportOptions
from isplit_export.options_bottleneck import BottleneckOptions
from isplit_export.options_grid import PairChoice, parse_accuracy_floor
from isplit_export.targets.cost import cut_cost


@dataclass(frozen=True)
class ExportedPair:
    """The pair an export chose: the choice on the grid, the grid's totals, and the options that export it (one
    split, the bottleneck at the chosen budget)."""

    choice: GridChoice
    chosen: PricedPoint
    options: ExportOptions
    total_flops: int
    full_model: float | None

    @property
    def cut(self) -> int:
        """The chosen cut's index in the ranking."""
        return self.chosen.point.cut

    @property
    def limit(self) -> float:
        """The target as a number: T in ms, or the absolute score to reach."""
        opts = self.options
        if self.choice.mode == "max_latency_ms" and opts.constraints.max_latency_ms is not None:
            return opts.constraints.max_latency_ms
        if opts.min_accuracy is None:
            raise AssertionError("a grid export has a latency or an accuracy target")
        return parse_accuracy_floor(opts.min_accuracy).of(self.full_model)


def choose_export(ranking: Mapping[str, Any], opts: ExportOptions, pair: PairChoice) -> ExportedPair:
    """Choose the pair on ``ranking``'s grid (written form) and return the options that export it.

    The bottleneck keeps ``opts.bottleneck``'s training settings (default ones without) at the chosen budget.
    """
    grid = grid_of(ranking)
    if grid is None:
        raise BadInputError("the ranking has no rate-accuracy grid: pass --budgets (e.g. 16B..1KiB)")
    choice = choose_pair(grid, pair)
    if choice.chosen is None:
        raise AssertionError("export_pair always names a target")
    bn = dataclasses.replace(opts.bottleneck or BottleneckOptions(), size=f"{choice.chosen.point.budget}B")
    chosen_opts = opts.replace(bottleneck=bn, top=1)
    return ExportedPair(choice, choice.chosen, chosen_opts, grid.total_flops, grid.full_model)


def _figures(
    code_bytes: int, value: float, ci95: tuple[float, float], images: int | None, cost: Mapping[str, Any]
) -> PairFigures:
    return PairFigures(
        code_bytes=code_bytes,
        accuracy=value,
        ci95=ci95,
        images=images,
        device_ms=float(cost["device_ms"]),
        link_ms=float(cost["link_ms"]),
        server_ms=float(cost["server_ms"]),
        total_ms=float(cost["total_ms"]),
    )


def grid_block(pick: ExportedPair, split: Split, encoding: str) -> dict[str, Any]:
    """The manifest's ``grid_choice`` block: predicted next to measured, and whether the target was met."""
    ch, p = pick.choice, pick.chosen.point
    task = split.task(encoding)
    nbytes = split.boundary.bytes_per_image or p.code_bytes
    tail_flops = max(pick.total_flops - p.head_flops, 0)
    at_size = cut_cost(p.head_flops, tail_flops, nbytes, ch.device, ch.server, ch.link)
    value = task.value or 0.0
    measured = _figures(nbytes, value, task.ci95 or (value, value), task.images, at_size)
    limit = pick.limit
    met = measured.total_ms <= limit if ch.mode == "max_latency_ms" else measured.accuracy >= limit
    block = GridExport(
        mode=ch.mode,
        target=str(ch.target),
        limit=limit,
        link=ch.link.name,
        metric=ch.metric,
        split=split.dir,
        cut=p.cut,
        node=p.node,
        budget=p.budget,
        predicted=_figures(p.code_bytes, p.value, p.ci95, p.images, pick.chosen.cost),
        measured=measured,
        met=met,
    ).to_json()
    GridExport.from_json(block)  # what is written is what the contract reads back
    return block


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def _row(what: str, f: PairFigures) -> str:
    images = f" on {f.images} images" if f.images is not None else ""
    return (
        f"| {what} | {f.code_bytes} B | {_pct(f.accuracy)} [{_pct(f.ci95[0])}, {_pct(f.ci95[1])}]{images} | "
        f"{f.device_ms:.3f} | {f.link_ms:.3f} | {f.server_ms:.3f} | {f.total_ms:.3f} |"
    )


def verdict_line(g: GridExport) -> str:
    """The target, its link, whether it was met as measured, and by which figure."""
    return f"{g.target} on link {g.link}: {_verdict(g)}"


def _verdict(g: GridExport) -> str:
    word = "met" if g.met else "NOT met"
    if g.mode == "max_latency_ms":
        how = (
            f"the cost model puts the exported {g.measured.code_bytes} B code at {g.measured.total_ms:.3f} ms "
            f"({'<=' if g.met else '>'} {g.limit:g} ms; an estimate, not a timing)"
        )
    else:
        how = (
            f"the trained pair's held-out {g.metric} is {_pct(g.measured.accuracy)} "
            f"({'>=' if g.met else '<'} {_pct(g.limit)})"
        )
    return f"{word} as measured: {how}"


def report_section(g: GridExport | None) -> list[str]:
    """report.md's section on the chosen (cut, budget) (the manifest's ``grid_choice``): predicted and
    measured side by side (none without)."""
    if g is None:
        return []
    return [
        "## The chosen (cut, budget)",
        "",
        f"Chosen on the probe's rate-accuracy grid for `{g.target}` on link {g.link}: cut {g.cut} "
        f"(`{g.node}`) at a {g.budget} B budget, exported as `{g.split}` (the bundle's one split).",
        "",
        f"**Target {_verdict(g)}**",
        "",
        f"| | code | {g.metric} (95% CI) | device ms | link ms | server ms | total ms |",
        "|---|---|---|---|---|---|---|",
        _row("predicted (probe, untrained code)", g.predicted),
        _row("measured (trained pair, held-out)", g.measured),
        "",
        "Both scores are held-out scores: the probe's on the ranking's held-out images, the trained pair's on "
        "the export's. Every millisecond is the cost model's estimate (the target profiles and the link), at the "
        "grid point's and at the exported code's size; `isplit-export verify` and `run` time the real pair. "
        "`isplit-export plan BUNDLE --link L --max-latency-ms T` re-runs the choice for another link or target.",
    ]


def replan_lines(choice: GridChoice, exported: GridExport | None) -> list[str]:
    """``plan``'s lines for a re-run choice: the pair chosen there, and whether it is the exported one."""
    lines = choice.lines()
    if choice.chosen is None:
        return lines
    p = choice.chosen.point
    if exported is None:
        return [*lines, "the bundle was not exported from a grid choice: export the pair with --budgets"]
    same = (p.cut, p.budget) == (exported.cut, exported.budget)
    where = f"cut {exported.cut} ({exported.node}) at {exported.budget}B"
    if same:
        return [*lines, f"this is the exported pair ({where}, {exported.split})"]
    return [
        *lines,
        f"this differs from the exported pair ({where}, {exported.split}): re-export with this target to ship it",
    ]
