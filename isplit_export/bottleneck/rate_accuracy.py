"""The probe's rate-accuracy grid: every probed cut at every budget of a ladder (``rank --budgets 16B..1KiB``),
from one pass of statistics.

At a budget, the probe's code at a cut (:mod:`isplit_export.bottleneck.probe`) has a patch size ``k`` and
``K`` components (:func:`isplit_export.bottleneck.core.code_shape`). Budgets of one cut that share ``k``
share the patch covariance, and their codes are nested: the top ``K`` components of a smaller budget
are the first ``K`` of a larger one's (:meth:`PatchPCA.prefix`), and each component's range does not
depend on ``K``. So:

1. one forward pass over the train images fills the covariance sums of every (cut, ``k``) the ladder
   needs;
2. each (cut, ``k``) is decomposed once, at the largest ``K`` of its budgets, and ranged once (a
   second pass over the kept activations, or a second forward);
3. one forward pass over the held-out images encodes each (cut, ``k``) once and, for every budget,
   quantises the first ``K`` components, decodes them and runs the cut's real tail: the held-out
   accuracy (or agreement) with a Wilson 95 % CI, as the one-budget probe computes it.

A budget a cut cannot reach (below its smallest code, or above its boundary) is listed as
``unreachable`` for that cut. The block ``rate_accuracy`` of ``ranking.json`` (docs/bundle.md) is
:meth:`RateAccuracy.to_json`; ``contract.rate_accuracy`` reads it back.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from isplit_export.bottleneck.pca import (
    CovarianceSums,
    PatchPCA,
    PcaDecoder,
    PcaEncoder,
    ProjectionRanges,
    channels_first,
    code_encoding,
    fit,
    from_channels_first,
    patches,
)
from isplit_export.bottleneck.probe import (
    FULL,
    KEEP_BYTES,
    gather_held_out,
    merged_sums,
    ranked_split,
    shard_batches,
)
from isplit_export.errors import BadInputError
from isplit_export.exporting.encoding import decode_array, encode_array
from isplit_export.options_bottleneck import HOLDOUT, Ladder, SizeSpec

if TYPE_CHECKING:
    from isplit_export.bottleneck.core import CodeShape
    from isplit_export.distributed import Job
    from isplit_export.ranking.graph import Cut, TracedModel

METHOD = (
    "the probe at every budget of the ladder: per (cut, patch size) one float64 covariance from one train pass, "
    "decomposed once at the largest budget's components (a smaller budget keeps the first ones), each component "
    "scaled to its train range and quantised as the exported code, decoded, the real tail run on held-out "
    "images; Wilson 95 % CI"
)

Group = tuple[int, int]
"""A (cut index, patch size ``k``): one covariance, one decomposition."""


@dataclass
class RateAccuracy:
    """The grid: per probed cut index, one row per reachable budget (``budget``, ``code_bytes``, ``value``,
    ``ci95``...), and the budgets it cannot reach."""

    ladder: Ladder
    budgets: list[int]
    encoding: str
    metric: str | None
    full_model: float | None
    nodes: dict[int, str]
    head_flops: dict[int, int]
    total_flops: int
    points: dict[int, list[dict[str, Any]]]
    unreachable: dict[int, list[int]]
    groups: int
    train_images: int
    held_out_images: int
    seconds: float

    def to_json(self, ranks: Sequence[int | None], log10_cui: Sequence[float | None]) -> dict[str, Any]:
        """The ranking's ``rate_accuracy`` block (byte-reproducible: no seconds); ``ranks`` and ``log10_cui``
        per cut of the ranking give each row its CUI rank and value."""
        from isplit_export.numbers import rounded

        return {
            "ladder": self.ladder.to_json(),
            "budgets": self.budgets,
            "encoding": self.encoding,
            "method": METHOD,
            "metric": self.metric,
            "full_model": self.full_model,
            "train_images": self.train_images,
            "held_out_images": self.held_out_images,
            "decompositions": self.groups,
            "total_flops": self.total_flops,
            "cuts": [
                {
                    "index": i,
                    "node": self.nodes[i],
                    "head_flops": self.head_flops[i],
                    "cui_rank": ranks[i],
                    "log10_cui": None if log10_cui[i] is None else rounded(log10_cui[i], 6, decimals=True),
                    "points": self.points[i],
                    "unreachable": self.unreachable[i],
                }
                for i in sorted(self.points)
            ],
        }


def decode_linear(dec: PcaDecoder, z: torch.Tensor) -> torch.Tensor:
    """What ``dec`` (without its residual) computes from the code ``z``, its stride-``k`` transposed conv as one
    matrix product (non-overlapping patches; on the CPU many times faster for the grid's small codes; equal up
    to float32 rounding)."""
    b, n, h, w = z.shape
    weight = dec.linear.weight  # [n, C, k, k]
    c, k = int(weight.shape[1]), dec.k
    y = z.permute(0, 2, 3, 1).reshape(-1, n) @ weight.reshape(n, -1)
    y = y.reshape(b, h, w, c, k, k).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h * k, w * k)
    if any(dec.pad):
        y = F.pad(y, dec.pad)
    y = y + dec.fill
    return from_channels_first(F.relu(y) if dec.nonnegative else y, dec.layout)


def fp16_boundary_bytes(cuts: Sequence[Cut]) -> int:
    """The largest boundary of ``cuts`` in bytes as fp16: where an open ladder (``16B..``) ends."""
    return max((2 * math.prod(int(d) for d in c.shape) for c in cuts), default=0)


def plan_grid(
    cuts: Sequence[Cut], budgets: Sequence[int], encoding: str
) -> tuple[dict[tuple[int, int], CodeShape], dict[int, list[int]]]:
    """The code shape of every reachable (cut index, budget), and per cut the budgets it cannot reach."""
    from isplit_export.bottleneck.core import code_shape

    shapes: dict[tuple[int, int], CodeShape] = {}
    unreachable: dict[int, list[int]] = {c.index: [] for c in cuts}
    for c in cuts:
        for b in budgets:
            try:
                shapes[c.index, b] = code_shape(c, SizeSpec("bytes", float(b), f"{b}B"), encoding)
            except BadInputError:
                unreachable[c.index].append(b)
    return shapes, unreachable


def run_grid(
    traced: TracedModel,
    cuts: Sequence[Cut],
    ladder: Ladder,
    x_train: torch.Tensor,
    x_held: torch.Tensor,
    labels_held: np.ndarray,
    *,
    encoding: str = "int8",
    batch_size: int = 16,
    job: Job | None = None,
) -> RateAccuracy:
    """Score every cut of ``cuts`` at every budget of ``ladder`` (see the module docstring)."""
    from isplit_export.verification.checks import held_out_rounding, task_metric

    start = time.perf_counter()
    budgets = ladder.budgets(fp16_boundary_bytes(cuts))
    shapes, unreachable = plan_grid(cuts, budgets, encoding)
    pos = {c.index: i for i, c in enumerate(traced.cuts)}
    by_index = {c.index: c for c in cuts}
    widest: dict[Group, CodeShape] = {}  # per group, the shape with the most components
    for (i, _), s in shapes.items():
        g = (i, s.kernel)
        if g not in widest or s.channels > widest[g].channels:
            widest[g] = s
    capture = traced.capture_module().eval()
    sums = {g: CovarianceSums(s.boundary_shape[0] * s.kernel * s.kernel) for g, s in widest.items()}
    grouped_cuts = sorted({i for i, _ in widest})
    per_image = sum(4 * math.prod(by_index[i].shape) for i in grouped_cuts)
    keep = per_image * len(x_train) <= KEEP_BYTES
    kept: list[dict[int, torch.Tensor]] = []
    with torch.no_grad():
        for a, b in shard_batches(len(x_train), batch_size, job):
            acts = capture(x_train[a:b])[1:]
            wide = {i: acts[pos[i]].to(torch.float64) for i in grouped_cuts}  # once per cut, not per group
            for (i, k), s in widest.items():
                sums[i, k].add(patches(channels_first(wide[i], s.layout), k))
            if keep:
                kept.append({i: acts[pos[i]] for i in grouped_cuts})
    sums = merged_sums(job, sums, lambda g: CovarianceSums(sums[g].dim))
    pcas: dict[Group, PatchPCA] = {
        g: fit(sums[g], s.kernel, s.channels, s.boundary_shape, s.layout) for g, s in widest.items()
    }
    raw = {g: PcaEncoder(p).eval() for g, p in pcas.items()}
    ranges = {g: ProjectionRanges(p.channels) for g, p in pcas.items()}
    with torch.no_grad():
        for a, b in [] if keep else shard_batches(len(x_train), batch_size, job):
            acts = capture(x_train[a:b])[1:]
            kept_batch = {i: acts[pos[i]] for i in grouped_cuts}
            for g in pcas:
                ranges[g].add(raw[g](kept_batch[g[0]]))
        for kept_batch in kept:
            for g in pcas:
                ranges[g].add(raw[g](kept_batch[g[0]]))
    kept.clear()
    ranges = merged_sums(job, ranges, lambda g: ProjectionRanges(pcas[g].channels))
    for g, p in pcas.items():
        p.set_ranges(*ranges[g].bounds())
    codec = code_encoding(encoding)
    encoders = {g: PcaEncoder(p).eval() for g, p in pcas.items()}
    widths = sorted({(i, s.kernel, s.channels) for (i, _), s in shapes.items()})  # distinct codes
    decoders = {(i, k, n): PcaDecoder(pcas[i, k].prefix(n), residual=False).eval() for i, k, n in widths}
    fitted = {g: int((p.eigenvalues > 0).sum()) for g, p in pcas.items()}
    mine: dict[Any, list[tuple[int, np.ndarray]]] = {w: [] for w in [*widths, FULL]}
    outside = {g: np.zeros(p.channels, dtype=np.int64) for g, p in pcas.items()}  # per component, |z| > 1
    with torch.no_grad():
        for a, b in shard_batches(len(x_held), batch_size, job):
            full, *acts = capture(x_held[a:b])
            mine[FULL].append((a, full.numpy()))
            codes: dict[Group, np.ndarray] = {}
            for g, enc in encoders.items():
                zf = enc(acts[pos[g[0]]]).numpy()
                outside[g] += (np.abs(zf) > 1.0).sum(axis=(0, 2, 3))
                codes[g] = encode_array(zf, codec)
            for i in grouped_cuts:  # one tail run per cut: every code's decoded boundary in one batch
                mine_i = [w for w in widths if w[0] == i]
                decoded = []
                for w in mine_i:
                    z = np.ascontiguousarray(codes[w[:2]][:, : w[2]])
                    zq = torch.from_numpy(np.ascontiguousarray(decode_array(z, codec), dtype=np.float32))
                    decoded.append(decode_linear(decoders[w], zq))
                out = traced.run_tail(by_index[i], torch.cat(decoded)).numpy()
                for n, w in enumerate(mine_i):
                    mine[w].append((a, out[n * (b - a) : (n + 1) * (b - a)]))
    got, outside_all = gather_held_out(job, mine, outside)
    y_full = got[FULL]
    points: dict[int, list[dict[str, Any]]] = {c.index: [] for c in cuts}
    metric: str | None = None
    full_model: float | None = None
    for (i, budget), s in sorted(shapes.items()):
        g = (i, s.kernel)
        task = task_metric(
            y_full, got[i, s.kernel, s.channels], labels_held, held_out=True, rnd=held_out_rounding
        )
        metric, full_model = task["metric"], task["full_model"]
        used = min(s.channels, fitted[g])
        values = used * math.prod(s.code_shape[1:]) * len(x_held)
        points[i].append(
            {
                "budget": budget,
                "code_bytes": s.code_bytes,
                "code_shape": list(s.code_shape),
                "kernel": s.kernel,
                "components": used,
                "value": task["value"],
                "ci95": task["ci95"],
                "images": task["images"],
                "clipped": held_out_rounding(int(outside_all[g][:used].sum()) / max(values, 1)),
            }
        )
    return RateAccuracy(
        ladder,
        budgets,
        encoding,
        metric,
        full_model,
        {c.index: c.node for c in cuts},
        {c.index: round(c.head_flops_share * traced.total_flops) for c in cuts},
        traced.total_flops,
        points,
        unreachable,
        len(pcas),
        len(x_train),
        len(x_held),
        time.perf_counter() - start,
    )


def grid_ranking(
    ranked: Any,
    ladder: Ladder,
    cuts: str = "candidates",
    *,
    encoding: str = "int8",
    batch_size: int = 16,
    seed: int = 0,
    holdout: float = HOLDOUT,
    max_images: int = 2000,
    job: Job | None = None,
) -> RateAccuracy:
    """The grid for a :class:`~isplit_export.ranking.ranked.RankResult`, on the probe's train/held-out split of its images,
    over its candidates (``cuts="candidates"``) or all its cuts."""
    chosen, x_train, x_held, labels_held = ranked_split(
        ranked, cuts, seed=seed, holdout=holdout, max_images=max_images
    )
    return run_grid(
        ranked.traced,
        chosen,
        ladder,
        x_train,
        x_held,
        labels_held,
        encoding=encoding,
        batch_size=batch_size,
        job=job,
    )
