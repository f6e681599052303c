"""Region descriptors from quarter sums vs VLAD computed directly on each region's pixels;
the full model (config round trip, global == region 0, PCA)."""
from __future__ import annotations

import pytest
import torch

from sfrs_core.models import ModelConfig, NetVLAD, build_model
from sfrs_core.models.regions import REGION_NAMES, region_boxes, region_descriptors



def reference_vlad(x, weight, centroids):
    """Textbook NetVLAD of a (sliced) map: explicit residuals, soft-assigned, normalised."""
    n, d = x.shape[:2]
    k = centroids.shape[0]
    x = x / x.pow(2).sum(1, keepdim=True).sqrt()
    pixels = x.reshape(n, d, -1)
    logits = torch.einsum("kd,ndp->nkp", weight.reshape(k, d), pixels)
    a = torch.exp(logits) / torch.exp(logits).sum(1, keepdim=True)
    residuals = pixels[:, None, :, :] - centroids[None, :, :, None]  # N x K x D x P
    v = (residuals * a[:, :, None, :]).sum(-1)
    v = v / v.pow(2).sum(2, keepdim=True).sqrt()
    v = v.reshape(n, -1)
    return v / v.pow(2).sum(1, keepdim=True).sqrt()


def _layer(k=4, d=6):
    torch.manual_seed(0)
    layer = NetVLAD(k, d).double()
    with torch.no_grad():
        layer.conv.weight.normal_(0, 3.0)
        layer.centroids.normal_(0, 0.5)
    return layer


# (row0, row1, col0, col1) of each region written out by hand, for the floor split
BOXES = {
    (6, 8): [(0, 6, 0, 8), (0, 3, 0, 8), (3, 6, 0, 8), (0, 6, 0, 4), (0, 6, 4, 8),
             (0, 3, 0, 4), (0, 3, 4, 8), (3, 6, 0, 4), (3, 6, 4, 8)],
    # odd: split at floor(7/2)=3 rows and floor(5/2)=2 cols; bottom/right take the extra
    (7, 5): [(0, 7, 0, 5), (0, 3, 0, 5), (3, 7, 0, 5), (0, 7, 0, 2), (0, 7, 2, 5),
             (0, 3, 0, 2), (0, 3, 2, 5), (3, 7, 0, 2), (3, 7, 2, 5)],
}


@pytest.mark.parametrize("size", list(BOXES))
def test_regions_equal_vlad_on_region_pixels(size):
    layer = _layer()
    x = torch.randn(2, 6, *size, dtype=torch.float64)
    ours = region_descriptors(layer, x)
    assert ours.shape == (2, 9, 4 * 6)
    assert region_boxes(*size) == BOXES[size]
    w, c = layer.conv.weight.detach(), layer.centroids.detach()
    for r, (r0, r1, c0, c1) in enumerate(BOXES[size]):
        expected = reference_vlad(x[..., r0:r1, c0:c1], w, c)
        torch.testing.assert_close(ours[:, r], expected, atol=1e-5, rtol=0, msg=REGION_NAMES[r])


def test_region_gradients_match_direct_computation():
    layer = _layer()
    x = torch.randn(1, 6, 4, 4, dtype=torch.float64, requires_grad=True)
    probe = torch.randn(1, 9, 24, dtype=torch.float64)
    (region_descriptors(layer, x) * probe).sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    w, c = layer.conv.weight.detach(), layer.centroids.detach()
    direct = torch.stack([reference_vlad(x2[..., r0:r1, c0:c1], w, c)
                          for r0, r1, c0, c1 in region_boxes(4, 4)], dim=1)
    (direct * probe).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, atol=1e-5, rtol=1e-5)


def test_too_small_map_is_rejected():
    with pytest.raises(ValueError, match="at least 2x2"):
        region_descriptors(_layer(), torch.randn(1, 6, 1, 5, dtype=torch.float64))


def test_model_config_round_trip():
    cfg = ModelConfig(trunk="mobilenet_v2", num_clusters=8, pca_dim=16, cut="s16", pretrained=False)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert ModelConfig.paper().to_dict()["pca_dim"] == 4096
    with pytest.raises(ValueError, match="bogus"):
        ModelConfig.from_dict({**cfg.to_dict(), "bogus": 1})


def test_model_global_regions_and_pca():
    torch.manual_seed(0)
    model = build_model({"trunk": "mobilenet_v2", "num_clusters": 4, "pca_dim": 6, "pretrained": False})
    model.eval()
    images = torch.rand(3, 3, 64, 80)
    with torch.no_grad():
        fmap = model.features(images)
        assert fmap.shape == (3, 96, 4, 5)
        model.init_netvlad(fmap.permute(0, 2, 3, 1).reshape(-1, 96), niter=5)
        glob = model(images)
        regions = model.regions(images)
    assert model.descriptor_dim == model.vlad_dim == 4 * 96
    assert glob.shape == (3, 384) and regions.shape == (3, 9, 384)
    torch.testing.assert_close(regions[:, 0], glob, atol=1e-5, rtol=0)
    torch.testing.assert_close(regions.norm(dim=-1), torch.ones(3, 9))
    with pytest.raises(RuntimeError, match="not fitted"):
        model(images, use_pca=True)

    model.pca.fit(torch.randn(20, 384))
    with torch.no_grad():
        glob_pca = model(images)
        regions_pca = model.regions(images)
        raw = model(images, use_pca=False)
    assert model.descriptor_dim == 6
    assert glob_pca.shape == (3, 6) and regions_pca.shape == (3, 9, 6)
    torch.testing.assert_close(regions_pca[:, 0], glob_pca, atol=1e-5, rtol=0)
    torch.testing.assert_close(raw, glob)
    expected = torch.nn.functional.normalize(raw @ model.pca.linear.weight.T + model.pca.linear.bias, dim=1)
    torch.testing.assert_close(glob_pca, expected, atol=1e-5, rtol=0)


def test_model_trains_end_to_end():
    torch.manual_seed(0)
    model = build_model(ModelConfig(trunk="mobilenet_v2", num_clusters=4, pretrained=False))
    model.train()
    regions = model.regions(torch.rand(2, 3, 48, 48))
    regions[:, 0].sum().backward()
    assert model.net_vlad.centroids.grad is not None
    trainable = [p for p in model.trunk.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for p in trainable)
