"""A learned bottleneck at a cut: an encoder ending the head, a decoder starting the tail.

This is how split computing implements a split (head network distillation, BottleFit, sc2bench):
the boundary tensor is squeezed to a small *code* by an encoder on the device and expanded back by
a decoder on the server. The model's own weights stay frozen (``finetune="tail"`` also adapts the
tail); the encoder and decoder are trained by distillation from the frozen full model:

    loss = T^2 * KL(softmax(teacher / T) || softmax(student / T)) + w * MSE((A' - A) / std_c)

on random resized crops and flips of the *train* images (:mod:`isplit_export.bottleneck.holdout`), seeded and
deterministic. The code travels in the boundary encoding (uint8 by default with a bottleneck).

Size specs (``--bottleneck``): a ratio of the boundary's elements (``1/16``, ``0.0625``) or a fixed
code size per image (``64B``, ``2KiB``, ``1MiB``), the same at every cut. A fixed size is a link's
budget and the fair way to set CUI against CDE; under a ratio the code grows with the layer.

The code's shape at an NCHW cut of shape (C, H, W) and a budget of E code elements
(:func:`code_shape`): ``k x k`` patches at stride ``k``, ``k`` the smallest of 1, 2, 4, 8 that leaves
at most E positions, and ``K = E // positions`` code channels (at most ``C*k*k``). The encoder and
decoder *start* as the probe's linear code (patch PCA, :mod:`isplit_export.bottleneck.pca`): a
``k x k`` stride-``k`` conv to K channels, and its transposed conv back, plus a nonlinear residual
(nearest upsampling, 3x3 conv ``K -> C``, ReLU, 1x1 conv ``C -> C``) that starts at zero, and a ReLU
when the boundary is non-negative. Training keeps the checkpoint that scores best on a validation
slice of the train images, the untrained code included.

Other layouts are viewed channels-first around the same encoder and decoder: an NHWC map
``[B, H, W, C]`` as ``[B, C, H, W]``, a token sequence ``[B, T, D]`` as ``[B, D, T, 1]`` (the tokens
are the positions, so its code keeps every token and reduces D; no stride). The code itself is NCHW.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from isplit_export.bottleneck.pca import (
    PatchPCA,
    PcaDecoder,
    PcaEncoder,
    channels_first,
    code_encoding,
    fit_at_cut,
)
from isplit_export.errors import BadInputError
from isplit_export.exporting.encoding import (
    BoundaryEncoding,
    calibrate_encoding,
    decode_array,
    element_bytes,
    encode_array,
)
from isplit_export.models import forward_batched
from isplit_export.numbers import rounded
from isplit_export.options_bottleneck import DEFAULT_ENCODING, BottleneckOptions, SizeSpec
from isplit_export.progress import stage as progress_stage

if TYPE_CHECKING:
    from isplit_export.ranking.graph import Cut

MAX_STRIDE = 8
"""Largest spatial stride of the encoder: beyond it the decoder has too little to upsample from."""


@dataclass(frozen=True)
class CodeShape:
    """The encoder's shape at one cut: ``channels`` code channels after a ``stride``-``stride`` conv.

    ``boundary_shape`` is the cut's boundary viewed channels-first (:func:`channels_first`)."""

    boundary_shape: tuple[int, int, int]
    channels: int
    stride: int
    kernel: int
    code_shape: tuple[int, int, int]
    bytes_per_element: int
    layout: str = "nchw"

    @property
    def code_elements(self) -> int:
        return int(math.prod(self.code_shape))

    @property
    def code_bytes(self) -> int:
        return self.code_elements * self.bytes_per_element

    def to_json(self) -> dict[str, Any]:
        return {
            "layout": self.layout,
            "boundary_shape": list(self.boundary_shape),
            "code_shape": list(self.code_shape),
            "channels": self.channels,
            "stride": self.stride,
            "kernel": self.kernel,
            "code_elements": self.code_elements,
        }


