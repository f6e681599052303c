"""The full descriptor model: trunk -> NetVLAD -> intra-norm + L2 -> [PCA-whitening -> L2].

``NetVLADModel(images)`` gives ``N x dim`` global descriptors; ``.regions(images)`` the
``N x 9 x dim`` region descriptors of SFRS (order in ``sfrs_core.models.regions.REGION_NAMES``;
index 0 equals the global descriptor). Images must be normalised with
``model.normalization`` (a property of the trunk's weights).

The PCA layer exists when ``config.pca_dim`` is set, but is applied only once fitted
(``model.pca.fit(descriptors)``, usually after training, as in NetVLAD/OpenIBL): training runs
on the ``K*D`` VLAD. ``use_pca=None`` (default) applies it iff fitted, ``True`` requires it,
``False`` skips it.

Module names mirror OpenIBL's checkpoint layout so that it maps one-to-one:
``base_model.base.<i>.* -> trunk.body.<i>.*``, ``net_vlad.conv.weight`` and ``net_vlad.centroids``
unchanged, ``pca_layer.weight`` (``out x in x 1 x 1``) -> ``pca.linear.weight`` (``out x in``),
``pca_layer.bias -> pca.linear.bias``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from sfrs_core.models.backbones import Backbone, Normalization, build_backbone
from sfrs_core.models.netvlad import NetVLAD
from sfrs_core.models.pca import PCAWhitening
from sfrs_core.models.regions import region_descriptors


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model's architecture (weights live in checkpoints).

    ``cut``/``train_from``/``input_norm`` of ``None`` mean the trunk's default
    (see ``sfrs_core.models.backbones``). Defaults are the paper's VGG16 configuration.
    ``trunk_weights`` is a local state dict of the trunk (e.g. OpenIBL's MatConvNet VGG16
    ``vd16_offtheshelf_conv5_3_max.pth``), loaded at build time when ``pretrained``.
    Checkpoints record the resolved ``input_norm`` (see :func:`resolved_config`).
    """

    trunk: str = "vgg16"
    num_clusters: int = 64
    pca_dim: int | None = None
    cut: str | None = None
    train_from: str | None = None
    pretrained: bool = True
    normalize_input: bool = True
    freeze_bn: bool = True
    input_norm: str | None = None
    trunk_weights: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error (they would be silently lost)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig field(s): {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def paper(cls) -> "ModelConfig":
        """SFRS/NetVLAD reference: VGG16 conv5_3, K=64, PCA-whitening to 4096."""
        return cls(trunk="vgg16", num_clusters=64, pca_dim=4096)


class NetVLADModel(nn.Module):
    """Trunk + NetVLAD (+ optional PCA-whitening); see the module docstring."""

    def __init__(self, config: ModelConfig, *, allow_download: bool = False, require_pretrained: bool = False) -> None:
        super().__init__()
        self.config = config
        self.trunk: Backbone = build_backbone(
            config.trunk, cut=config.cut, pretrained=config.pretrained,
            train_from=config.train_from, freeze_bn=config.freeze_bn,
            input_norm=config.input_norm, allow_download=allow_download, trunk_weights=config.trunk_weights,
            require_pretrained=require_pretrained,
        )
        self.net_vlad = NetVLAD(config.num_clusters, self.trunk.out_channels, config.normalize_input)
        self.pca = PCAWhitening(self.vlad_dim, config.pca_dim) if config.pca_dim else None

    @property
    def normalization(self) -> Normalization:
        """Input normalisation the trunk expects (images in [0, 1])."""
        return self.trunk.normalization

    @property
    def vlad_dim(self) -> int:
        return self.net_vlad.output_dim

    @property
    def descriptor_dim(self) -> int:
        """Length of what ``forward`` returns now (PCA dim once PCA is fitted)."""
        return self.pca.out_dim if self.pca is not None and self.pca.is_fitted else self.vlad_dim

    def _pca_or_none(self, use_pca: bool | None) -> PCAWhitening | None:
        if use_pca is False or (use_pca is None and (self.pca is None or not self.pca.is_fitted)):
            return None
        if self.pca is None:
            raise RuntimeError("use_pca=True but the model has no PCA layer (pca_dim is None)")
        if not self.pca.is_fitted:
            raise RuntimeError("use_pca=True but the PCA layer is not fitted yet")
        return self.pca

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Local descriptors ``N x D x h x w`` of normalised images."""
        return self.trunk(images)

    def aggregate(self, feature_map: torch.Tensor, use_pca: bool | None = None) -> torch.Tensor:
        """Global descriptors ``N x dim`` of a feature map."""
        desc = self.net_vlad(feature_map)
        pca = self._pca_or_none(use_pca)
        return pca(desc) if pca is not None else desc

    def forward(self, images: torch.Tensor, use_pca: bool | None = None) -> torch.Tensor:
        """Normalised images ``N x 3 x H x W`` -> L2-normalised global descriptors ``N x dim``."""
        return self.aggregate(self.features(images), use_pca)

    def regions_from_features(self, feature_map: torch.Tensor, use_pca: bool | None = None) -> torch.Tensor:
        """Region descriptors ``N x 9 x dim`` of a feature map."""
        return region_descriptors(self.net_vlad, feature_map, self._pca_or_none(use_pca))

    def regions(self, images: torch.Tensor, use_pca: bool | None = None) -> torch.Tensor:
        """Region descriptors ``N x 9 x dim`` (global, top, bottom, left, right, 4 quarters)."""
        return self.regions_from_features(self.features(images), use_pca)

    def init_netvlad(self, local_descs: torch.Tensor | np.ndarray, **kwargs: Any) -> float:
        """k-means initialisation of the NetVLAD layer; returns alpha."""
        return self.net_vlad.init_from_descriptors(local_descs, **kwargs)


def resolved_config(model: NetVLADModel) -> ModelConfig:
    """The model's config with the normalisation it actually uses written out (for checkpoints)."""
    return replace(model.config, input_norm=model.normalization.name)


def build_model(config: ModelConfig | dict[str, Any], *, allow_download: bool = False,
                require_pretrained: bool = False) -> NetVLADModel:
    """A model from a config (or its dict); no download unless ``allow_download``.
    ``require_pretrained``: trunk weights that cannot be loaded are an error
    (:class:`~sfrs_core.models.backbones.TrunkWeightsError`), not a random trunk."""
    if isinstance(config, dict):
        config = ModelConfig.from_dict(config)
    return NetVLADModel(config, allow_download=allow_download, require_pretrained=require_pretrained)
