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
of images, and a class subset's CUI is the ratio of its sums.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .data import ImageSet
from .errors import BadInputError
from .graph import TracedModel

log = logging.getLogger(__name__)

SCORES = ("top", "label")


@dataclass
class Importance:
    """Streaming per-class sums of the per-image score s(x, l) for every cut."""

    num_cuts: int
    sums: dict[int, np.ndarray] = field(default_factory=dict)
    counts: dict[int, int] = field(default_factory=dict)

    @property
    def images(self) -> int:
        return sum(self.counts.values())

    def add(self, keys: torch.Tensor, scores: torch.Tensor) -> None:
        """Accumulate ``scores`` [B, num_cuts] under class ``keys`` [B]."""
        s = scores.detach().double().cpu().numpy()
        for key, row in zip(keys.tolist(), s, strict=True):
            self.sums.setdefault(key, np.zeros(self.num_cuts))
            self.sums[key] += row
            self.counts[key] = self.counts.get(key, 0) + 1

    def cui(self, classes: Sequence[int] | None = None) -> np.ndarray:
        """CUI per cut over all images, or over the images whose class key is in ``classes``."""
        keys = list(self.sums) if classes is None else [k for k in classes if k in self.sums]
        n = sum(self.counts[k] for k in keys)
        if n == 0:
            raise BadInputError("no images of the requested classes: pick classes that occur in the data")
        return np.sum([self.sums[k] for k in keys], axis=0) / n


def gradcam_scores(
    activation: torch.Tensor, gradient: torch.Tensor, layout: str = "nchw", class_tokens: int = 0
) -> torch.Tensor:
    """s(x, l) for a batch: mean over positions of ReLU(channel-mean of alpha_c * A_c) -> [B].

    ``layout`` says where the channels are: ``nchw`` [B,C,H,W], ``nhwc`` [B,H,W,C], or ``tokens``
    [B, class_tokens+N, D] whose first ``class_tokens`` tokens are dropped and whose N patch tokens
    are the positions (D the channels)."""
    if layout == "nchw":
        a, g = activation.flatten(2).transpose(1, 2), gradient.flatten(2).transpose(1, 2)
    elif layout == "nhwc":
        a, g = activation.flatten(1, 2), gradient.flatten(1, 2)
    elif layout == "tokens":
        a, g = activation[:, class_tokens:], gradient[:, class_tokens:]
    else:
        raise ValueError(f"unknown layout {layout!r}")
    # a, g: [B, positions, channels]
    alpha = g.mean(dim=1)
    cam = torch.einsum("bc,bnc->bn", alpha, a) / a.shape[2]
    return cam.clamp_min(0).mean(dim=1)


def target_logits(logits: torch.Tensor, labels: torch.Tensor, score: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The class each image's score is taken for, and the sum of those logits (for one backward)."""
    if score == "top":
        target = logits.argmax(dim=1)
    elif score == "label":
        if bool((labels < 0).any()):
            raise BadInputError("--score label needs labelled images: use an ImageFolder whose folders are model classes")
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
) -> Importance:
    """Stream ``images`` through the model once and return the per-class score sums of every cut.

    Class keys are the image labels when known, else the model's top-1 prediction (so class subsets
    also work on unlabelled data).
    """
    if score not in SCORES:
        raise BadInputError(f"unknown --score '{score}': choose one of {', '.join(SCORES)}")
    capture = traced.capture_module().to(device)
    result = Importance(len(traced.cuts))
    bar = _progress(len(images), progress)
    for x, labels, _ in images.batches(batch_size):
        scores, keys = batch_scores(capture, x.to(device), labels, score)
        result.add(keys, scores)
        bar.update(len(x))
    bar.close()
    if result.images == 0:
        raise BadInputError(f"no readable images in {images.source}: pass --data with image files")
    return result


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


def reference_cui(traced: TracedModel, x: torch.Tensor, labels: torch.Tensor | None = None, score: str = "top") -> np.ndarray:
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


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool) -> _NoBar:
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    bar: _NoBar = tqdm(total=total, unit="img", desc="ranking", leave=False)
    return bar
