"""Patch PCA (:mod:`isplit_export.bottleneck.pca`): against ``torch.linalg.svd`` of the stacked patches,
the streaming covariance against the batch one, and the data's rank."""

from __future__ import annotations

import pytest
import torch

from isplit_export.bottleneck.pca import CovarianceSums, PcaDecoder, PcaEncoder, fit, fit_at_cut, patches


def _svd_reference(a: torch.Tensor, k: int, channels: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every whole k x k patch (stride k) of ``a`` as a row: (mean, top eigenvalues, top directions) by SVD."""
    b, _, h, w = a.shape
    rows = [
        a[i, :, y * k : (y + 1) * k, x * k : (x + 1) * k].reshape(-1)
        for i in range(b)
        for y in range(h // k)
        for x in range(w // k)
    ]
    x = torch.stack(rows).double()
    _, s, vh = torch.linalg.svd(x - x.mean(0), full_matrices=False)
    return x.mean(0), (s[:channels] ** 2) / len(x), vh[:channels]


@pytest.mark.parametrize(("k", "channels"), [(1, 1), (1, 3), (2, 1), (2, 5), (4, 7)])
def test_pca_equals_svd_of_the_stacked_patches(k: int, channels: int) -> None:
    gen = torch.Generator().manual_seed(k * 10 + channels)
    a = torch.randn(6, 3, 9, 10, generator=gen) * torch.tensor([3.0, 1.0, 0.3]).reshape(1, 3, 1, 1) + 1.5
    sums = CovarianceSums(3 * k * k)
    sums.add(patches(a, k))
    pca = fit(sums, k, channels, (3, 9, 10))
    mean, evals, ref = _svd_reference(a, k, channels)
    assert torch.allclose(pca.mean, mean, atol=1e-12)
    assert torch.allclose(pca.eigenvalues, evals, rtol=1e-9, atol=1e-12)
    # the same directions (up to sign, which fit() fixes: largest entry positive)
    dots = (pca.components * ref).sum(1).abs()
    assert torch.allclose(dots, torch.ones(channels, dtype=torch.float64), atol=1e-8)
    assert bool((pca.components.gather(1, pca.components.abs().argmax(1, keepdim=True)) > 0).all())


def test_streaming_covariance_equals_the_batch_one_at_any_batch_size_and_order() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(500, 12, generator=gen, dtype=torch.float64) * 5 + 100  # a large mean: cancellation
    ref = torch.cov(x.T, correction=0)
    for batch in (1, 7, 64, 500):
        for perm in (torch.arange(500), torch.randperm(500, generator=gen)):
            sums = CovarianceSums(12)
            xs = x[perm]
            for i in range(0, 500, batch):
                sums.add(xs[i : i + batch])
            assert sums.n == 500
            assert float((sums.covariance() - ref).abs().max()) < 1e-10
    # merging two halves (two processes) is the same as one stream
    a, b = CovarianceSums(12), CovarianceSums(12)
    a.add(x[:123])
    b.add(x[123:])
    a.merge(b)
    assert float((a.covariance() - ref).abs().max()) < 1e-10


def test_pca_of_a_wide_boundary_equals_svd_too() -> None:
    """D = 1024 >> K: the Lanczos path (few components of a large covariance), and the blocked x^T x."""
    gen = torch.Generator().manual_seed(3)
    scale = torch.linspace(3.0, 0.1, 64).reshape(1, 64, 1, 1)
    a = torch.randn(40, 64, 8, 8, generator=gen) * scale + 0.5
    sums = CovarianceSums(64 * 16)
    for i in range(0, 40, 7):
        sums.add(patches(a[i : i + 7], 4))
    pca = fit(sums, 4, 5, (64, 8, 8))
    mean, evals, ref = _svd_reference(a, 4, 5)
    assert torch.allclose(pca.mean, mean, atol=1e-12)
    assert torch.allclose(pca.eigenvalues, evals, rtol=1e-9, atol=1e-12)
    assert torch.allclose((pca.components * ref).sum(1).abs(), torch.ones(5, dtype=torch.float64), atol=1e-8)


def test_components_beyond_the_datas_rank_are_zero_and_send_nothing() -> None:
    """4 patch vectors span at most 3 directions: the other requested components are zero rows, so the
    encoder's weights stay finite and those code channels are 0 (not noise scaled by 1 / MIN_HALF_RANGE)."""
    a = torch.randn(4, 16, 1, 1, generator=torch.Generator().manual_seed(0))
    pca = fit_at_cut([a], 1, 8, "nchw", (16, 1, 1))
    assert bool((pca.components[:3].norm(dim=1) > 0.99).all())
    assert bool((pca.components[3:] == 0).all()) and bool((pca.eigenvalues[3:] == 0).all())
    enc, dec = PcaEncoder(pca), PcaDecoder(pca)
    assert bool(enc.conv.weight.abs().max() < 1e6)
    held = torch.randn(3, 16, 1, 1, generator=torch.Generator().manual_seed(1))
    z = enc(held)
    assert bool((z[:, 3:] == 0).all())
    assert torch.isfinite(dec(z)).all()


@pytest.mark.parametrize("k", [1, 2, 4, 8])
def test_patches_are_the_unfolded_blocks_in_order(k: int) -> None:
    a = torch.randn(3, 5, 17, 13, generator=torch.Generator().manual_seed(k))
    cut = a[:, :, : (17 // k) * k, : (13 // k) * k]
    ref = torch.nn.functional.unfold(cut, kernel_size=k, stride=k).transpose(1, 2).reshape(-1, 5 * k * k)
    assert torch.equal(patches(a, k), ref)
