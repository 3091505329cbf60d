"""I-Split importance: Grad-CAM cumulative importance (CUI) of every cut, and the CDE baseline.

For an image x, a cut l with activation A (C x H x W) and the target logit y (the top predicted class,
or the label with ``score="label"``):

    alpha_c = mean_ij dy/dA_cij
    M       = ReLU( (1/C) sum_c alpha_c A_c )        (channel *mean*, as the reference code; plain
                                                      Grad-CAM sums, which only rescales by C)
    s(x, l) = mean_ij M
    CUI(l)  = mean over the images of s(x, l)

The channel and spatial axes follow the cut's layout (:attr:`Cut.layout`): ``nchw`` [B, C, H, W],
``nhwc`` [B, H, W, C] (channels last), and ``tokens`` [B, p+N, D] (a vision transformer's sequence):
the p class tokens are dropped, the N patch tokens are the spatial positions and D the channels:
alpha_d = mean_n dy/dA_nd, M_n = ReLU((1/D) sum_d alpha_d A_nd), s = mean_n M_n.

All cuts are served by ONE forward pass (which returns the logits and every cut's activation) and
ONE backward pass (gradients w.r.t. those activations only; parameters are frozen so no weight
gradients are computed). Only per-class sums of s are kept, so memory does not grow with the number
of images, and a class subset's CUI is the ratio of its sums. The sums are also kept exactly
(:mod:`isplit_export.ranking.exactsum`), so the CUI does not depend on the order in which images were added
or on how many processes (:mod:`isplit_export.distributed`) shared them out.
of images, and a class subset's CUI is the ratio of its sums. With ``bootstrap`` replicates, a
streaming Poisson bootstrap (:mod:`isplit_export.ranking.bootstrap`) keeps B weighted replicate sums per class
key as well, for confidence intervals and rank stability.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from isplit_export.data import ImageSet, Shard
from isplit_export.errors import BadInputError
from isplit_export.progress import stage as progress_stage
from isplit_export.ranking import exactsum
from isplit_export.ranking.bootstrap import BootstrapSums
from isplit_export.ranking.graph import TracedModel

log = logging.getLogger(__name__)

SCORES = ("top", "label")


@dataclass
class Importance:
    """Streaming per-class sums of the per-image score s(x, l) for every cut.

    ``exact`` holds the sums exactly (units of 2**-1074), so :meth:`cui` does not depend on the
    order of the images. ``boot`` (optional) holds the Poisson-bootstrap replicate sums of the same
    images.
    """

    num_cuts: int
    counts: dict[int, int] = field(default_factory=dict)
    exact: dict[int, list[int]] = field(default_factory=dict)
    boot: BootstrapSums | None = None

    @property
    def images(self) -> int:
        return sum(self.counts.values())

    @property
    def sums(self) -> dict[int, np.ndarray]:
        """Per-class float64 sums of the scores (correctly rounded from the exact sums)."""
        return {k: exactsum.to_float(v) for k, v in self.exact.items()}

    def add(self, keys: torch.Tensor, scores: torch.Tensor, indices: Sequence[int] | None = None) -> None:
        """Accumulate ``scores`` [B, num_cuts] under class ``keys`` [B]; ``indices`` are the images'
        global indices, which fix their bootstrap weights (default: the order they were added in)."""
        s = scores.detach().double().cpu().numpy()
        key_list = keys.tolist()
        for key, fixed in zip(key_list, exactsum.to_fixed(s), strict=True):
            self.counts[key] = self.counts.get(key, 0) + 1
            exactsum.add_into(self.exact.setdefault(key, [0] * self.num_cuts), fixed)
        if self.boot is not None:
            self.boot.add(key_list, s, indices)

    def merge(self, other: Importance) -> None:
        """Add ``other`` (the same cuts, another part of the images) into this one."""
        if other.num_cuts != self.num_cuts:
            raise ValueError(f"cannot merge importance of {other.num_cuts} cuts into {self.num_cuts}")
        for key in sorted(other.exact):
            self.counts[key] = self.counts.get(key, 0) + other.counts[key]
            exactsum.add_into(self.exact.setdefault(key, [0] * self.num_cuts), other.exact[key])
        if (self.boot is None) != (other.boot is None):
            raise ValueError("cannot merge importance with and without bootstrap sums")
        if self.boot is not None and other.boot is not None:
            self.boot.merge(other.boot)

    def replicate_cui(self, classes: Sequence[int] | None = None) -> np.ndarray | None:
        """Bootstrap replicates of :meth:`cui` ``[B, cuts]`` (NaN rows: empty replicate), or None without
        a bootstrap."""
        if self.boot is None or self.boot.replicates == 0:
            return None
        return self.boot.replicate_cui(classes)

    def cui_ci(self, classes: Sequence[int] | None = None) -> np.ndarray | None:
        """The 95 % percentile bootstrap interval of :meth:`cui` per cut ``[cuts, 2]``, or None."""
        from isplit_export.stats import percentile_ci_columns

        reps = self.replicate_cui(classes)
        return None if reps is None else percentile_ci_columns(reps)

    def cui(self, classes: Sequence[int] | None = None) -> np.ndarray:
        """CUI per cut over all images, or over the images whose class key is in ``classes``."""
        keys = list(self.exact) if classes is None else [k for k in classes if k in self.exact]
        n = sum(self.counts[k] for k in keys)
        if n == 0:
            raise BadInputError("no images of the requested classes: pick classes that occur in the data")
        return exactsum.to_float(exactsum.sum_rows((self.exact[k] for k in keys), self.num_cuts), n)


def gradcam_scores(
    activation: torch.Tensor, gradient: torch.Tensor, layout: str = "nchw", class_tokens: int = 0
) -> torch.Tensor:
    """s(x, l) for a batch: mean over positions of ReLU(channel-mean of alpha_c * A_c) -> [B].

    ``layout`` says where the channels are: ``nchw`` [B,C,H,W], ``nhwc`` [B,H,W,C], or ``tokens``
    [B, class_tokens+N, D] whose first ``class_tokens`` tokens are dropped and whose N patch tokens
    are the positions (D the channels)."""
    if layout == "nchw":  # [B, channels, positions]: contract over channels without a transposed copy
        a, g = activation.flatten(2), gradient.flatten(2)
        cam = torch.einsum("bc,bcn->bn", g.mean(dim=2), a) / a.shape[1]
    else:
        if layout == "nhwc":
            a, g = activation.flatten(1, 2), gradient.flatten(1, 2)
        elif layout == "tokens":
            a, g = activation[:, class_tokens:], gradient[:, class_tokens:]
        else:
            raise ValueError(f"unknown layout {layout!r}")
        cam = torch.einsum("bc,bnc->bn", g.mean(dim=1), a) / a.shape[2]  # a, g: [B, positions, channels]
    return cam.clamp_min(0).mean(dim=1)


def target_logits(
    logits: torch.Tensor, labels: torch.Tensor, score: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The class each image's score is taken for, and the sum of those logits (for one backward)."""
    if score == "top":
        target = logits.argmax(dim=1)
    elif score == "label":
        if bool((labels < 0).any()):
            raise BadInputError(
                "--score label needs labelled images: use an ImageFolder whose folders are model classes, or pass --class-map"
            )
        target = labels.to(logits.device)
    else:
        raise BadInputError(f"unknown --score '{score}': choose one of {', '.join(SCORES)}")
    return target, logits.gather(1, target[:, None]).sum()


