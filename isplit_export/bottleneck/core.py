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

Encoder at an NCHW cut of shape (C, H, W) and a budget of E code elements: a fixed per-channel
normalisation, then a ``k x k`` conv with stride ``s`` to ``K`` channels, with the smallest
``s`` in 1, 2, 4, 8 for which ``K = E // (H//s * W//s)`` is at least 1 (``K <= C``: undercomplete).
Decoder: nearest upsampling back to (H, W) when ``s > 1``, 3x3 conv ``K -> C``, ReLU, 1x1 conv
``C -> C``, the inverse normalisation, and a ReLU when the boundary is non-negative (after a ReLU).

Other layouts are viewed channels-first around the same encoder and decoder: an NHWC map
``[B, H, W, C]`` as ``[B, C, H, W]``, a token sequence ``[B, T, D]`` as ``[B, D, T, 1]`` (the tokens
are the positions, so its code keeps every token and reduces D; no stride). The code itself is NCHW.
"""

from __future__ import annotations

import contextlib
import copy
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

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

if TYPE_CHECKING:
    from isplit_export.ranking.graph import Cut

FINETUNE = ("none", "tail")
"""``--finetune`` values: train only the encoder/decoder, or also the tail's own weights."""

MAX_STRIDE = 8
"""Largest spatial stride of the encoder: beyond it the decoder has too little to upsample from."""

DEFAULT_ENCODING = "int8"
"""Boundary encoding of the code when ``--bottleneck`` is given and ``--boundary`` is not."""

_UNITS = {"b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2}


@dataclass(frozen=True)
class SizeSpec:
    """A parsed ``--bottleneck`` value: ``kind`` ``ratio`` (of the boundary's elements) or ``bytes`` per image."""

    kind: str
    value: float
    text: str

    def elements(self, boundary_elements: int, bytes_per_element: int) -> int:
        """Code elements this spec allows at a boundary of ``boundary_elements`` (may be 0: unreachable)."""
        if self.kind == "ratio":
            return math.floor(self.value * boundary_elements + 1e-9)
        return int(self.value) // bytes_per_element

    def to_json(self) -> dict[str, Any]:
        return {"spec": self.text, "kind": self.kind, "value": self.value}


def parse_size(text: str) -> SizeSpec:
    """Parse ``1/16``, ``0.0625`` (ratios in (0, 1]) or ``64B``, ``2KiB``, ``1MB`` (bytes per image)."""
    t = str(text).strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KkMm]i?[Bb]|[Bb])", t)
    if m:
        n = float(m.group(1)) * _UNITS[m.group(2).lower()]
        if n < 1 or n != int(n):
            raise BadInputError(
                f"--bottleneck {t}: a size must be a whole number of bytes >= 1 (e.g. 64B, 2KiB)"
            )
        return SizeSpec("bytes", float(int(n)), t)
    try:
        ratio = float(Fraction(t)) if "/" in t else float(t)
    except (ValueError, ZeroDivisionError) as err:
        raise BadInputError(
            f"--bottleneck {t!r} is neither a ratio (1/16, 0.0625) nor a size (64B, 2KiB): pass one of those"
        ) from err
    if not 0.0 < ratio <= 1.0 or not math.isfinite(ratio):
        raise BadInputError(
            f"--bottleneck {t}: a ratio must be in (0, 1] (e.g. 1/16); for a fixed size add a unit (e.g. {t}B)"
        )
    return SizeSpec("ratio", ratio, t)


@dataclass(frozen=True)
class BottleneckOptions:
    """How the bottleneck is sized and trained (``ExportOptions.bottleneck``, ``StudyOptions.bottleneck``).

    ``size``: ratio or bytes per image (:func:`parse_size`); ``finetune``: ``none`` or ``tail``;
    ``train_steps`` / ``train_batch``: the budget (defaults sized for a 2-core CPU); ``holdout``: the
    fraction of images held out from training (measured on, never trained on); ``patience``: steps
    without improvement of the smoothed loss before stopping early.
    """

    size: str = "1/16"
    finetune: str = "none"
    train_steps: int = 64
    train_batch: int = 8
    temperature: float = 4.0
    mse_weight: float = 1.0
    lr: float = 2e-3
    holdout: float = 0.25
    patience: int = 20

    def __post_init__(self) -> None:
        parse_size(self.size)
        if self.finetune not in FINETUNE:
            raise BadInputError(f"--finetune {self.finetune!r}: choose {' or '.join(FINETUNE)}")
        if self.train_steps < 1 or self.train_batch < 1:
            raise BadInputError(
                f"--train-steps {self.train_steps} / --train-batch {self.train_batch}: pass positive numbers"
            )
        if not 0.0 < self.holdout < 1.0:
            raise BadInputError(f"held-out fraction {self.holdout}: pass a fraction strictly between 0 and 1")
        if self.temperature <= 0 or self.lr <= 0 or self.mse_weight < 0 or self.patience < 1:
            raise BadInputError("bottleneck temperature, lr and patience must be positive, mse_weight >= 0")

    @property
    def spec(self) -> SizeSpec:
        return parse_size(self.size)


