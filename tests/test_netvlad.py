"""NetVLAD (matmul form) against a straightforward residual-sum reference; k-means init; PCA."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sfrs_core.models.netvlad import NetVLAD, sample_local_descriptors
from sfrs_core.models.pca import PCAWhitening


def reference_vlad(x, weight, centroids, normalize_input=True, normalize=True):
    """Textbook NetVLAD: explicit residuals x_i - c_k weighted by a_k(x_i), summed over i."""
    n, d, h, w = x.shape
    k = centroids.shape[0]
    if normalize_input:
        x = x / x.pow(2).sum(1, keepdim=True).sqrt()
    pixels = x.reshape(n, d, h * w)  # N x D x P
    logits = torch.einsum("kd,ndp->nkp", weight.reshape(k, d), pixels)
    e = torch.exp(logits - logits.max(1, keepdim=True).values)
    a = e / e.sum(1, keepdim=True)  # softmax over clusters
    out = []
    for b in range(n):
        rows = []
        for c in range(k):
            residuals = pixels[b] - centroids[c][:, None]  # D x P, x_i - c_k for every pixel
            rows.append((residuals * a[b, c][None, :]).sum(1))
        out.append(torch.stack(rows))
    v = torch.stack(out)  # N x K x D
    if not normalize:
        return v
    v = v / v.pow(2).sum(2, keepdim=True).sqrt()
    v = v.reshape(n, -1)
    return v / v.pow(2).sum(1, keepdim=True).sqrt()


def _layer(k=5, d=7, normalize_input=True, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    layer = NetVLAD(k, d, normalize_input).to(dtype)
    with torch.no_grad():
        layer.conv.weight.normal_(0, 3.0)
        layer.centroids.normal_(0, 0.5)
    return layer


@pytest.mark.parametrize("normalize_input", [True, False])
def test_forward_matches_residual_reference(normalize_input):
    layer = _layer(normalize_input=normalize_input)
    x = torch.randn(3, 7, 4, 5)
    ours = layer(x)
    ref = reference_vlad(x.double(), layer.conv.weight.double(), layer.centroids.double(), normalize_input)
    assert ours.shape == (3, 5 * 7)
    torch.testing.assert_close(ours.double(), ref, atol=1e-5, rtol=0)
    raw = layer.vlad(x)
    ref_raw = reference_vlad(x.double(), layer.conv.weight.double(), layer.centroids.double(),
                             normalize_input, normalize=False)
    torch.testing.assert_close(raw.double(), ref_raw, atol=1e-5, rtol=1e-5)


def test_gradients_match_residual_reference():
    layer = _layer(dtype=torch.float64)
    x = torch.randn(2, 7, 3, 4, dtype=torch.float64, requires_grad=True)
    probe = torch.randn(2, 35, dtype=torch.float64)

    (layer(x) * probe).sum().backward()
    ours = [x.grad.clone(), layer.conv.weight.grad.clone(), layer.centroids.grad.clone()]

    x2 = x.detach().clone().requires_grad_(True)
    w2 = layer.conv.weight.detach().clone().requires_grad_(True)
    c2 = layer.centroids.detach().clone().requires_grad_(True)
    (reference_vlad(x2, w2, c2) * probe).sum().backward()
    for g, r in zip(ours, [x2.grad, w2.grad, c2.grad]):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-5)


def test_gradcheck_numerical():
    layer = _layer(k=3, d=4, dtype=torch.float64)
    x = torch.randn(1, 4, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: layer(t), (x,))


def test_output_is_unit_norm_and_intra_normalised():
    layer = _layer()
    out = layer(torch.randn(2, 7, 3, 3)).view(2, 5, 7)
    per_cluster = out.norm(dim=2)
    torch.testing.assert_close(per_cluster, torch.full_like(per_cluster, 1 / math.sqrt(5)))


def _clustered(k=4, d=8, per=200, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    descs = np.concatenate([c + 0.15 * rng.normal(size=(per, d)) for c in centres])
    return descs.astype(np.float32), np.repeat(np.arange(k), per)


def test_kmeans_init_centroids_and_alpha():
    descs, labels = _clustered()
    layer = NetVLAD(4, 8)
    alpha = layer.init_from_descriptors(descs, niter=30, seed=1)

    unit = descs / np.linalg.norm(descs, axis=1, keepdims=True)
    cents = layer.centroids.detach().numpy()
    # each centroid is the mean of one true cluster of the normalised descriptors
    means = np.stack([unit[labels == j].mean(0) for j in range(4)])
    match = np.abs(cents[:, None, :] - means[None]).max(-1).min(1)
    assert match.max() < 1e-4

    # assignment weights: alpha times the unit-norm centroid directions, no bias
    weight = layer.conv.weight.detach().numpy()[:, :, 0, 0]
    assert layer.conv.bias is None
    np.testing.assert_allclose(np.linalg.norm(weight, axis=1), alpha, rtol=1e-5)
    directions = cents / np.linalg.norm(cents, axis=1, keepdims=True)
    np.testing.assert_allclose(weight / alpha, directions, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(weight / alpha, axis=1), 1.0, rtol=1e-5)

    # NetVLAD's alpha: nearest centroid gets on average exp(alpha * gap) = 100x the second
    gaps = []
    for u in unit:
        dots = sorted((float(u @ c) for c in directions), reverse=True)
        gaps.append(dots[0] - dots[1])
    assert alpha == pytest.approx(-math.log(0.01) / np.mean(gaps), rel=1e-5)
    assert math.exp(alpha * np.mean(gaps)) == pytest.approx(100.0, rel=1e-4)
    assert layer.alpha == alpha


def test_kmeans_init_rejects_bad_input():
    layer = NetVLAD(4, 8)
    with pytest.raises(ValueError, match="M x 8"):
        layer.init_from_descriptors(np.zeros((100, 5), np.float32))
    with pytest.raises(ValueError, match="at least 4"):
        layer.init_from_descriptors(np.ones((3, 8), np.float32))


def test_sample_local_descriptors_takes_pixels_of_each_image():
    maps = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    g = torch.Generator().manual_seed(0)
    out = sample_local_descriptors(maps, per_image=6, generator=g)
    assert out.shape == (12, 3)
    for i, row in enumerate(out):
        pixels = maps[i // 6].flatten(1).T  # 20 x 3
        assert (pixels == row).all(1).any()
    assert len({tuple(r.tolist()) for r in out[:6]}) == 6  # no repeats within an image


@pytest.mark.parametrize("n,d", [(60, 12), (10, 30)])  # primal (n > d) and dual (n < d)
def test_pca_whitening_matches_svd(n, d):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + 3.0
    out_dim = 5
    pca = PCAWhitening(d, out_dim)
    lams = pca.fit(torch.from_numpy(x).float())
    assert pca.is_fitted

    xc = x - x.mean(0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    expected_lams = s[:out_dim] ** 2 / (n - 1)
    np.testing.assert_allclose(lams.numpy(), expected_lams, rtol=1e-4)
    projected = pca.linear(torch.from_numpy(x).float()).detach().double().numpy()
    expected = xc @ vt[:out_dim].T / np.sqrt(expected_lams)
    np.testing.assert_allclose(np.abs(projected), np.abs(expected), atol=1e-3)
    # whitened training data: identity covariance
    np.testing.assert_allclose(np.cov(projected, rowvar=False), np.eye(out_dim), atol=1e-3)
    y = pca(torch.from_numpy(x).float())
    torch.testing.assert_close(y.norm(dim=1), torch.ones(n))


def test_pca_needs_enough_points():
    with pytest.raises(ValueError, match="needs at least 9"):
        PCAWhitening(20, 8).fit(torch.randn(8, 20))
