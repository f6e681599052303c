"""What ``hubconf.py`` (``torch.hub.load(REPO_OR_DIR, "sfrs", weights=FILE, source="local")``) builds.

:func:`hub_model` returns a model in eval mode, ready to describe images:

* ``weights=FILE`` reads, with ``torch.load(weights_only=True)`` only:
  our checkpoints (``gen{g}.pt``, ``gen{g}_last.pt``, ``init.pt``, exported runs' half-precision
  files, ``import-weights`` output: everything ``models.openibl.load_model`` takes), a run's
  ``latest.pt`` (see :func:`load_weights`) and OpenIBL's files (its released ``vgg16_netvlad``
  state dict or a training checkpoint, as ``models.openibl.load_openibl`` reads them). The PCA
  whitening a file holds is applied by ``forward`` (``model.pca.is_fitted``).
* ``weights=None``: the ``sfrs`` entry point refuses (a ``ValueError`` saying what to pass: it
  never downloads anything); the per-trunk entry points (``sfrs_vgg16``, ``sfrs_mobilenet`` ...)
  return an *untrained* model of :func:`untrained_config` (the trunk's ImageNet weights when they
  are on this machine, random NetVLAD centroids, no PCA), to train or to initialise from.

Preprocessing travels with the model: ``model.normalization`` (a callable on ``[0, 1]`` image
tensors; ``.transform()`` gives the same as a ``torchvision.transforms.Normalize``),
``model.input_norm`` (its name: ``"imagenet"`` or ``"matconvnet"``, OpenIBL's 0-255 minus mean)
and ``model.transform``: path or PIL image -> normalised ``3 x H x W`` tensor at ``image_size``
(``(H, W)``; default ``None``: the image's own size, as ``evaluate`` describes images).
"""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..data.transforms import ImageTransform
from ..errors import CheckpointError
from .checkpoint import load_checkpoint_or_previous
from .model import ModelConfig, NetVLADModel, build_model
from .openibl import load_model

log = logging.getLogger(__name__)

#: torch.hub entry point -> the trunk it is for (None: any, read from the file)
ENTRY_TRUNKS: dict[str, str | None] = {
    "sfrs": None, "sfrs_vgg16": "vgg16", "sfrs_mobilenet": "mobilenet_v2",
    "sfrs_resnet18": "resnet18", "sfrs_resnet50": "resnet50",
}

_RESUME_NAME = re.compile(r"latest(\.prev)?\.pt")


def untrained_config(trunk: str, **overrides: Any) -> ModelConfig:
    """The config of an untrained hub model: ``trunk`` at its default cut, K=64, no PCA layer,
    the trunk's ImageNet weights if on this machine (never downloaded; else random with a log
    line), its ImageNet input normalisation; ``overrides`` are any other ``ModelConfig`` fields."""
    return replace(ModelConfig(trunk=trunk, num_clusters=64, pca_dim=None, pretrained=True), **overrides)


def _resolved_norm(config: ModelConfig) -> str:
    """The input normalisation a training config's trunk had (``models.backbones.build_backbone``)."""
    if config.input_norm is not None:
        return config.input_norm
    if config.trunk == "vgg16" and config.pretrained and config.trunk_weights is not None:
        return "matconvnet"  # OpenIBL's MatConvNet VGG16 as trunk weights
    return "imagenet"


def _run_model_config(run_config: dict[str, Any]) -> ModelConfig:
    """The model of a run's ``config.json`` (``TrainConfig.to_dict``), read here without the training
    package above this one: its ``model`` entry, as ``TrainConfig.from_dict`` reads it (the paper's
    model when absent). ``ValueError``/``TypeError`` for a file that is no run config."""
    if not isinstance(run_config, dict):
        raise TypeError(f"a run config is a JSON object, not {type(run_config).__name__}")
    model = run_config.get("model")
    return ModelConfig.paper() if model is None else ModelConfig.from_dict(model)


