"""The probe: each cut's best linear code at the link's budget, scored by the real tail without training.

For a budget ``--bottleneck SIZE|RATIO`` and every probed cut (the CUI's candidates, or all cuts):

1. the code's shape is the bottleneck's (:func:`isplit_export.bottleneck.core.code_shape`): ``k x k``
   patches at stride ``k`` (``k`` the smallest power of two leaving at most the budget's positions) and
   ``K`` = budget elements // positions components (at most ``C*k*k``); a budget a cut cannot reach is
   a one-line error naming the cut and the smallest size it can reach;
2. one forward pass over the *train* part of the images (:mod:`isplit_export.bottleneck.holdout`, the
   split the bottleneck uses) accumulates every probed cut's float64 patch covariance sums at once
   (:meth:`TracedModel.capture_module`); the top-K principal components are fitted
   (:mod:`isplit_export.bottleneck.pca`);
3. a second pass over the train part (over the kept activations when they fit in
   :data:`KEEP_BYTES`, else a second forward) records each component's range, which scales it to
   ``[-1, 1]`` for the int8 codec: exactly the code an untrained bottleneck's exported head sends;
4. one forward pass over the *held-out* part encodes, quantises, decodes and runs each cut's real tail:
   held-out top-1 accuracy (labelled images) or agreement with the full model, with a Wilson 95 % CI.

Under torchrun the train and held-out batches are shared out; the covariance sums, the ranges and the
held-out logits are gathered and added up, so every process ends with the same probe.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from isplit_export.bottleneck.pca import (
    CovarianceSums,
    PatchPCA,
    PcaDecoder,
    PcaEncoder,
    ProjectionRanges,
    channels_first,
    code_encoding,
    fit,
    patches,
)
from isplit_export.exporting.encoding import decode_array, encode_array
from isplit_export.options_bottleneck import SizeSpec

if TYPE_CHECKING:
    from isplit_export.distributed import Job
    from isplit_export.ranking.graph import Cut, TracedModel

FULL = -1
"""The key of the full model's held-out logits among the per-cut ones."""

KEEP_BYTES = 1 << 30
"""Up to this many bytes of train activations are kept between the two train passes (else recomputed)."""

CLIPPED_WARN = 0.01
"""Above this fraction of held-out code values outside the train range, the probe's code is underfitted."""

METHOD = (
    "patch PCA at the budget (k x k patches, stride k; top-K components of float64 covariance sums over the "
    "train images), each component scaled to its train range and quantised as the exported code, decoded, "
    "the real tail run on held-out images; Wilson 95 % CI"
)


@dataclass
class Probe:
    """The probe's scores: per probed cut index, the held-out measure (``value``, ``ci95``, ``metric``...)
    and the code's shape; ``pcas`` are the fitted codes (reused to initialise bottlenecks)."""

    spec: SizeSpec
    encoding: str
    scores: dict[int, dict[str, Any]]
    pcas: dict[int, PatchPCA]
    train_images: int
    held_out_images: int
    seconds: float

    def best(self) -> int | None:
        """The probed cut with the highest score (ties: earlier cut)."""
        if not self.scores:
            return None
        return min(self.scores, key=lambda i: (-float(self.scores[i]["value"] or 0.0), i))

    def underfitted(self) -> dict[int, str]:
        """The probed cuts whose code was fitted on too few images, each with the reason: fewer patch vectors
        than the budget's ``K`` components (``n`` vectors span at most ``n - 1`` dimensions; fewer components
        for another reason, e.g. channels that are always 0, lose nothing), or more than
        :data:`CLIPPED_WARN` of the held-out code values outside the train range (saturated by the codec).
        There the probe measures the number of images more than the cut."""
        out: dict[int, str] = {}
        for i, s in self.scores.items():
            if s["patch_vectors"] - 1 < s["code_shape"][0]:
                out[i] = f"{s['components']} of {s['code_shape'][0]} components"
            elif s["clipped"] > CLIPPED_WARN:
                out[i] = f"{s['clipped']:.0%} of held-out code values outside the train range"
        return out

    def to_json(self) -> dict[str, Any]:
        """The ranking's ``probe`` block (byte-reproducible: no seconds)."""
        return {
            "budget": self.spec.to_json(),
            "encoding": self.encoding,
            "method": METHOD,
            "train_images": self.train_images,
            "held_out_images": self.held_out_images,
            "metric": next(iter(self.scores.values()))["metric"] if self.scores else None,
            "best": self.best(),
        }


