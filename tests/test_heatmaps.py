"""Heatmaps (Grad-CAM, exact similarity decomposition, activations) against direct computations."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from sfrs_core.explain import (
    activation_heatmap,
    activation_map,
    compare_heatmaps,
    comparison_grid,
    decomposition_heatmap,
    gradcam_heatmap,
    gradcam_map,
    overlay,
)
from sfrs_core.models.model import ModelConfig, NetVLADModel, build_model

H, W = 96, 128


def _random_model(seed: int, pca_dim: int | None = None) -> NetVLADModel:
    torch.manual_seed(seed)
    model = build_model(ModelConfig(trunk="mobilenet_v2", num_clusters=8, pretrained=False, pca_dim=pca_dim))
    with torch.no_grad():  # spread the assignment over the clusters, as a trained layer would
        model.net_vlad.centroids.copy_(F.normalize(torch.randn(8, model.trunk.out_channels), dim=1) * 0.5)
        model.net_vlad.conv.weight.mul_(0).add_(torch.randn_like(model.net_vlad.conv.weight) * 3)
        if pca_dim:
            model.pca.fit(F.normalize(torch.randn(40, model.vlad_dim) + 0.2, dim=1))
    return model.eval()


@pytest.fixture(scope="module")
def model() -> NetVLADModel:
    return _random_model(0)


@pytest.fixture(scope="module")
def pca_model() -> NetVLADModel:
    return _random_model(1, pca_dim=16)


@pytest.fixture(scope="module")
def rgb() -> list[np.ndarray]:
    """Four smooth random H×W×3 uint8 images (blobs + noise)."""
    g = torch.Generator().manual_seed(3)
    x = F.interpolate(torch.rand(4, 3, 6, 8, generator=g), size=(H, W), mode="bilinear")
    x = (0.85 * x + 0.15 * torch.rand(4, 3, H, W, generator=g)).clamp(0, 1)
    return [np.round(img.permute(1, 2, 0).numpy() * 255).astype(np.uint8) for img in x]


def _batch(model: NetVLADModel, images: list[np.ndarray]) -> torch.Tensor:
    x = torch.stack([torch.from_numpy(i).permute(2, 0, 1).float() / 255 for i in images])
    return model.normalization(x)


def _brute_force_contributions(model: NetVLADModel, image: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """Per-pixel contributions from the explicit residual tensor, one pixel at a time (float64)."""
    with torch.no_grad():
        x, a = model.net_vlad.assign(model.features(image[None]))
    x, a = x[0].flatten(1).double(), a[0].flatten(1).double()  # D×n, K×n
    c = model.net_vlad.centroids.detach().double()
    residuals = a[:, None, :] * (x[None, :, :] - c[:, :, None])  # K×D×n
    vlad = residuals.sum(-1)
    s = 1 / vlad.norm(dim=1)
    u_norm = (vlad * s[:, None]).norm()
    pixels = (residuals * s[:, None, None] / u_norm).flatten(0, 1).T  # n×(K*D), sums to g
    t, n = target.double(), pixels.shape[0]
    if model.pca is None or not model.pca.is_fitted:
        return (pixels @ t).numpy()
    w, b = model.pca.linear.weight.detach().double(), model.pca.linear.bias.detach().double()
    y_norm = (w @ pixels.sum(0) + b).norm()
    return ((pixels @ w.T @ t + (b @ t) / n) / y_norm).numpy()


@pytest.mark.parametrize("which", ["model", "pca_model"])
def test_decomposition_sums_to_the_model_similarity(which, request, rgb):
    model = request.getfixturevalue(which)
    batch = _batch(model, rgb[:2])
    with torch.no_grad():
        desc = model(batch)
    similarity = float(desc[0] @ desc[1])
    assert desc.shape[1] == (16 if which == "pca_model" else model.vlad_dim)

    hm = decomposition_heatmap(model, batch[0], desc[1])
    assert hm.feature.shape == (H // 16, W // 16) and hm.image.shape == (H, W)
    assert hm.image.dtype == np.float32 and hm.signed
    assert float(hm.feature.astype(np.float64).sum()) == pytest.approx(similarity, abs=1e-4)
    assert hm.similarity == pytest.approx(similarity, abs=1e-4)
    assert float(hm.image.astype(np.float64).sum()) == pytest.approx(similarity, abs=1e-2)
    np.testing.assert_allclose(hm.feature.ravel(), _brute_force_contributions(model, batch[0], desc[1]),
                               rtol=1e-4, atol=1e-6)
    assert hm.feature.std() > 1e-4  # not a uniform split of the similarity
    if which == "pca_model":
        assert abs(hm.details["bias_term"]) > 1e-3


def test_decomposition_without_the_fitted_pca(pca_model, rgb):
    batch = _batch(pca_model, rgb[:2])
    with torch.no_grad():
        desc = pca_model(batch, use_pca=False)
    hm = decomposition_heatmap(pca_model, batch[0], desc[1], use_pca=False)
    assert float(hm.feature.sum()) == pytest.approx(float(desc[0] @ desc[1]), abs=1e-4)
    assert hm.details["bias_term"] == 0.0
    with pytest.raises(ValueError, match="model outputs"):
        decomposition_heatmap(pca_model, batch[0], desc[1])  # PCA on, target of the wrong length


def _manual_gradcam(model: NetVLADModel, image: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """ReLU(sum_c mean_ij(d sim / d A_c) A_c) on the trunk's last block, by autograd."""
    with torch.no_grad():
        body = model.trunk.body
        feats = body[:-1](image[None])
    act = body[-1](feats).detach().requires_grad_(True)
    sim = model.aggregate(act) @ target
    (grad,) = torch.autograd.grad(sim.sum(), act)
    return torch.relu((grad.mean((2, 3), keepdim=True) * act).sum(1))[0].detach().numpy()


