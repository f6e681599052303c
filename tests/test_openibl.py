"""An OpenIBL-layout checkpoint loads into our model and gives the same descriptors."""
from __future__ import annotations

import torch

from sfrs_core.models.model import ModelConfig, build_model
from sfrs_core.models.openibl import load_openibl
from sfrs_core.training.checkpoint import load_model


def _as_openibl(model) -> dict:
    out = {}
    for key, value in model.state_dict().items():
        if key.startswith("trunk.body."):
            out["module.base_model.base." + key[len("trunk.body."):]] = value
        elif key.startswith("net_vlad."):
            out["module." + key] = value
        elif key == "pca.linear.weight":
            out["module.pca_layer.weight"] = value[:, :, None, None]
        elif key == "pca.linear.bias":
            out["module.pca_layer.bias"] = value
    return {"state_dict": out, "epoch": 4, "best_recall5": 0.9}


def test_openibl_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    ours = build_model(ModelConfig(trunk="vgg16", num_clusters=4, pca_dim=16, pretrained=False)).eval()
    ours.pca.fit(torch.nn.functional.normalize(torch.randn(40, ours.vlad_dim), dim=1))
    torch.save(_as_openibl(ours), tmp_path / "vgg16_netvlad.pth")
    loaded = load_openibl(tmp_path / "vgg16_netvlad.pth")
    assert loaded.config.num_clusters == 4 and loaded.config.pca_dim == 16 and loaded.pca.is_fitted
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), ours(x))
    # the generic loader (CLI --checkpoint) recognises the layout too
    via_cli, _ = load_model(tmp_path / "vgg16_netvlad.pth")
    with torch.no_grad():
        torch.testing.assert_close(via_cli(x), ours(x))