def shard_batches(n: int, batch_size: int, job: Job | None) -> list[tuple[int, int]]:
    """This process's ``(start, stop)`` batches of ``range(n)`` (strided by batch under torchrun)."""
    spans = [(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    if job is None or not job.active:
        return spans
    return [s for b, s in enumerate(spans) if b % job.world_size == job.rank]


def gather_parts(job: Job | None, obj: Any) -> list[Any]:
    """Every process's ``obj`` under ``job`` (in rank order); ``[obj]`` alone without one."""
    return [obj] if job is None or not job.active else job.gather(obj)


def gather_held_out(
    job: Job | None, mine: dict[Any, list[tuple[int, np.ndarray]]], counts: dict[Any, np.ndarray]
) -> tuple[dict[Any, np.ndarray], dict[Any, np.ndarray]]:
    """Every process's held-out outputs (per key, ``(first row, rows)`` chunks) and counts, merged: each key's
    outputs in row order, its counts summed. The probe and the grid gather their held-out pass this way."""
    outputs: dict[Any, list[tuple[int, np.ndarray]]] = {k: [] for k in mine}
    counts_all = {k: np.zeros_like(v) for k, v in counts.items()}
    for part, part_counts in gather_parts(job, (mine, counts)):
        for k, chunks in part.items():
            outputs[k].extend(chunks)
        for k, c in part_counts.items():
            counts_all[k] += c
    merged = {
        k: np.concatenate([v for _, v in sorted(chunks, key=lambda t: t[0])]) for k, chunks in outputs.items()
    }
    return merged, counts_all


def merged_sums(job: Job | None, local: dict[Any, Any], empty: Callable[[Any], Any]) -> dict[Any, Any]:
    """Per-cut sums (anything with ``merge``) added up over the processes of ``job``; ``local`` alone without one."""
    if job is None or not job.active:
        return local
    out = {i: empty(i) for i in local}
    for part in gather_parts(job, local):
        for i, v in part.items():
            out[i].merge(v)
    return out


def run_probe(
    traced: TracedModel,
    cuts: Sequence[Cut],
    spec: SizeSpec,
    x_train: torch.Tensor,
    x_held: torch.Tensor,
    y_full_held: np.ndarray | None,
    labels_held: np.ndarray,
    *,
    encoding: str = "int8",
    batch_size: int = 16,
    job: Job | None = None,
) -> Probe:
    """Score every cut of ``cuts`` by its linear code at ``spec`` (see the module docstring). ``y_full_held``:
    the full model's logits on ``x_held``, or ``None`` to take them from the held-out pass itself."""
    from isplit_export.bottleneck.core import code_shape
    from isplit_export.verification.checks import held_out_rounding, task_metric

    start = time.perf_counter()
    shapes = {
        c.index: code_shape(c, spec, encoding) for c in cuts
    }  # every unreachable budget before any pass
    pos = {c.index: i for i, c in enumerate(traced.cuts)}
    capture = traced.capture_module().eval()
    sums = {i: CovarianceSums(s.boundary_shape[0] * s.kernel * s.kernel) for i, s in shapes.items()}
    per_image = sum(4 * math.prod(c.shape) for c in cuts)
    keep = per_image * len(x_train) <= KEEP_BYTES  # small enough: the ranges' pass reuses the activations
    kept: list[list[torch.Tensor]] = []
    with torch.no_grad():
        for a, b in shard_batches(len(x_train), batch_size, job):
            acts = capture(x_train[a:b])[1:]
            for i, s in shapes.items():
                sums[i].add(patches(channels_first(acts[pos[i]], s.layout), s.kernel))
            if keep:
                kept.append([acts[pos[i]] for i in shapes])
    sums = merged_sums(job, sums, lambda i: CovarianceSums(sums[i].dim))
    pcas = {i: fit(sums[i], s.kernel, s.channels, s.boundary_shape, s.layout) for i, s in shapes.items()}
    raw = {i: PcaEncoder(p).eval() for i, p in pcas.items()}
    ranges = {i: ProjectionRanges(p.channels) for i, p in pcas.items()}
    with torch.no_grad():
        batches = (
            kept
            if keep
            else (
                [capture(x_train[a:b])[1:][pos[i]] for i in shapes]
                for a, b in shard_batches(len(x_train), batch_size, job)
            )
        )
        for acts_kept in batches:
            for i, act in zip(shapes, acts_kept, strict=True):
                ranges[i].add(raw[i](act))
    ranges = merged_sums(job, ranges, lambda i: ProjectionRanges(pcas[i].channels))
    for i, p in pcas.items():
        p.set_ranges(*ranges[i].bounds())
    codec = code_encoding(encoding)
    pairs = {
        c.index: (c, PcaEncoder(pcas[c.index]).eval(), PcaDecoder(pcas[c.index], residual=False).eval())
        for c in cuts
    }
    mine: dict[int, list[tuple[int, np.ndarray]]] = {i: [] for i in [*shapes, FULL]}
    fitted = {i: int((p.eigenvalues > 0).sum()) for i, p in pcas.items()}  # components beyond are always 0
    clipped = {i: np.zeros(2, dtype=np.int64) for i in shapes}  # held-out code values outside [-1, 1], all
    with torch.no_grad():
        for a, b in shard_batches(len(x_held), batch_size, job):
            full, *acts = capture(x_held[a:b])
            mine[FULL].append((a, full.numpy()))
            for i, (cut, enc, dec) in pairs.items():
                zf = enc(acts[pos[i]]).numpy()
                clipped[i] += (int((np.abs(zf[:, : fitted[i]]) > 1.0).sum()), zf[:, : fitted[i]].size)
                z = encode_array(zf, codec)
                zq = torch.from_numpy(np.ascontiguousarray(decode_array(z, codec), dtype=np.float32))
                mine[i].append((a, traced.run_tail(cut, dec(zq)).numpy()))
    got, clipped_all = gather_held_out(job, mine, clipped)
    y_full = got[FULL] if y_full_held is None else y_full_held
    scores: dict[int, dict[str, Any]] = {}
    for i, s in shapes.items():
        scores[i] = {
            **task_metric(y_full, got[i], labels_held, held_out=True, rnd=held_out_rounding),
            "code_shape": list(s.code_shape),
            "kernel": s.kernel,
            "code_bytes": s.code_bytes,
            "components": fitted[i],
            "patch_vectors": sums[i].n,
            "clipped": held_out_rounding(int(clipped_all[i][0]) / max(int(clipped_all[i][1]), 1)),
        }
    return Probe(spec, encoding, scores, pcas, len(x_train), len(x_held), time.perf_counter() - start)


def ranked_split(
    ranked: Any, cuts: str, *, seed: int, holdout: float, max_images: int
) -> tuple[list[Cut], torch.Tensor, torch.Tensor, np.ndarray]:
    """A :class:`~isplit_export.ranking.ranked.RankResult`'s candidates (``cuts="candidates"``) or all its cuts,
    and its images split train/held-out by name (the bottleneck's split): ``(cuts, x_train, x_held,
    labels_held)``, what the probe and the grid run on."""
    from isplit_export.bottleneck.holdout import split_holdout
    from isplit_export.distributed import images_tensor

    ranks = ranked.ranking.ranks  # every candidate (local maximum), whatever the ranking's top
    chosen = [c for c, r in zip(ranked.traced.cuts, ranks, strict=True) if cuts == "all" or r is not None]
    x, labels, names = images_tensor(ranked.images, max_images)
    train_idx, held_idx = split_holdout(names, holdout, seed)
    return chosen, x[train_idx], x[held_idx], labels.numpy()[held_idx]


def probe_ranking(
    ranked: Any,
    spec: SizeSpec,
    cuts: str = "candidates",
    *,
    encoding: str = "int8",
    batch_size: int = 16,
    seed: int = 0,
    holdout: float = 0.25,
    max_images: int = 2000,
    job: Job | None = None,
) -> Probe:
    """The probe for a :class:`~isplit_export.ranking.ranked.RankResult`: its images split train/held-out by name
    (the bottleneck's split), over its candidates (``cuts="candidates"``) or all its cuts."""
    chosen, x_train, x_held, labels_held = ranked_split(
        ranked, cuts, seed=seed, holdout=holdout, max_images=max_images
    )
    return run_probe(
        ranked.traced,
        chosen,
        spec,
        x_train,
        x_held,
        None,
        labels_held,
        encoding=encoding,
        batch_size=batch_size,
        job=job,
    )