def test_gradcam_runs_on_cpu_and_follows_the_target(model, rgb):
    batch = _batch(model, rgb)
    with torch.no_grad():
        desc = model(batch)
    flags = [p.requires_grad for p in model.parameters()]
    hm = gradcam_heatmap(model, batch[0], desc[1])
    assert hm.image.shape == (H, W) and hm.image.dtype == np.float32
    assert hm.image.max() - hm.image.min() > 0.5  # non-constant (scaled to [0, 1])
    np.testing.assert_allclose(hm.feature, _manual_gradcam(model, batch[0], desc[1]), rtol=1e-3, atol=1e-9)
    assert hm.similarity == pytest.approx(float(desc[0] @ desc[1]), abs=1e-5)

    other = gradcam_map(model, batch[0], desc[3])
    assert np.abs(other - hm.image).max() > 0.05  # another target image, another map
    # the model is left as it was: flags, no gradients, eval mode
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters()) and not model.training


def test_activation_map_is_the_channel_norm_of_the_trunk(model, rgb):
    batch = _batch(model, rgb[:1])
    with torch.no_grad():
        norms = model.trunk(batch)[0].norm(dim=0)
    hm = activation_heatmap(model, batch[0])
    np.testing.assert_allclose(hm.feature, norms.numpy(), rtol=1e-5)
    expected = F.interpolate(norms[None, None], size=(H, W), mode="bilinear", align_corners=False)[0, 0]
    np.testing.assert_allclose(activation_map(model, Image.fromarray(rgb[0])), expected.numpy(), rtol=1e-4)


def test_overlay_shape_opacity_and_signed_display(rgb):
    image = rgb[0]
    heat = np.random.default_rng(0).random((6, 8)).astype(np.float32)  # resized to the image
    out = overlay(image, heat, colormap="viridis", opacity=0.5)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(overlay(image, heat, opacity=0.0), image)
    assert not np.array_equal(out, image)

    signed = np.zeros((H, W), np.float32)
    signed[:10], signed[-10:] = 1.0, -1.0  # diverging map, opacity scaled by |value|
    full = overlay(np.full_like(image, 128), signed, opacity=1.0)
    assert (full[H // 2] == 128).all()  # zero contribution: the image unchanged
    assert full[0, 0, 0] > full[0, 0, 2] + 50 and full[-1, 0, 2] > full[-1, 0, 0] + 50  # red up, blue down
    assert np.array_equal(overlay(image, np.clip(signed, 0, None)),
                          overlay(image, signed, signed=False))  # signed=False: clipped at 0
    with pytest.raises(ValueError):
        overlay(image, heat, colormap="no-such-map")


@pytest.mark.parametrize("method", ["gradcam", "decomp", "activation"])
def test_compare_heatmaps_for_two_models(method, model, pca_model, rgb, tmp_path):
    query = tmp_path / "q.png"
    Image.fromarray(rgb[0]).resize((2 * W, 2 * H)).save(query)
    models = {"SARE": model, "SFRS": pca_model}
    out = compare_heatmaps(models, query, rgb[1], method=method, image_size=(H, W), opacity=0.4)
    assert list(out) == ["SARE", "SFRS"]
    for pair in out.values():
        assert pair.query.image.shape == pair.match.image.shape == (H, W)
        assert pair.query_overlay.shape == pair.match_overlay.shape == (H, W, 3)
        assert pair.query.method == pair.match.method == method
        if method != "activation":  # each map targets the other image: the same similarity
            assert pair.query.similarity == pytest.approx(pair.similarity, abs=1e-4)
            assert pair.match.similarity == pytest.approx(pair.similarity, abs=1e-4)
    grid = comparison_grid(out)
    assert grid.dtype == np.uint8 and grid.shape[0] > 2 * H and grid.shape[1] > 2 * W
