"""The (cut, budget) choice on the probe's rate-accuracy grid (``rank --budgets ... --link L``). Torch-free.

Every grid point is priced by the cost model (:func:`isplit_export.targets.cost.cut_cost`: the head's FLOPs on
the device, the code's bytes over the link, the tail's FLOPs on the server; the encoder's and decoder's own
FLOPs are left out, as small next to a head or tail). Then:

- ``--max-latency-ms T``: among the points within ``T`` ms, the highest predicted accuracy; the points whose
  score lies inside that point's 95 % CI are tied with it, and the smallest code among them wins (then the
  higher score, the lower latency, the earlier cut);
- ``--min-accuracy A``: among the points that reach ``A``, the lowest latency (then the smaller code);
- neither: the Pareto front of accuracy against latency (no other point is at least as fast and at least as
  accurate, and better in one of the two), fastest first.

A target no point meets is one line naming the best the grid reaches (:class:`BadInputError`, exit 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from isplit_export.contract.rate_accuracy import GridPoint, RateAccuracyGrid
from isplit_export.errors import BadInputError
from isplit_export.links import Link, parse_link
from isplit_export.options_grid import PairChoice
from isplit_export.targets.cost import Compute, compute_for, cut_cost
from isplit_export.targets.profiles import load_target
from isplit_export.text_table import text_table


@dataclass(frozen=True)
class PricedPoint:
    """A grid point with its cost row (``device_ms``, ``link_ms``, ``server_ms``, ``total_ms``, ``bytes``,
    ``device_energy_mj``)."""

    point: GridPoint
    cost: dict[str, Any]

    @property
    def total_ms(self) -> float:
        return float(self.cost["total_ms"])

    def to_json(self) -> dict[str, Any]:
        p = self.point
        return {
            "cut": p.cut,
            "node": p.node,
            "budget": p.budget,
            "code_bytes": p.code_bytes,
            "value": p.value,
            "ci95": list(p.ci95),
            **{
                k: self.cost[k] for k in ("device_ms", "link_ms", "server_ms", "total_ms", "device_energy_mj")
            },
        }


def price_grid(grid: RateAccuracyGrid, device: Compute, server: Compute, link: Link) -> list[PricedPoint]:
    """Every reachable grid point with its cost on ``link`` (head on ``device``, tail on ``server``)."""
    out = []
    for p in grid.points:
        tail = max(grid.total_flops - p.head_flops, 0)
        out.append(PricedPoint(p, cut_cost(p.head_flops, tail, p.code_bytes, device, server, link)))
    return out


def pareto_front(points: list[PricedPoint]) -> list[PricedPoint]:
    """The points no other point beats in both latency and accuracy, fastest first (equal points: smaller code)."""
    front: list[PricedPoint] = []
    for q in sorted(points, key=lambda q: (q.total_ms, -q.point.value, q.point.code_bytes, q.point.cut)):
        if not front or q.point.value > front[-1].point.value:
            front.append(q)
    return front


def most_accurate_within(points: list[PricedPoint], max_ms: float, link: str) -> PricedPoint:
    """The most accurate point within ``max_ms``; ties inside its CI go to the smaller code."""
    feasible = [q for q in points if q.total_ms <= max_ms]
    if not feasible:
        fastest = min(points, key=lambda q: (q.total_ms, q.point.code_bytes))
        raise BadInputError(
            f"--max-latency-ms {max_ms:g}: no (cut, budget) of the grid is that fast on link {link}: the fastest "
            f"is {fastest.total_ms:.3f} ms ({fastest.point.label}); pass at least that"
        )
    best = max(feasible, key=lambda q: (q.point.value, -q.point.code_bytes, -q.total_ms, -q.point.cut))
    tied = [q for q in feasible if q.point.value >= best.point.ci95[0]]
    return min(tied, key=lambda q: (q.point.code_bytes, -q.point.value, q.total_ms, q.point.cut))


def fastest_reaching(points: list[PricedPoint], floor: float, text: str, metric: str) -> PricedPoint:
    """The fastest point whose predicted score reaches ``floor`` (equal latency: the smaller code)."""
    feasible = [q for q in points if q.point.value >= floor]
    if not feasible:
        best = max(points, key=lambda q: (q.point.value, -q.point.code_bytes))
        raise BadInputError(
            f"--min-accuracy {text}: no (cut, budget) of the grid reaches {100 * floor:.1f}% held-out {metric}: "
            f"the best is {100 * best.point.value:.1f}% ({best.point.label}); pass at most that"
        )
    return min(feasible, key=lambda q: (q.total_ms, q.point.code_bytes, -q.point.value, q.point.cut))


@dataclass(frozen=True)
class GridChoice:
    """What the choice found: the priced points, the Pareto front, and the chosen point (None: front only)."""

    mode: str
    link: Link
    device: Compute
    server: Compute
    points: list[PricedPoint]
    front: list[PricedPoint]
    chosen: PricedPoint | None
    target: str | None
    metric: str

    def to_json(self) -> dict[str, Any]:
        """The choice as JSON (what ``pareto.png`` draws)."""
        return {
            "mode": self.mode,
            "target": self.target,
            "link": self.link.to_json(),
            "device": self.device.to_json(),
            "server": self.server.to_json(),
            "metric": self.metric,
            "chosen": None if self.chosen is None else self.chosen.to_json(),
            "front": [q.to_json() for q in self.front],
            "points": [q.to_json() for q in self.points],
        }

    def lines(self) -> list[str]:
        """The chosen point in one line, or the Pareto front as a table."""
        where = f"link {self.link.name}, head on {self.device.target}, tail on {self.server.target}"
        if self.chosen is not None:
            return [f"chosen for {self.target} ({where}): {_describe(self.chosen, self.metric)}"]
        rows: list[tuple[str, ...]] = [
            ("cut", "node", "code", self.metric, "95% CI", "total ms", "device", "link", "server")
        ]
        for q in self.front:
            p, c = q.point, q.cost
            rows.append(
                (
                    str(p.cut),
                    p.node,
                    f"{p.code_bytes}B",
                    f"{100 * p.value:.1f}%",
                    f"[{100 * p.ci95[0]:.1f}, {100 * p.ci95[1]:.1f}]",
                    f"{q.total_ms:.3f}",
                    f"{c['device_ms']:.3f}",
                    f"{c['link_ms']:.3f}",
                    f"{c['server_ms']:.3f}",
                )
            )
        title = f"the Pareto front of predicted {self.metric} against latency ({where}), fastest first:"
        return [title, *text_table(rows)]


def _describe(q: PricedPoint, metric: str) -> str:
    p, c = q.point, q.cost
    energy = "" if c["device_energy_mj"] is None else f", device energy {c['device_energy_mj']:.3f} mJ"
    return (
        f"cut {p.cut} ({p.node}) at {p.code_bytes}B: predicted {metric} {100 * p.value:.1f}% "
        f"[{100 * p.ci95[0]:.1f}, {100 * p.ci95[1]:.1f}], {q.total_ms:.3f} ms (device {c['device_ms']:.3f} + link "
        f"{c['link_ms']:.3f} + server {c['server_ms']:.3f}){energy}"
    )


def choose_pair(grid: RateAccuracyGrid, choice: PairChoice) -> GridChoice:
    """Price the grid for ``choice`` and pick its pair (or the front: see the module docstring)."""
    link = parse_link(choice.link)
    device = compute_for(load_target(choice.target), head=True)
    server = compute_for(load_target(choice.server), head=False)
    points = price_grid(grid, device, server, link)
    if not points:
        raise BadInputError("the grid has no reachable (cut, budget): pass a wider --budgets ladder")
    front = pareto_front(points)
    chosen: PricedPoint | None = None
    mode, target = "pareto", None
    if choice.max_latency_ms is not None:
        mode, target = "max_latency_ms", f"--max-latency-ms {choice.max_latency_ms:g}"
        chosen = most_accurate_within(points, choice.max_latency_ms, link.name)
    elif (floor := choice.floor) is not None:
        mode, target = "min_accuracy", f"--min-accuracy {floor.text}"
        chosen = fastest_reaching(points, floor.of(grid.full_model), floor.text, grid.metric)
    return GridChoice(mode, link, device, server, points, front, chosen, target, grid.metric)