def code_shape(cut: Cut, spec: SizeSpec, encoding: str) -> CodeShape:
    """Size the encoder at ``cut`` for ``spec``; a size the encoder cannot reach is a one-line error."""
    layout = getattr(cut, "layout", "nchw")
    dims = [int(d) for d in cut.shape]
    if layout in ("nchw", "nhwc") and len(dims) == 3:
        c, h, w = dims if layout == "nchw" else (dims[2], dims[0], dims[1])
    elif layout == "tokens" and len(dims) == 2:
        (h, c), w = dims, 1
    else:
        raise BadInputError(
            f"cut {cut.index} ({cut.node}) has boundary shape {dims} ({layout}): --bottleneck needs an NCHW, "
            "NHWC or token feature map"
        )
    bpe = element_bytes(encoding)
    total = c * h * w
    budget = spec.elements(total, bpe)
    if budget > total:
        raise BadInputError(
            f"--bottleneck {spec.text} is larger than cut {cut.index} ({cut.node})'s boundary "
            f"({c}x{h}x{w} = {total} elements, {total * bpe} B as {encoding}): pass a smaller size"
        )
    strides = [
        s for s in (1, 2, 4, MAX_STRIDE) if s <= max(h, w) and (s == 1 or (h // s >= 1 and w // s >= 1))
    ]
    for s in strides:
        hs, ws = max(h // s, 1), max(w // s, 1)
        k = min(budget // (hs * ws), c * s * s)  # at most the patch vector's length C*k*k
        if k >= 1:
            return CodeShape((c, h, w), k, s, 1 if s == 1 else s, (k, hs, ws), bpe, layout)
    s = strides[-1]
    smallest = max(h // s, 1) * max(w // s, 1) * bpe
    raise BadInputError(
        f"--bottleneck {spec.text} is smaller than the encoder can reach at cut {cut.index} ({cut.node}): "
        f"the smallest code there is {smallest} B (1 channel at stride {s}): pass at least {smallest}B"
    )


class BottleneckHead(nn.Module):
    """The cut's head followed by the encoder: input -> code."""

    def __init__(self, head: nn.Module, encoder: PcaEncoder) -> None:
        super().__init__()
        self.head, self.encoder = head, encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.head(x))


class BottleneckTail(nn.Module):
    """The decoder followed by the cut's tail: code -> logits."""

    def __init__(self, decoder: PcaDecoder, tail: nn.Module) -> None:
        super().__init__()
        self.decoder, self.tail = decoder, tail

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.tail(self.decoder(z))


@dataclass
class TrainedBottleneck:
    """A trained bottleneck pair at one cut, its codec (calibrated on the train codes) and its training summary."""

    shape: CodeShape
    head: BottleneckHead
    tail: BottleneckTail
    encoding: BoundaryEncoding
    summary: dict[str, Any]
    seconds: float
    initial: tuple[BottleneckHead, BottleneckTail, BoundaryEncoding] | None = None
    """The untrained pair (the probe's code) and its codec: what the probe scored."""

    def initial_logits(self, x: torch.Tensor, batch_size: int = 64) -> np.ndarray:
        """What the untrained (probe) pair computes on ``x``, through its codec."""
        assert self.initial is not None
        h, t, codec = self.initial
        z = encode_array(forward_batched(h, x, batch_size).numpy(), codec)
        zq = torch.from_numpy(np.ascontiguousarray(decode_array(z, codec), dtype=np.float32))
        return forward_batched(t, zq, batch_size).numpy()

    def code(self, x: torch.Tensor, batch_size: int = 64) -> np.ndarray:
        """The float code of inputs ``x`` (before the boundary encoding)."""
        return forward_batched(self.head, x, batch_size).numpy()

    def logits_from_code(self, code: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Tail logits for a *transmitted* code (uint8/fp16/fp32 as the encoding sends it)."""
        z = torch.from_numpy(np.ascontiguousarray(decode_array(code, self.encoding), dtype=np.float32))
        return forward_batched(self.tail, z, batch_size).numpy()

    def logits(self, x: torch.Tensor, batch_size: int = 64) -> np.ndarray:
        """What the deployed pair computes: head+encoder, the boundary codec, decoder+tail (PyTorch)."""
        return self.logits_from_code(encode_array(self.code(x, batch_size), self.encoding), batch_size)


@contextlib.contextmanager
def deterministic() -> Iterator[None]:
    """Deterministic torch kernels for the duration (restores the previous setting)."""
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev)


def augment(x: torch.Tensor, gen: torch.Generator, scale: tuple[float, float] = (0.35, 1.0)) -> torch.Tensor:
    """Random resized crops (area ``scale``, aspect 3/4..4/3) back to the input size, and horizontal flips."""
    n, _, h, w = x.shape
    out = []
    r = torch.rand(n, 5, generator=gen, dtype=torch.float64).tolist()
    for i in range(n):
        area = h * w * (scale[0] + (scale[1] - scale[0]) * r[i][0])
        aspect = math.exp(math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * r[i][1])
        cw = min(w, max(1, round(math.sqrt(area * aspect))))
        ch = min(h, max(1, round(math.sqrt(area / aspect))))
        x0, y0 = int(r[i][2] * (w - cw + 1)), int(r[i][3] * (h - ch + 1))
        crop = x[i : i + 1, :, y0 : y0 + ch, x0 : x0 + cw]
        crop = F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)
        out.append(crop.flip(-1) if r[i][4] < 0.5 else crop)
    return torch.cat(out)


def train(
    cut: Cut,
    head: nn.Module,
    tail: nn.Module,
    x_train: torch.Tensor,
    options: BottleneckOptions,
    *,
    seed: int,
    repeat: int = 0,
    encoding: str = DEFAULT_ENCODING,
    batch_size: int = 64,
    progress: bool = False,
    init: PatchPCA | None = None,
) -> TrainedBottleneck:
    """Train the bottleneck at ``cut`` from the probe's linear code, by distillation from the frozen model.

    The encoder and decoder start as the patch-PCA code of the train images (``init``, or fitted here
    with :func:`isplit_export.bottleneck.pca.fit_at_cut`), so step 0 sends what the probe sends. A
    validation slice of ``x_train`` (``options.validation``, chosen by ``seed`` only) takes no gradient
    steps. Adam runs all ``train_steps`` with a cosine learning-rate decay to 0; every ``train_steps/8``
    steps the pair is scored on the slice through the real codec, and the checkpoint kept is the one with
    the lowest KL to the full model among those that agree with it at least as often as the initialisation
    (the initialisation included): training never returns a pair worse than its start on the slice. KL
    chooses because a 30-image slice's agreement moves in steps of one image.
    Deterministic for ``(seed, cut.index, repeat)`` (:func:`cut_seed`; the global RNG is left as it was).
    """
    p = code_shape(cut, options.spec, encoding)
    run_seed = cut_seed(seed, cut.index, repeat)
    start = time.perf_counter()
    head = copy.deepcopy(head).eval()
    teacher_tail = copy.deepcopy(tail).eval()
    student_tail = copy.deepcopy(tail).eval()
    for module in (head, teacher_tail, student_tail):
        for param in module.parameters():
            param.requires_grad_(False)
    if options.finetune == "tail":
        for param in student_tail.parameters():
            param.requires_grad_(True)
    n = len(x_train)
    with deterministic(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(run_seed)
        gen = torch.Generator().manual_seed(run_seed)
        with torch.no_grad():
            acts = [head(x_train[i : i + batch_size]) for i in range(0, n, batch_size)]
        pca = init if init is not None else fit_at_cut(acts, p.kernel, p.channels, p.layout, p.boundary_shape)
        a_all = torch.cat(acts)
        a = channels_first(a_all, p.layout).double()
        std = a.std(dim=(0, 2, 3))
        std = std.clamp_min(0.01 * float(std.mean()) + 1e-12)  # near-dead channels must not dominate the MSE
        inv_std = (1.0 / std.float()).reshape(1, -1, 1, 1)
        encoder, decoder = PcaEncoder(pca), PcaDecoder(pca)
        initial = (copy.deepcopy(encoder), copy.deepcopy(decoder), copy.deepcopy(student_tail))
        # the validation slice is a function of ``seed`` alone (like the held-out part): repeats vary the
        # training's randomness (residual init, batch order, augmentation), not the data it is chosen on
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
        n_val = max(1, min(n - 1, round(n * options.validation)))
        val_idx, fit_idx = sorted(perm[:n_val]), perm[n_val:]
        with torch.no_grad():
            teacher_val = teacher_tail(a_all[val_idx])

        def score(codec: BoundaryEncoding) -> tuple[int, float]:
            """(agreements with the full model, -KL) on the validation slice, through the codec."""
            with torch.no_grad():
                z = encode_array(encoder(a_all[val_idx]).numpy(), codec)
                zq = torch.from_numpy(np.ascontiguousarray(decode_array(z, codec), dtype=np.float32))
                out = student_tail(decoder(zq))
                kl = F.kl_div(
                    F.log_softmax(out, 1),
                    F.log_softmax(teacher_val, 1),
                    log_target=True,
                    reduction="batchmean",
                )
                return int((out.argmax(1) == teacher_val.argmax(1)).sum()), -float(kl)

        def snapshot() -> list[dict[str, torch.Tensor]]:
            return [copy.deepcopy(m.state_dict()) for m in (encoder, decoder, student_tail)]

        codec0 = code_encoding(encoding)
        best_score, best_step, best_state, best_codec = score(codec0), 0, snapshot(), codec0
        init_score = best_score
        groups: list[dict[str, Any]] = [
            {"params": [*encoder.parameters(), *decoder.parameters()], "lr": options.lr}
        ]
        if options.finetune == "tail":
            groups.append({"params": list(student_tail.parameters()), "lr": options.lr * 0.1})
        opt = torch.optim.Adam(groups)
        total = max(options.train_steps, 1)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda i: 0.5 * (1.0 + math.cos(math.pi * min(i, total) / total))
        )
        t = options.temperature
        every = max(1, options.train_steps // 8)
        order: list[int] = []
        step = 0
        last = {"loss": math.nan, "kl": math.nan, "mse": math.nan}
        bar = progress_stage(
            f"train the bottleneck at {cut.node}", total=options.train_steps, unit="steps", report=progress
        )
        for step in range(1, options.train_steps + 1):
            if len(order) < options.train_batch:
                order += [fit_idx[i] for i in torch.randperm(len(fit_idx), generator=gen).tolist()]
            idx, order = order[: options.train_batch], order[options.train_batch :]
            xb = augment(x_train[idx], gen)
            with torch.no_grad():
                ab = head(xb)
                teacher = teacher_tail(ab)
            recon = decoder(encoder(ab))
            student = student_tail(recon)
            kl = F.kl_div(
                F.log_softmax(student / t, dim=1),
                F.log_softmax(teacher / t, dim=1),
                log_target=True,
                reduction="batchmean",
            ) * (t * t)
            mse = (channels_first(recon - ab, p.layout) * inv_std).pow(2).mean()
            loss = kl + options.mse_weight * mse
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            last = {"loss": float(loss.detach()), "kl": float(kl.detach()), "mse": float(mse.detach())}
            bar.advance(1)
            if step % every == 0 or step == options.train_steps:
                with torch.no_grad():
                    codec = calibrate_encoding(encoding, encoder(a_all).numpy())
                sc = score(codec)
                if sc[0] >= init_score[0] and sc[1] > best_score[1]:  # lower KL, agreeing at least as often
                    best_score, best_step, best_state, best_codec = sc, step, snapshot(), codec
        bar.close()
    for module, state in zip((encoder, decoder, student_tail), best_state, strict=True):
        module.load_state_dict(state)
    for module in (encoder, decoder, student_tail, *initial):
        module.eval()
        for param in module.parameters():
            param.requires_grad_(False)
    # eval() on the wrappers too: torch.onnx.export restores the *top* module's mode recursively afterwards
    pair_head, pair_tail = BottleneckHead(head, encoder).eval(), BottleneckTail(decoder, student_tail).eval()
    summary = {
        "init": "patch PCA (the probe's code)",
        "steps": step,
        "best_step": best_step,
        "kept": "initialisation" if best_step == 0 else "trained",
        "validation": {
            "images": n_val,
            "init_agreement": rounded(init_score[0] / n_val, finite=True),
            "best_agreement": rounded(best_score[0] / n_val, finite=True),
            "init_kl": rounded(-init_score[1], finite=True),
            "best_kl": rounded(-best_score[1], finite=True),
        },
        "final_loss": rounded(last["loss"], finite=True),
        "final_kl": rounded(last["kl"], finite=True),
        "final_mse": rounded(last["mse"], finite=True),
        "train_images": n - n_val,
        "seed": run_seed,
        "repeat": repeat,
    }
    init_pair = (
        BottleneckHead(head, initial[0]).eval(),
        BottleneckTail(initial[1], initial[2]).eval(),
        codec0,
    )
    return TrainedBottleneck(
        p, pair_head, pair_tail, best_codec, summary, time.perf_counter() - start, initial=init_pair
    )


def config(options: BottleneckOptions, p: CodeShape, encoding: BoundaryEncoding) -> dict[str, Any]:
    """The manifest's ``bottleneck`` block for one split (byte-reproducible: no timings)."""
    return {
        **options.spec.to_json(),
        "finetune": options.finetune,
        "train_steps": options.train_steps,
        "train_batch": options.train_batch,
        "temperature": options.temperature,
        "mse_weight": options.mse_weight,
        "lr": options.lr,
        "holdout": options.holdout,
        "code_encoding": encoding.name,
        "code_bytes_per_image": p.code_bytes,
        **p.to_json(),
    }


def cut_seed(seed: int, cut_index: int, repeat: int = 0) -> int:
    """The training seed of the bottleneck at ``cut_index``: a function of (seed, cut index, repeat) only."""
    import hashlib

    key = f"isplit-bottleneck:{seed}:{cut_index}" + (f":{repeat}" if repeat else "")
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little")