def compute_importance(
    traced: TracedModel,
    images: ImageSet,
    *,
    score: str = "top",
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    progress: bool = False,
    workers: int = 0,
    shard: Shard | None = None,
    bootstrap: int = 0,
    seed: int = 0,
) -> Importance:
    """Stream ``images`` through the model once and return the per-class score sums of every cut.

    Class keys are the image labels when known, else the model's top-1 prediction (so class subsets
    also work on unlabelled data). ``workers`` DataLoader processes decode the images; with
    ``shard`` only that part of the images is read (and an empty part is not an error: the caller
    checks the total after adding up the parts). ``bootstrap`` > 0 also keeps that many Poisson-bootstrap
    replicate sums (weights seeded by ``seed``).
    """
    if score not in SCORES:
        raise BadInputError(f"unknown --score '{score}': choose one of {', '.join(SCORES)}")
    capture = on_device(traced.capture_module(), device)
    step = grad_batch(traced, batch_size)
    result = Importance(len(traced.cuts))
    if bootstrap > 0:
        result.boot = BootstrapSums(bootstrap, len(traced.cuts), seed=seed)
    n = len(images) if shard is None else len(shard.indices(len(images)))
    bar = progress_stage("importance over the images", total=n, unit="img", report=progress)
    pin = torch.device(device).type == "cuda"
    for batch in images.indexed_batches(batch_size, workers=workers, pin_memory=pin, shard=shard):
        for part, scores, keys in score_parts(capture, batch.x, batch.labels, score, step, device, pin):
            result.add(keys, scores, batch.indices[part].tolist())  # global indices: shard-independent
        bar.advance(len(batch))
    bar.close()
    if result.images == 0 and shard is None:
        raise BadInputError(f"no readable images in {images.source}: pass --data with image files")
    return result