def as_bottleneck(value: BottleneckOptions | str | None) -> BottleneckOptions | None:
    """Accept a :class:`BottleneckOptions`, a size spec string (``"1/16"``) or None."""
    if value is None or isinstance(value, BottleneckOptions):
        return value
    if isinstance(value, str):
        return BottleneckOptions(size=value)
    raise BadInputError(
        f"bottleneck must be a size spec like '1/16' or BottleneckOptions, got {type(value).__name__}"
    )


def channels_first(a: torch.Tensor, layout: str) -> torch.Tensor:
    """A boundary of ``layout`` viewed as ``[B, C, H, W]`` (NHWC permuted, tokens ``[B, D, T, 1]``)."""
    if layout == "nhwc":
        return a.permute(0, 3, 1, 2)
    if layout == "tokens":
        return a.transpose(1, 2).unsqueeze(-1)
    return a


def from_channels_first(a: torch.Tensor, layout: str) -> torch.Tensor:
    """The inverse of :func:`channels_first`."""
    if layout == "nhwc":
        return a.permute(0, 2, 3, 1)
    if layout == "tokens":
        return a.squeeze(-1).transpose(1, 2)
    return a


@dataclass(frozen=True)
class Plan:
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


def plan(cut: Cut, spec: SizeSpec, encoding: str) -> Plan:
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
        k = min(budget // (hs * ws), c)
        if k >= 1:
            return Plan((c, h, w), k, s, 1 if s == 1 else s, (k, hs, ws), bpe, layout)
    s = strides[-1]
    smallest = max(h // s, 1) * max(w // s, 1) * bpe
    raise BadInputError(
        f"--bottleneck {spec.text} is smaller than the encoder can reach at cut {cut.index} ({cut.node}): "
        f"the smallest code there is {smallest} B (1 channel at stride {s}): pass at least {smallest}B"
    )


class _Affine(nn.Module):
    """A fixed per-channel ``x * scale + shift`` (the boundary's normalisation or its inverse)."""

    scale: torch.Tensor
    shift: torch.Tensor

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale.reshape(1, -1, 1, 1).clone())
        self.register_buffer("shift", shift.reshape(1, -1, 1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


class Encoder(nn.Module):
    """Normalise the boundary per channel, then one conv down to the code."""

    def __init__(self, p: Plan, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        c = p.boundary_shape[0]
        self.layout = p.layout
        self.norm = _Affine(1.0 / std, -mean / std)
        self.conv = nn.Conv2d(c, p.channels, p.kernel, stride=p.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.norm(channels_first(x, self.layout)))


class Decoder(nn.Module):
    """Upsample the code (when strided), 3x3 conv, ReLU, 1x1 conv, de-normalise (ReLU if the boundary is >= 0)."""

    def __init__(self, p: Plan, mean: torch.Tensor, std: torch.Tensor, nonnegative: bool) -> None:
        super().__init__()
        c, h, w = p.boundary_shape
        self.size = (h, w) if p.stride > 1 else None
        self.conv1 = nn.Conv2d(p.channels, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 1)
        self.denorm = _Affine(std, mean)
        self.nonnegative = nonnegative
        self.layout = p.layout

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.size is not None:
            z = F.interpolate(z, size=self.size, mode="nearest")
        y = self.denorm(self.conv2(F.relu(self.conv1(z))))
        return from_channels_first(F.relu(y) if self.nonnegative else y, self.layout)


class BottleneckHead(nn.Module):
    """The cut's head followed by the encoder: input -> code."""

    def __init__(self, head: nn.Module, encoder: Encoder) -> None:
        super().__init__()
        self.head, self.encoder = head, encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.head(x))


class BottleneckTail(nn.Module):
    """The decoder followed by the cut's tail: code -> logits."""

    def __init__(self, decoder: Decoder, tail: nn.Module) -> None:
        super().__init__()
        self.decoder, self.tail = decoder, tail

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.tail(self.decoder(z))


@dataclass
class Trained:
    """A trained bottleneck pair at one cut, its codec (calibrated on the train codes) and its training summary."""

    plan: Plan
    head: BottleneckHead
    tail: BottleneckTail
    encoding: BoundaryEncoding
    summary: dict[str, Any]
    seconds: float

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
    encoding: str = DEFAULT_ENCODING,
    batch_size: int = 64,
    progress: bool = False,
) -> Trained:
    """Train the bottleneck at ``cut`` by distillation from the frozen ``head`` + ``tail`` on ``x_train``.

    Deterministic for a given ``seed`` (its own generator; the global RNG is left as it was). The
    codec is calibrated on the codes of the (un-augmented) train images, never on held-out images.
    """
    from tqdm import tqdm

    p = plan(cut, options.spec, encoding)
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
    with deterministic(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        a = channels_first(forward_batched(head, x_train, batch_size), p.layout).double()
        mean = a.mean(dim=(0, 2, 3))
        std = a.std(dim=(0, 2, 3))
        std = std.clamp_min(0.01 * float(std.mean()) + 1e-12)  # near-dead channels must not dominate the MSE
        nonneg = bool(a.min() >= 0)
        encoder = Encoder(p, mean.float(), std.float())
        decoder = Decoder(p, mean.float(), std.float(), nonneg)
        inv_std = (1.0 / std.float()).reshape(1, -1, 1, 1)
        groups: list[dict[str, Any]] = [
            {"params": [*encoder.parameters(), *decoder.parameters()], "lr": options.lr}
        ]
        if options.finetune == "tail":
            groups.append({"params": list(student_tail.parameters()), "lr": options.lr * 0.1})
        opt = torch.optim.Adam(groups)
        t = options.temperature
        n = len(x_train)
        order: list[int] = []
        ema: float | None = None
        best, best_step, step = math.inf, 0, 0
        warmup = min(options.train_steps, 2 * options.patience)  # no early stop before the loss settles
        last = {"loss": math.nan, "kl": math.nan, "mse": math.nan}
        bar = tqdm(
            total=options.train_steps, disable=not progress, desc=f"bottleneck {cut.node}", leave=False
        )
        for step in range(1, options.train_steps + 1):
            if len(order) < options.train_batch:
                order += torch.randperm(n, generator=gen).tolist()
            idx, order = order[: options.train_batch], order[options.train_batch :]
            xb = augment(x_train[idx], gen)
            with torch.no_grad():
                ab = head(xb)
                teacher = teacher_tail(ab)
            recon = decoder(encoder(ab))
            student = student_tail(recon)
            kl = F.kl_div(
                F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1),
                log_target=True, reduction="batchmean",
            ) * (t * t)  # fmt: skip
            mse = (channels_first(recon - ab, p.layout) * inv_std).pow(2).mean()
            loss = kl + options.mse_weight * mse
            opt.zero_grad()
            loss.backward()
            opt.step()
            last = {"loss": float(loss.detach()), "kl": float(kl.detach()), "mse": float(mse.detach())}
            ema = last["loss"] if ema is None else 0.9 * ema + 0.1 * last["loss"]
            bar.update(1)
            bar.set_postfix(loss=f"{ema:.4f}")
            if ema < best * (1 - 1e-3):
                best, best_step = ema, step
            elif step - best_step >= options.patience and step >= warmup:
                break
        bar.close()
    encoder.eval()
    decoder.eval()
    student_tail.eval()
    for module in (encoder, decoder, student_tail):
        for param in module.parameters():
            param.requires_grad_(False)
    # eval() on the wrappers too: torch.onnx.export restores the *top* module's mode recursively afterwards
    pair_head, pair_tail = BottleneckHead(head, encoder).eval(), BottleneckTail(decoder, student_tail).eval()
    codes = forward_batched(pair_head, x_train, batch_size).numpy()
    enc = calibrate_encoding(encoding, codes)
    summary = {
        "steps": step,
        "stopped_early": step < options.train_steps,
        "final_loss": rounded(last["loss"], finite=True),
        "final_kl": rounded(last["kl"], finite=True),
        "final_mse": rounded(last["mse"], finite=True),
        "smoothed_loss": rounded(ema, finite=True),
        "train_images": n,
        "seed": seed,
    }
    return Trained(p, pair_head, pair_tail, enc, summary, time.perf_counter() - start)


def config(options: BottleneckOptions, p: Plan, encoding: BoundaryEncoding) -> dict[str, Any]:
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
        "patience": options.patience,
        "code_encoding": encoding.name,
        "code_bytes_per_image": p.code_bytes,
        **p.to_json(),
    }


def cut_seed(seed: int, cut_index: int) -> int:
    """The training seed of the bottleneck at ``cut_index``: a function of (seed, cut index) only."""
    import hashlib

    return int.from_bytes(
        hashlib.sha256(f"isplit-bottleneck:{seed}:{cut_index}".encode()).digest()[:4], "little"
    )
