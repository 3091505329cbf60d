"""Turn per-cut CUI values into the I-Split ranking (``ranking.json``, schema ``isplit.ranking/2``).

Candidates are the local maxima of the log10 CUI curve in network order (the paper's star markers):
a point higher than its left neighbour and at least as high as its right one (an end point is
compared with its single neighbour). They are ranked by CUI, highest first; every cut is reported,
with ``rank`` null for the cuts that are not local maxima.

With bootstrap replicates of the CUI (:mod:`isplit_export.ranking.bootstrap`) every cut also gets ``cui_ci``
(95 % percentile interval), every ranked candidate ``rank_stability`` (fraction of replicates in which
it keeps its rank) and ``ties`` (the candidates it cannot be told apart from), and the top level a
``bootstrap`` object (method, replicates, seed, threshold and the tied pairs).
Schema 2 adds what a torch-free re-plan needs (``total_flops``, per cut ``head_flops``) and, when the
export was given a link, the ``cost`` block and per-cut ``cost`` columns of :mod:`isplit_export.targets.cost`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from isplit_export.numbers import rounded
from isplit_export.ranking.graph import Cut
from isplit_export.text_table import text_table

if TYPE_CHECKING:
    from isplit_export.bottleneck.probe import Probe
    from isplit_export.bottleneck.rate_accuracy import RateAccuracy

SCHEMA = "isplit.ranking/2"


def local_maxima(values: Sequence[float]) -> list[bool]:
    """Flags of the local maxima of ``values`` (NaN never is one)."""
    v = [x if x is not None and not math.isnan(x) else -math.inf for x in values]
    n = len(v)
    flags = []
    for i in range(n):
        left = v[i - 1] if i > 0 else -math.inf
        right = v[i + 1] if i < n - 1 else -math.inf
        flags.append(v[i] > -math.inf and v[i] > left and v[i] >= right)
    return flags


@dataclass
class Ranking:
    """All cuts with their CUI, local-maximum flag and rank; ``top`` is how many the user asked for."""

    model: str
    weights: str
    images: int
    classes: list[str] | None
    score: str
    cuts: list[Cut]
    cui: np.ndarray
    input_bytes: int
    top: int | None = None
    curves: dict[str, list[float]] | None = None
    distributed: dict[str, Any] | None = None
    replicates: np.ndarray | None = None
    """Bootstrap replicates of ``cui`` ``[B, cuts]`` (NaN rows: empty replicates), or None."""
    bootstrap_seed: int | None = None

    @property
    def uncertainty(self) -> dict[str, Any] | None:
        """:func:`~isplit_export.ranking.bootstrap.summarize_uncertainty` of the replicates (None without)."""
        if self.replicates is None or self.replicates.shape[0] == 0:
            return None
        from isplit_export.ranking.bootstrap import summarize_uncertainty

        return summarize_uncertainty(self.cui, self.replicates, self.ranks)

    total_flops: int | None = None
    probe: Probe | None = None
    """The probe at a ``--bottleneck`` budget (:mod:`isplit_export.bottleneck.probe`): a score per probed cut."""
    labels: str | None = None
    """Where the images' labels come from (``isplit_export.class_labels.LABEL_SOURCES``); None: not said."""
    cost: dict[str, Any] | None = None
    """The cost block (``isplit_export.bundle.cost_block``), without its rows."""
    cost_rows: list[dict[str, Any]] | None = None
    """The cost block's row of every cut (in cut order): each goes into its candidate."""
    rate_accuracy: RateAccuracy | None = None
    """The probe's grid over a ``--budgets`` ladder (:mod:`isplit_export.bottleneck.rate_accuracy`)."""

    @property
    def log10_cui(self) -> list[float | None]:
        return [math.log10(c) if c > 0 else None for c in self.cui.tolist()]

    @property
    def local_max(self) -> list[bool]:
        return local_maxima([x if x is not None else math.nan for x in self.log10_cui])

    @property
    def ranks(self) -> list[int | None]:
        """1-based rank of each local maximum by CUI (ties: earlier cut first), None elsewhere."""
        flags = self.local_max
        order = sorted((i for i, f in enumerate(flags) if f), key=lambda i: (-float(self.cui[i]), i))
        ranks: list[int | None] = [None] * len(flags)
        for r, i in enumerate(order, start=1):
            ranks[i] = r
        return ranks

    def ranked(self, top: int | None = None) -> list[Cut]:
        """The ranked candidate cuts, best first, at most ``top`` (default: the ranking's ``top``)."""
        ranks = self.ranks
        chosen = sorted((i for i, r in enumerate(ranks) if r is not None), key=lambda i: ranks[i] or 0)
        k = top if top is not None else self.top
        return [self.cuts[i] for i in (chosen[:k] if k else chosen)]

    def to_json(self) -> dict[str, Any]:
        log10, flags, ranks = self.log10_cui, self.local_max, self.ranks
        unc = self.uncertainty
        candidates = []
        for i, cut in enumerate(self.cuts):
            row = cut.to_json()
            row.update(
                cui=float(self.cui[i]),
                log10_cui=None if log10[i] is None else rounded(log10[i] or 0.0, 6, decimals=True),
                local_max=flags[i],
                rank=ranks[i],
            )
            if unc is not None:
                row.update(cui_ci=unc["cui_ci"][i])
                if ranks[i] is not None:
                    row.update(rank_stability=unc["rank_stability"][i], ties=unc["ties"][i])
            if self.total_flops is not None:
                row["head_flops"] = round(cut.head_flops_share * self.total_flops)
            if self.cost_rows is not None:
                row.update(cost=self.cost_rows[i])
            if self.probe is not None and i in self.probe.scores:
                row["probe"] = self.probe.scores[i]
            candidates.append(row)
        out: dict[str, Any] = {
            "schema": SCHEMA,
            "model": self.model,
            "weights": self.weights,
            "images": self.images,
            "classes": self.classes,
            "score": self.score,
            "top": self.top,
            "input_bytes": self.input_bytes,
            "total_flops": self.total_flops,
            "method": "Grad-CAM channel-mean, ReLU, spatial mean; CUI = mean over images (I-Split, ICPR 2022)",
            "candidates": candidates,
        }
        if self.labels is not None:
            out["labels"] = self.labels
        if self.curves:
            out["curves"] = self.curves
        if self.distributed:  # how it was computed (torch.distributed); absent in one process
            out["distributed"] = self.distributed
        if unc is not None and self.replicates is not None:
            from isplit_export.ranking.bootstrap import FLIP_THRESHOLD, METHOD
            from isplit_export.stats import CI_LEVEL

            out["bootstrap"] = {
                "method": METHOD,
                "replicates": int(self.replicates.shape[0]),
                "valid_replicates": unc["valid_replicates"],
                "seed": self.bootstrap_seed,
                "ci_level": CI_LEVEL,
                "flip_threshold": FLIP_THRESHOLD,
                "ties": unc["pairs"],
            }
        if self.probe is not None:
            out["probe"] = self.probe.to_json()
        if self.cost is not None:
            out.update(cost=self.cost)
        if self.rate_accuracy is not None:
            out["rate_accuracy"] = self.rate_accuracy.to_json(ranks, log10)
        return out

    def table(self, top: int | None = None) -> str:
        """A plain-text table of the ranked candidates, for the terminal.

        With bootstrap replicates: ``stable`` is the rank stability (percent of replicates keeping the
        rank) and ``ties`` the ranks a candidate cannot be told apart from (``-`` when none).
        """
        ranks, log10 = self.ranks, self.log10_cui
        unc = self.uncertainty
        head: tuple[str, ...] = ("rank", "cut", "node", "module", "shape", "KiB", "head FLOPs", "log10 CUI")
        probe = self.probe
        if probe is not None:
            head += (f"probe {probe.spec.text} [95% CI]",)
        rows: list[tuple[str, ...]] = [head + (("stable", "ties") if unc is not None else ())]
        for cut in self.ranked(top):
            i = cut.index
            extra: tuple[str, ...] = ()
            if unc is not None:
                stab = unc["rank_stability"][i]
                tied = ",".join(str(ranks[k]) for k in unc["ties"][i]) or "-"
                extra = ("-" if stab is None else f"{100 * stab:.0f}%", tied)
            rows.append(
                (
                    str(ranks[i]),
                    str(i),
                    cut.node,
                    cut.module,
                    "x".join(map(str, cut.shape)) + f" {cut.layout}",
                    f"{cut.boundary_bytes / 1024:.1f}",
                    f"{100 * cut.head_flops_share:.1f}%",
                    f"{log10[i]:.3f}" if log10[i] is not None else "-inf",
                    *((_probe_cell(probe.scores.get(i)),) if probe is not None else ()),
                    *extra,
                )
            )
        return "\n".join(text_table(rows))


def _probe_cell(score: dict[str, Any] | None) -> str:
    """``88.0% [76.2, 94.4]`` (or ``-`` for a cut the probe did not score)."""
    if score is None or score.get("value") is None:
        return "-"
    lo, hi = score["ci95"]
    return f"{100 * score['value']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"
