"""The best linear code of a cut at a byte budget: patch PCA, and the encoder/decoder built from it.

At a cut whose boundary, viewed channels-first, is ``[C, H, W]``, and a code shape ``(K, H//k, W//k)``
(:func:`isplit_export.bottleneck.core.code_shape`: ``k`` the smallest power of two that leaves at most
the budget's positions, ``K`` = budget elements // positions, at most ``C*k*k``), the boundary is cut
into ``k x k`` patches with stride ``k`` (rows/columns past the last whole patch are not coded; the
decoder fills them with the channel's mean). Each patch is a vector ``x`` of ``D = C*k*k`` values
(ordered channel, row, column: the order of a conv weight). From float64 streaming sums over the
training images,

    n, s = sum x, S = sum x x^T         mu = s / n,  Sigma = S / n - mu mu^T

(:class:`CovarianceSums`; memory ``O(D^2)``, independent of the number of images, and sums add up
across processes), the code keeps the top ``K`` eigenvectors ``V`` of ``Sigma`` (:func:`fit`; signs
fixed so the largest entry of each is positive). Each component ``p = V^T (x - mu)`` is scaled to
``[-1, 1]`` by its range on the training images (``lo, hi``: ``z = (p - (hi + lo)/2) / ((hi - lo)/2)``)
so that one per-tensor int8 codec (calibrated on ``[-1, 1]``) gives every component all 256 levels.
The decoder inverts it: ``x' = mu + V (z * half + mid)``, placed back patch by patch (a transposed conv
with stride ``k``), then a ReLU when the boundary is non-negative on the training images.

:class:`PcaEncoder` (a ``k x k`` stride-``k`` conv) and :class:`PcaDecoder` (the transposed conv, plus a
zero-initialised nonlinear residual that training may use) compute exactly that, so the probe
(:mod:`isplit_export.bottleneck.probe`) and an untrained bottleneck send the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse.linalg
import torch
import torch.nn.functional as F
from torch import nn

from isplit_export.exporting.encoding import BoundaryEncoding, calibrate_encoding

SUBSET_EIGH_FRACTION = 4
"""Below ``D / SUBSET_EIGH_FRACTION`` components, only the top ones are computed (measured: faster)."""

ZERO_EIGENVALUE = float(np.finfo(np.float64).eps)
"""An eigenvalue at most ``ZERO_EIGENVALUE * D`` times the largest is numerically zero: its row is dropped."""

MIN_HALF_RANGE = 1e-12
"""A component that is constant on the training images gets this half-range (its code is always 0)."""


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


def patches(a: torch.Tensor, k: int) -> torch.Tensor:
    """``[B, C, H, W]`` -> ``[B * (H//k) * (W//k), C*k*k]``: the whole ``k x k`` patches at stride ``k``."""
    b, c, h, w = a.shape
    hk, wk = h // k, w // k
    blocks = a[:, :, : hk * k, : wk * k].reshape(b, c, hk, k, wk, k)
    # [B, hk, wk, C, k, k]: patches in row-major order, each ordered (c, i, j) like a conv weight (as F.unfold)
    return blocks.permute(0, 2, 4, 1, 3, 5).reshape(-1, c * k * k)


GRAM_BLOCKS = 4
"""``x^T x`` of ``D >= GRAM_BLOCK_MIN`` columns is summed in 4 x 4 column blocks, upper ones only (10 of 16
products; measured 1.5x faster than the full product at D = 1536)."""
GRAM_BLOCK_MIN = 1024


def _add_gram(s2: torch.Tensor, x: torch.Tensor) -> None:
    """``s2 += x^T x`` in its upper triangle (by blocks; the full product for small ``D``)."""
    d = x.shape[1]
    if d < GRAM_BLOCK_MIN:
        s2.addmm_(x.T, x)
        return
    e = [round(i * d / GRAM_BLOCKS) for i in range(GRAM_BLOCKS + 1)]
    for i in range(GRAM_BLOCKS):
        for j in range(i, GRAM_BLOCKS):
            s2[e[i] : e[i + 1], e[j] : e[j + 1]].addmm_(x[:, e[i] : e[i + 1]].T, x[:, e[j] : e[j + 1]])


@dataclass
class CovarianceSums:
    """Streaming float64 sums of the patch vectors: count, sum, sum of outer products (``s2``: only its upper
    triangle is kept up to date), and the minimum."""

    dim: int
    n: int = 0
    s1: torch.Tensor | None = None
    s2: torch.Tensor | None = None
    minimum: float = float("inf")

    def __post_init__(self) -> None:
        if self.s1 is None:
            self.s1 = torch.zeros(self.dim, dtype=torch.float64)
        if self.s2 is None:
            self.s2 = torch.zeros(self.dim, self.dim, dtype=torch.float64)

    def add(self, x: torch.Tensor) -> None:
        """Add patch vectors ``x`` ``[N, D]`` (any float dtype; summed in float64)."""
        assert self.s1 is not None and self.s2 is not None
        x64 = x.detach().to("cpu", torch.float64)
        self.n += int(x64.shape[0])
        self.s1 += x64.sum(0)
        _add_gram(self.s2, x64)
        if x64.numel():
            self.minimum = min(self.minimum, float(x64.min()))

    def merge(self, other: CovarianceSums) -> None:
        """Add another process's (or batch's) sums."""
        assert self.s1 is not None and self.s2 is not None and other.s1 is not None and other.s2 is not None
        self.n += other.n
        self.s1 += other.s1
        self.s2 += other.s2
        self.minimum = min(self.minimum, other.minimum)

    def mean(self) -> torch.Tensor:
        assert self.s1 is not None
        return self.s1 / max(self.n, 1)

    def covariance(self) -> torch.Tensor:
        """The (biased, ``1/n``) covariance of the patch vectors from ``s2``'s upper triangle (in numpy: see
        :func:`fit`)."""
        assert self.s2 is not None
        mu = self.mean().numpy()
        upper = np.triu(self.s2.numpy())
        cov = (upper + np.triu(upper, 1).T) / max(self.n, 1) - np.outer(mu, mu)
        return torch.from_numpy(cov)


@dataclass
class PatchPCA:
    """The fitted linear code at one cut (float64): see the module docstring for the formulas."""

    boundary_shape: tuple[int, int, int]
    kernel: int
    components: torch.Tensor  # [K, D]
    eigenvalues: torch.Tensor  # [K]
    mean: torch.Tensor  # [D]
    nonnegative: bool
    mid: torch.Tensor | None = None  # [K], set by :meth:`set_ranges`
    half: torch.Tensor | None = None  # [K]
    layout: str = "nchw"

    @property
    def channels(self) -> int:
        return int(self.components.shape[0])

    def set_ranges(self, lo: torch.Tensor, hi: torch.Tensor) -> None:
        """Scale each component from its training range ``[lo, hi]`` to ``[-1, 1]``."""
        lo64, hi64 = lo.to(torch.float64), hi.to(torch.float64)
        self.mid = (hi64 + lo64) / 2
        self.half = ((hi64 - lo64) / 2).clamp_min(MIN_HALF_RANGE)

    def prefix(self, channels: int) -> PatchPCA:
        """The code of the first ``channels`` components (and their ranges): a smaller budget's code at the same
        patch size, without a second decomposition (the top components are nested)."""
        return PatchPCA(
            self.boundary_shape,
            self.kernel,
            self.components[:channels],
            self.eigenvalues[:channels],
            self.mean,
            self.nonnegative,
            None if self.mid is None else self.mid[:channels],
            None if self.half is None else self.half[:channels],
            self.layout,
        )

    def encoder(self) -> PcaEncoder:
        return PcaEncoder(self)

    def decoder(self) -> PcaDecoder:
        return PcaDecoder(self)


def fit(
    sums: CovarianceSums, k: int, channels: int, boundary_shape: tuple[int, int, int], layout: str = "nchw"
) -> PatchPCA:
    """The top ``channels`` principal components of the patch covariance (eigenvectors, float64).

    At most the data's rank (``n - 1`` patch vectors, numerically non-zero eigenvalues) are eigenvectors;
    the rest of the ``channels`` rows are zero, so they send 0 and decode to nothing (an eigenvector of a
    zero eigenvalue would be an arbitrary direction scaled by ``1 / MIN_HALF_RANGE``). Few components are
    computed alone (:func:`_top_eigenpairs`); many by the full ``syevd``. The covariance is formed in numpy:
    torch's thread pool slows down next to scipy's spinning BLAS threads."""
    cov = sums.covariance()
    d = cov.shape[0]
    r = min(channels, d, max(sums.n - 1, 0))
    components = torch.zeros(channels, d, dtype=torch.float64)
    eigenvalues = torch.zeros(channels, dtype=torch.float64)
    if r > 0:
        if r * SUBSET_EIGH_FRACTION <= d:
            evals, evecs = _top_eigenpairs(cov.numpy(), r)
        else:
            evals, evecs = torch.linalg.eigh(cov)  # ascending
        order = torch.argsort(evals, descending=True, stable=True)[:r]
        v, top = evecs[:, order].T.contiguous(), evals[order]  # [r, D], [r]
        keep = top > ZERO_EIGENVALUE * max(float(top[0]), 0.0) * d
        v, top = v[keep], top[keep]
        idx = v.abs().argmax(dim=1)
        sign = torch.sign(v[torch.arange(v.shape[0]), idx])
        components[: len(v)] = v * torch.where(sign == 0, torch.ones_like(sign), sign)[:, None]
        eigenvalues[: len(v)] = top
    return PatchPCA(
        boundary_shape, k, components, eigenvalues, sums.mean(), bool(sums.minimum >= 0.0), layout=layout
    )


def _top_eigenpairs(cov: np.ndarray, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``r`` largest eigenpairs of ``cov`` (ascending): ARPACK's Lanczos iteration to machine precision
    from a fixed start (deterministic), or LAPACK's ``syevr`` for those only if it does not converge.
    Measured on resnet50's cuts at 1 KiB (D up to 2048): 2.3x faster than ``syevr``, same vectors to 1e-14."""
    d = cov.shape[0]
    if r < d - 1:  # ARPACK's limit
        try:
            w, vecs = scipy.sparse.linalg.eigsh(cov, k=r, which="LA", v0=np.full(d, d**-0.5), tol=0.0)
            return torch.from_numpy(np.ascontiguousarray(w)), torch.from_numpy(np.ascontiguousarray(vecs))
        except scipy.sparse.linalg.ArpackNoConvergence:
            pass
    w, vecs = scipy.linalg.eigh(cov, subset_by_index=[d - r, d - 1], driver="evr")
    return torch.from_numpy(np.ascontiguousarray(w)), torch.from_numpy(np.ascontiguousarray(vecs))


def code_encoding(name: str) -> BoundaryEncoding:
    """The codec of a PCA code: int8 calibrated on ``[-1, 1]`` (the components' scaled range); fp16/fp32 as is."""
    return calibrate_encoding(name, np.array([-1.0, 1.0], dtype=np.float32))


class PcaEncoder(nn.Module):
    """``k x k`` stride-``k`` conv computing ``z = (V^T (x - mu) - mid) / half`` per patch (raw projections
    ``V^T (x - mu)`` before :meth:`PatchPCA.set_ranges`)."""

    def __init__(self, pca: PatchPCA) -> None:
        super().__init__()
        c = pca.boundary_shape[0]
        k, kk = pca.kernel, pca.channels
        self.layout = pca.layout
        v = pca.components
        mid = pca.mid if pca.mid is not None else torch.zeros(kk, dtype=torch.float64)
        half = pca.half if pca.half is not None else torch.ones(kk, dtype=torch.float64)
        w = v / half[:, None]
        b = -(v @ pca.mean + mid) / half
        self.conv = nn.Conv2d(c, kk, k, stride=k)
        with torch.no_grad():
            self.conv.weight.copy_(w.reshape(kk, c, k, k).float())
            self.conv.bias.copy_(b.float())  # type: ignore[union-attr]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(channels_first(x, self.layout))


class PcaDecoder(nn.Module):
    """Linear path ``mu + V (z * half + mid)`` per patch (transposed conv, stride ``k``; uncoded border rows/
    columns get the channel mean), plus (``residual``) a ``conv1x1(relu(conv3x3(upsampled z)))`` whose last
    conv starts at zero, then a ReLU when the boundary is non-negative. Without the residual (the probe) it
    is the linear code alone, which is what an untrained decoder computes."""

    fill: torch.Tensor

    def __init__(self, pca: PatchPCA, residual: bool = True) -> None:
        super().__init__()
        c, h, w = pca.boundary_shape
        k, kk = pca.kernel, pca.channels
        self.layout, self.k, self.size = pca.layout, k, (h, w)
        self.pad = (0, w - (w // k) * k, 0, h - (h // k) * k)
        mid = pca.mid if pca.mid is not None else torch.zeros(kk, dtype=torch.float64)
        half = pca.half if pca.half is not None else torch.ones(kk, dtype=torch.float64)
        wt = (pca.components * half[:, None]).reshape(kk, c, k, k)
        bias_patch = pca.mean + pca.components.T @ mid  # [D]: what z = 0 decodes to
        self.linear = nn.ConvTranspose2d(kk, c, k, stride=k, bias=False)
        with torch.no_grad():
            self.linear.weight.copy_(wt.float())
        fill = torch.zeros(1, c, h, w, dtype=torch.float64)
        per_pos = bias_patch.reshape(c, k, k)
        fill[:, :, : (h // k) * k, : (w // k) * k] = per_pos.repeat(1, h // k, w // k)[None]
        channel_mean = pca.mean.reshape(c, k * k).mean(1)
        covered = torch.zeros(1, 1, h, w, dtype=torch.bool)
        covered[:, :, : (h // k) * k, : (w // k) * k] = True
        fill = torch.where(covered, fill, channel_mean.reshape(1, c, 1, 1).expand(1, c, h, w))
        self.register_buffer("fill", fill.float())
        self.residual: nn.Sequential | None = None
        if residual:
            first, last = nn.Conv2d(kk, c, 3, padding=1), nn.Conv2d(c, c, 1)
            self.residual = nn.Sequential(first, nn.ReLU(), last)
            with torch.no_grad():
                last.weight.zero_()
                last.bias.zero_()  # type: ignore[union-attr]
        self.nonnegative = pca.nonnegative

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        y = self.linear(z)
        if any(self.pad):
            y = F.pad(y, self.pad)
        y = y + self.fill
        if self.residual is not None:
            up = F.interpolate(z, scale_factor=float(self.k), mode="nearest") if self.k > 1 else z
            y = y + self.residual(F.pad(up, self.pad) if any(self.pad) else up)
        return from_channels_first(F.relu(y) if self.nonnegative else y, self.layout)


def fit_at_cut(
    acts: list[torch.Tensor], k: int, channels: int, layout: str, boundary_shape: tuple[int, int, int]
) -> PatchPCA:
    """Fit and range a :class:`PatchPCA` from batches of one cut's training activations (in memory)."""
    sums = CovarianceSums(boundary_shape[0] * k * k)
    for a in acts:
        sums.add(patches(channels_first(a, layout), k))
    pca = fit(sums, k, channels, boundary_shape, layout)
    ranges = ProjectionRanges(channels)
    enc = pca.encoder()
    with torch.no_grad():
        for a in acts:
            ranges.add(enc(a))
    pca.set_ranges(*ranges.bounds())
    return pca


class ProjectionRanges:
    """Running per-component min and max of raw projections ``[B, K, h, w]`` (exact under merging)."""

    def __init__(self, channels: int) -> None:
        self.lo = torch.full((channels,), float("inf"), dtype=torch.float64)
        self.hi = torch.full((channels,), float("-inf"), dtype=torch.float64)

    def add(self, p: torch.Tensor) -> None:
        flat = p.detach().to("cpu", torch.float64).transpose(0, 1).reshape(p.shape[1], -1)
        if flat.shape[1]:
            self.lo = torch.minimum(self.lo, flat.min(1).values)
            self.hi = torch.maximum(self.hi, flat.max(1).values)

    def merge(self, other: ProjectionRanges) -> None:
        self.lo = torch.minimum(self.lo, other.lo)
        self.hi = torch.maximum(self.hi, other.hi)

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        lo = torch.where(torch.isfinite(self.lo), self.lo, torch.zeros_like(self.lo))
        hi = torch.where(torch.isfinite(self.hi), self.hi, torch.zeros_like(self.hi))
        return lo, hi
