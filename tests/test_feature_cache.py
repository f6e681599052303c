"""The frozen-prefix cache gives exactly what the whole model gives."""
from __future__ import annotations

import torch

from sfrs_core.data.transforms import ImageTransform
from sfrs_core.data.vpr_folder import read_vpr_folder
from sfrs_core.models.model import ModelConfig, build_model
from sfrs_core.training.feature_cache import PrefixFeatures, descriptors, trunk_prefix, trunk_suffix


def test_cached_and_uncached_descriptors_equal_the_full_model(tiny_city):
    torch.manual_seed(0)
    model = build_model(ModelConfig(trunk="mobilenet_v2", num_clusters=4, pretrained=False)).eval()
    assert len(trunk_prefix(model)) == 7 and len(trunk_suffix(model)) == 7  # frozen below stride 16
    db = read_vpr_folder(tiny_city)["val"].database
    tf = ImageTransform(None, model.normalization)
    cached = PrefixFeatures(model, db, tf, torch.device("cpu"), budget_gb=1.0, progress=False)
    uncached = PrefixFeatures(model, db, tf, torch.device("cpu"), budget_gb=0.0, progress=False)
    assert cached.cache is not None and uncached.cache is None
    with torch.no_grad():
        full = model(torch.stack([tf(db.image_path(i)) for i in range(len(db))]), use_pca=False)
    torch.testing.assert_close(descriptors(model, cached, batch_size=7), full, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(descriptors(model, uncached, batch_size=50), full, atol=1e-5, rtol=1e-4)
