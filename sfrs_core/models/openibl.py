"""Load the official OpenIBL checkpoints (e.g. SFRS ``vgg16_netvlad``) into our model.

OpenIBL's keys map one to one: ``base_model.base.<i>.*`` -> ``trunk.body.<i>.*``,
``net_vlad.conv.weight`` and ``net_vlad.centroids`` unchanged, ``pca_layer.weight``
(``out × in × 1 × 1``) -> ``pca.linear.weight`` (``out × in``), ``pca_layer.bias`` ->
``pca.linear.bias``. A ``module.`` prefix (DataParallel) is removed. The file is read with
``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import os
from typing import Any

import torch

from ..errors import CheckpointError
from .model import ModelConfig, NetVLADModel, build_model


def is_openibl_state_dict(state: dict[str, Any]) -> bool:
    """True when the keys look like an OpenIBL NetVLAD model's."""
    return any(k.removeprefix("module.").startswith(("base_model.", "net_vlad.")) for k in state)


def convert_openibl_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenIBL parameter names and shapes -> ours (see the module docstring)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.startswith("base_model.base."):
            out["trunk.body." + key[len("base_model.base."):]] = value
        elif key in ("net_vlad.conv.weight", "net_vlad.centroids"):
            out[key] = value
        elif key == "pca_layer.weight":
            out["pca.linear.weight"] = value.reshape(value.shape[0], -1)
        elif key == "pca_layer.bias":
            out["pca.linear.bias"] = value
    if "pca.linear.weight" in out:
        out["pca.fitted"] = torch.tensor(True)
    return out


def load_openibl(path: str | os.PathLike, config: ModelConfig | None = None) -> NetVLADModel:
    """A model holding an OpenIBL checkpoint's weights (default config: the paper's VGG16,
    K=64, PCA to the checkpoint's output size)."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path}: not a checkpoint torch can load safely ({type(err).__name__}: {err})") from None
    state = data.get("state_dict", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not is_openibl_state_dict(state):
        raise CheckpointError(f"{path}: no OpenIBL NetVLAD weights (base_model.*, net_vlad.*) found")
    ours = convert_openibl_state_dict(state)
    if config is None:
        k = ours["net_vlad.centroids"].shape[0]
        pca = ours["pca.linear.weight"].shape[0] if "pca.linear.weight" in ours else None
        config = ModelConfig(trunk="vgg16", num_clusters=k, pca_dim=pca, pretrained=False)
    model = build_model(config)
    missing, unexpected = model.load_state_dict(ours, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit {config}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.eval()