def on_device(capture: nn.Module, device: str | torch.device) -> nn.Module:
    """:meth:`TracedModel.capture_module` on ``device``: there a copy, because the traced graph shares the
    model's weights, which stay where they are; the copy keeps the capture's ``cut_layouts`` (a deep copy
    of a ``GraphModule`` drops attributes set on it)."""
    if torch.device(device).type == "cpu":
        return capture
    moved = copy.deepcopy(capture).to(device)
    setattr(moved, "cut_layouts", getattr(capture, "cut_layouts", None))  # noqa: B010 (see capture_module)
    return moved


GRAD_MEMORY_BYTES = 1 << 30
"""What one forward + backward of :func:`batch_scores` may keep alive (activations and their gradients):
a batch is scored in parts of at most this size (vgg16 at 224 px: 4 images, 115 MB of activations each),
so the ranking's memory does not grow with ``--batch-size``. Each image's score is its own, whatever the
part it is in."""


def grad_batch(traced: TracedModel, batch_size: int) -> int:
    """How many images :func:`compute_importance` scores at once: ``batch_size``, or fewer when their
    activations and gradients (twice :attr:`TracedModel.activation_bytes` each) would pass
    :data:`GRAD_MEMORY_BYTES`; at least 1."""
    return max(1, min(batch_size, GRAD_MEMORY_BYTES // max(2 * traced.activation_bytes, 1)))


def score_parts(
    capture: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    score: str,
    step: int,
    device: str | torch.device = "cpu",
    pin: bool = False,
) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
    """:func:`batch_scores` over ``x`` in parts of ``step`` images (:func:`grad_batch`), each moved to
    ``device``: ``(part, scores, class keys)`` per part."""
    for i in range(0, len(x), step):
        part = slice(i, i + step)
        yield (part, *batch_scores(capture, x[part].to(device, non_blocking=pin), labels[part], score))


def batch_scores(
    capture: nn.Module, x: torch.Tensor, labels: torch.Tensor, score: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward + one backward: ``(scores [B, cuts], class keys [B])`` for one batch.

    ``capture`` is :meth:`TracedModel.capture_module`, whose ``cut_layouts`` say how to read each
    activation (all ``nchw`` for a module without them)."""
    x = x.detach().requires_grad_(True)  # parameters are frozen: this gives autograd a graph to walk
    with torch.enable_grad():
        logits, *acts = capture(x)
        target, y = target_logits(logits, labels, score)
        grads = torch.autograd.grad(y, acts)
    layouts = getattr(capture, "cut_layouts", None) or [("nchw", 0)] * len(acts)
    with torch.no_grad():
        scores = torch.stack(
            [gradcam_scores(a, g, *lay) for a, g, lay in zip(acts, grads, layouts, strict=True)], dim=1
        )
    keys = labels if bool((labels >= 0).all()) else target.cpu()
    return scores, keys


def reference_cui(
    traced: TracedModel, x: torch.Tensor, labels: torch.Tensor | None = None, score: str = "top"
) -> np.ndarray:
    """The straightforward I-Split algorithm, for tests and benchmarks: batch 1, and for every cut l
    a fresh forward of layers 0..l (the head) and l..end (the tail) plus a backward. O(images x cuts)."""
    total = np.zeros(len(traced.cuts))
    labels = labels if labels is not None else torch.full((len(x),), -1)
    for cut in traced.cuts:
        head, tail = traced.split(cut)
        for i in range(len(x)):
            with torch.no_grad():
                a = head(x[i : i + 1])
            a.requires_grad_(True)
            with torch.enable_grad():
                _, y = target_logits(tail(a), labels[i : i + 1], score)
                (g,) = torch.autograd.grad(y, [a])
            total[cut.index] += float(gradcam_scores(a.detach(), g, cut.layout, cut.class_tokens)[0])
    return total / len(x)


def cde(traced: TracedModel) -> np.ndarray:
    """The layer-size baseline: boundary bytes (fp32, batch 1) at every cut."""
    return np.array([c.boundary_bytes for c in traced.cuts], dtype=np.int64)
