"""Whether to split at all: the best split against all on device and all on server, in one line (torch-free).

The export (with ``--link``) and ``isplit-export plan`` print :meth:`SplitVerdict.line` under the cost
table, and ``plan.json`` carries :meth:`SplitVerdict.to_json` as ``verdict``, so the user learns before
deploying whether a split beats running the whole model on the device, or sending the input to the
server, on this link and device::

    splitting does not pay here: all on device 0.36 ms beats the best split (features_4, 58.86 ms over lte) by 58.50 ms
    splitting pays here: the best split (features_4, 12.00 ms over wifi) beats all on device (30.00 ms) by 18.00 ms
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from isplit_export.contract import Candidate, CostBlock, RankingFile
from isplit_export.numbers import rounded


@dataclass(frozen=True)
class SplitVerdict:
    """The best split's end-to-end ms next to the two baselines', on one link."""

    link: str
    best_index: int
    best_node: str
    best_ms: float
    device_only_ms: float
    server_only_ms: float

    @property
    def baseline(self) -> tuple[str, float]:
        """The faster baseline: ``("all on device", ms)`` or ``("all on server", ms)`` (device on a tie)."""
        if self.server_only_ms < self.device_only_ms:
            return "all on server", self.server_only_ms
        return "all on device", self.device_only_ms

    @property
    def pays(self) -> bool:
        """Whether the best split is strictly faster than both baselines."""
        return self.best_ms < self.baseline[1]

    @property
    def margin_ms(self) -> float:
        """By how much the winner wins: the faster baseline minus the best split (negative: the split loses)."""
        return self.baseline[1] - self.best_ms

    def line(self) -> str:
        """The one line the export and ``plan`` print."""
        name, ms = self.baseline
        split = f"the best split ({self.best_node}, {self.best_ms:.2f} ms over {self.link})"
        if not self.pays:
            return (
                f"splitting does not pay here: {name} {ms:.2f} ms beats {split} by {-self.margin_ms:.2f} ms"
            )
        other = "all on server" if name == "all on device" else "all on device"
        other_ms = self.server_only_ms if name == "all on device" else self.device_only_ms
        return (
            f"splitting pays here: {split} beats {name} ({ms:.2f} ms) by {self.margin_ms:.2f} ms "
            f"and {other} ({other_ms:.2f} ms) by {other_ms - self.best_ms:.2f} ms"
        )

    def to_json(self) -> dict[str, Any]:
        """``plan.json``'s ``verdict`` block."""
        return {
            "splitting_pays": self.pays,
            "best_split": {"index": self.best_index, "node": self.best_node, "total_ms": self.best_ms},
            "device_only_ms": self.device_only_ms,
            "server_only_ms": self.server_only_ms,
            "margin_ms": rounded(self.margin_ms, 6, decimals=True),
            "line": self.line(),
        }


def split_verdict(cost: CostBlock, candidates: Sequence[Candidate]) -> SplitVerdict | None:
    """The verdict of a ``cost`` block (ranking.json's or plan's) over its ``candidates`` (each with a cost).

    The best split is the fastest end to end among the cuts the cost table lists: I-Split's ranked
    candidates and the selected cuts. None when no such cut has a latency (no link: no cost block).
    """
    selected = set(cost.selected)
    listed = [
        (c, c.cost.total_ms)
        for c in candidates
        if (c.rank is not None or c.index in selected) and c.cost is not None and c.cost.total_ms is not None
    ]
    device_only = cost.baselines.get("device_only")
    server_only = cost.baselines.get("server_only")
    if not listed or device_only is None or server_only is None:
        return None
    if device_only.total_ms is None or server_only.total_ms is None:
        return None
    best, best_ms = min(listed, key=lambda pair: (pair[1], pair[0].index))
    return SplitVerdict(
        link=cost.link.name,
        best_index=best.index,
        best_node=best.node,
        best_ms=best_ms,
        device_only_ms=device_only.total_ms,
        server_only_ms=server_only.total_ms,
    )


def verdict_lines(ranking: RankingFile) -> list[str]:
    """report.md's cost section: the verdict in bold and a blank line, or nothing without one."""
    verdict = None if ranking.cost is None else split_verdict(ranking.cost, ranking.candidates)
    return [] if verdict is None else [f"**{verdict.line()}**", ""]