def _from_resume(path: Path, data: dict[str, Any]) -> NetVLADModel:
    """The model a run's ``latest.pt`` holds: mid-generation its ``student`` (no PCA yet), with the
    architecture from the run's ``config.json``; at a generation's end the run's ``gen{g-1}.pt``."""
    if "student" not in data:
        gen = data.get("generation")
        done = path.with_name(f"gen{int(gen) - 1}.pt") if isinstance(gen, int) and gen > 0 else None
        if done is None or not done.is_file():
            raise CheckpointError(f"{path}: a resume checkpoint with no model weights; load one of the run's gen*.pt")
        log.info("%s was saved at the end of generation %d: loading %s", path, gen - 1, done)
        return load_model(done)[0]
    config_file = path.with_name("config.json")
    try:
        model_cfg = _run_model_config(json.loads(config_file.read_text()))
    except (OSError, ValueError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{path}: a resume checkpoint; its run's {config_file.name} is unreadable "
                              f"({type(err).__name__}), so the model cannot be rebuilt") from None
    config = replace(model_cfg, input_norm=_resolved_norm(model_cfg))
    model = build_model(replace(config, pretrained=False))
    try:
        model.load_state_dict({k.removeprefix("module."): v for k, v in data["student"].items()})  # DDP's prefix
    except (RuntimeError, TypeError, AttributeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: weights do not fit the model of {config_file} ({first})") from None
    model.config = config
    return model.eval()


def load_weights(path: str | os.PathLike) -> NetVLADModel:
    """A model (eval mode, CPU) from any file :func:`hub_model` takes (see the module docstring).

    A run's ``latest.pt`` / ``latest.prev.pt`` (a resume checkpoint, no config of its own) gives
    the model in training at that moment, rebuilt from the run's ``config.json`` (its PCA is not
    fitted yet: descriptors are the VLAD), or, when it was saved at the end of generation ``g``,
    ``gen{g}.pt``. Errors are one-line ``CheckpointError``\\ s naming the file."""
    path = Path(path)
    if _RESUME_NAME.fullmatch(path.name):
        data = load_checkpoint_or_previous(path)
        if "model_config" not in data and ("student" in data or "generation" in data):
            return _from_resume(path, data)
    return load_model(path)[0]


def attach_preprocessing(model: NetVLADModel, image_size: tuple[int, int] | None = None) -> NetVLADModel:
    """Give ``model`` its ``input_norm`` (name) and ``transform`` (image -> normalised tensor at
    ``image_size``, ``(H, W)`` or None for the image's own size) attributes; returns it."""
    size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
    model.input_norm = model.normalization.name
    model.transform = ImageTransform(size, model.normalization)
    return model


def hub_model(weights: str | os.PathLike | None = None, *, trunk: str | None = None,
              device: str | torch.device = "cpu", image_size: tuple[int, int] | None = None,
              entry: str = "sfrs", **config: Any) -> NetVLADModel:
    """The model of torch.hub entry point ``entry`` (for ``trunk``; None: any). See the module
    docstring; ``config`` (``ModelConfig`` fields) applies only to untrained models."""
    if weights is None:
        if trunk is None:
            raise ValueError(
                f"{entry}: weights=None: pass weights=FILE (our gen*.pt/latest.pt/exported or imported checkpoint, "
                f"or OpenIBL's vgg16_netvlad .pth); nothing is downloaded. For an untrained model use "
                f"{', '.join(e for e, t in ENTRY_TRUNKS.items() if t)}")
        model = build_model(untrained_config(trunk, **config)).eval()
    else:
        if config:
            raise ValueError(f"{entry}: {', '.join(sorted(config))}: model settings apply only with weights=None; "
                             f"{weights} records its own")
        model = load_weights(weights)
        if trunk is not None and model.config.trunk != trunk:
            raise CheckpointError(f"{weights}: a {model.config.trunk} model, but hub entry point {entry!r} is for "
                                  f"{trunk}; load it with 'sfrs'")
    return attach_preprocessing(model, image_size).to(device).eval()
