"""OpenIBL's VGG16 NetVLAD weights in and out (the official SFRS ``vgg16_netvlad`` and ours).

OpenIBL's keys map one to one onto ours: ``base_model.base.<i>.*`` <-> ``trunk.body.<i>.*``
(the VGG16 convolutions up to conv5_3: ``i`` in 0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26,
28), ``net_vlad.conv.weight`` (``K x D x 1 x 1``) and ``net_vlad.centroids`` (``K x D``)
unchanged, ``pca_layer.weight`` (a 1x1 ``Conv2d``: ``out x in x 1 x 1``) <-> ``pca.linear.weight``
(``out x in``) and ``pca_layer.bias`` <-> ``pca.linear.bias``. OpenIBL's ``embednetpca`` model
(what ``hubconf.vgg16_netvlad`` builds) has all of these; its ``embednet`` / ``embedregionnet``
models (what its training scripts save) have no ``pca_layer``.

In (:func:`load_openibl`): a raw state dict, a ``{'state_dict': ...}`` wrapper (OpenIBL's
``checkpoint*.pth.tar`` / ``model_best.pth.tar``) and a ``module.`` prefix (DataParallel/DDP)
are accepted. The file is read with ``torch.load(weights_only=True)`` (no code from it runs),
and its keys and shapes are checked against the layout before anything is loaded: a missing
key, a key OpenIBL's models never have or a wrong shape is a one-line
:class:`~sfrs_core.errors.CheckpointError` naming the file and the key.

Out (:func:`to_openibl_state_dict`, :func:`export_openibl`): a trained VGG16 model as the plain
state dict that OpenIBL's ``embednetpca`` (or, with ``pca=False``, ``embednet``) model loads
with ``load_state_dict``. A state dict carries no preprocessing: a model trained from
torchvision's ImageNet VGG16 takes ImageNet mean/std input where OpenIBL's scripts feed
MatConvNet-normalised images; :func:`openibl_notes` says what OpenIBL must change. Loaded OpenIBL
files get MatConvNet input normalisation (what OpenIBL trains and tests with).

Import (:func:`import_openibl`, ``python -m sfrs_core import-weights``): an OpenIBL file written
as one of our checkpoints (config with that normalisation + weights), the inverse of the export.

Either (:func:`load_model`): the model of any model file, one of our checkpoints
(:mod:`sfrs_core.models.checkpoint`) or OpenIBL's; it lives here, above both formats.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import torch

from ..errors import CheckpointError
from ..io import atomic_path
from .checkpoint import (MAX_MESSAGE, describe_load_failure, load_checkpoint, model_from_payload, model_payload,
                         one_line, safe_torch_load, save_checkpoint)
from .model import ModelConfig, NetVLADModel, build_model

_PREFIX = "module."


# --------------------------------------------------------------------------- key mapping


def _openibl_key(ours: str) -> str | None:
    """Our parameter name -> OpenIBL's (``None``: no counterpart, e.g. ``pca.fitted``)."""
    if ours.startswith("trunk.body."):
        return "base_model.base." + ours[len("trunk.body."):]
    if ours in ("net_vlad.conv.weight", "net_vlad.centroids"):
        return ours
    if ours == "pca.linear.weight":
        return "pca_layer.weight"
    if ours == "pca.linear.bias":
        return "pca_layer.bias"
    return None


def _openibl_value(ours: str, value: torch.Tensor) -> torch.Tensor:
    """Our tensor -> OpenIBL's (the PCA weight becomes a 1x1 conv kernel)."""
    return value[:, :, None, None] if ours == "pca.linear.weight" else value


def is_openibl_state_dict(state: dict[str, Any]) -> bool:
    """True when the keys look like an OpenIBL NetVLAD model's."""
    return any(isinstance(k, str) and k.removeprefix(_PREFIX).startswith(("base_model.", "net_vlad."))
               for k in state)


def convert_openibl_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenIBL parameter names and shapes -> ours (see the module docstring); no checks."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        key = key.removeprefix(_PREFIX)
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


def openibl_layout(model: NetVLADModel, pca: bool | None = None) -> dict[str, tuple[int, ...]]:
    """OpenIBL's key -> shape for a model of this architecture (``pca=None``: iff it has a
    PCA layer; ``embednetpca`` with it, ``embednet`` without)."""
    use_pca = model.pca is not None if pca is None else pca
    layout: dict[str, tuple[int, ...]] = {}
    for key, value in model.state_dict().items():
        name = _openibl_key(key)
        if name is None or (name.startswith("pca_layer.") and not use_pca):
            continue
        layout[name] = tuple(_openibl_value(key, value).shape)
    return layout


# --------------------------------------------------------------------------- reading


def _openibl_state(path: Path, data: Any) -> dict[str, torch.Tensor]:
    """The state dict of a loaded OpenIBL file, ``state_dict`` wrapper and ``module.`` removed."""
    if isinstance(data, dict) and "model_config" in data:
        raise CheckpointError(f"{path}: an SFRS Studio checkpoint, not OpenIBL's (read it with load_model)")
    state = data.get("state_dict", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not is_openibl_state_dict(state):
        raise CheckpointError(f"{path}: no OpenIBL NetVLAD weights (base_model.*, net_vlad.*) found")
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = key.removeprefix(_PREFIX) if isinstance(key, str) else key
        if not isinstance(name, str):
            raise CheckpointError(one_line(f"{path}: key {key!r} is not a parameter name"))
        if name in out:
            raise CheckpointError(one_line(f"{path}: key {name!r} appears both with and without the 'module.' prefix"))
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(one_line(f"{path}: key {key!r} holds a {type(value).__name__}, not a tensor"))
        out[name] = value
    return out


def _infer_config(path: Path, state: dict[str, torch.Tensor]) -> ModelConfig:
    """The paper's VGG16 with K and the PCA size read off the weights, MatConvNet input."""
    def rows(key: str) -> int | None:
        value = state.get(key)
        return int(value.shape[0]) if value is not None and value.dim() >= 1 else None

    k = rows("net_vlad.centroids") or rows("net_vlad.conv.weight")
    if k is None:
        raise CheckpointError(f"{path}: missing key 'net_vlad.centroids' (OpenIBL's NetVLAD layer)")
    pca = rows("pca_layer.weight") or rows("pca_layer.bias")
    # OpenIBL feeds its VGG16 MatConvNet-normalised images (0-255 minus mean), whatever the file
    return ModelConfig(trunk="vgg16", num_clusters=k, pca_dim=pca, pretrained=False, input_norm="matconvnet")


def _check_layout(path: Path, state: dict[str, torch.Tensor], layout: dict[str, tuple[int, ...]]) -> None:
    """Refuse (one line, naming the first offending key) missing, unknown and misshapen keys."""
    def more(n: int) -> str:
        return f" (and {n - 1} more)" if n > 1 else ""

    missing = [k for k in layout if k not in state]
    if missing:
        raise CheckpointError(f"{path}: missing key {missing[0]!r}{more(len(missing))}")
    unknown = sorted(k for k in state if k not in layout)
    if unknown:
        hint = " (OpenIBL's model has no PCA layer here)" if unknown[0].startswith("pca_layer.") else ""
        raise CheckpointError(one_line(
            f"{path}: unknown key {unknown[0]!r}{more(len(unknown))}: not a parameter of "
            f"OpenIBL's VGG16 NetVLAD model{hint}"))
    wrong = [(k, v) for k, v in state.items() if tuple(v.shape) != layout[k]]
    if wrong:
        key, value = wrong[0]
        raise CheckpointError(one_line(
            f"{path}: key {key!r} has the wrong shape: expected {list(layout[key])}, "
            f"got {list(value.shape)}{more(len(wrong))}"))


def load_openibl(path: str | os.PathLike, config: ModelConfig | None = None) -> NetVLADModel:
    """A model holding an OpenIBL checkpoint's weights (default config: the paper's VGG16, K and
    PCA size read from the file). Malformed files raise a one-line ``CheckpointError``."""
    path = Path(path)
    state = _openibl_state(path, safe_torch_load(path))
    if config is None:
        config = _infer_config(path, state)
    try:
        model = build_model(config)
    except ValueError as err:
        raise CheckpointError(one_line(f"{path}: the weights describe no buildable model ({err})")) from None
    _check_layout(path, state, openibl_layout(model))
    try:
        model.load_state_dict(convert_openibl_state_dict(state))
    except RuntimeError as err:  # not expected after the checks; kept to one line all the same
        raise CheckpointError(one_line(f"{path}: weights do not fit {config}: {err}")) from None
    return model.eval()


# --------------------------------------------------------------------------- any model file


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[NetVLADModel, dict[str, Any]]:
    """Rebuild a model from a checkpoint of :func:`~sfrs_core.models.checkpoint.model_payload` (or an
    OpenIBL file, see :func:`load_openibl`); returns it (eval mode) and the payload."""
    data = load_checkpoint(path)
    state = data.get("state_dict", data)
    if "model_config" not in data and isinstance(state, dict) and is_openibl_state_dict(state):
        return load_openibl(path).to(device), data
    return model_from_payload(data, device, path), data


# --------------------------------------------------------------------------- writing


def openibl_notes(model: NetVLADModel) -> list[str]:
    """What OpenIBL must do differently from its defaults to give this model's descriptors
    (settings a state dict cannot carry); empty for a model trained as OpenIBL's."""
    notes = []
    norm = model.normalization
    if norm.name != "matconvnet":
        notes.append(f"this model takes {norm.name} input normalisation, not OpenIBL's MatConvNet one: use "
                     f"T.Normalize(mean={list(norm.mean)}, std={[round(s, 6) for s in norm.std]}) on [0, 1] images")
    if not model.net_vlad.normalize_input:
        notes.append("this model's NetVLAD does not L2-normalise its input: models.create('netvlad', dim=512, "
                     "normalize_input=False)")
    return notes


def to_openibl_state_dict(model: NetVLADModel, *, pca: bool = True) -> dict[str, torch.Tensor]:
    """A VGG16 model as the plain state dict of OpenIBL's ``embednetpca`` model (``pca=True``,
    what ``vgg16_netvlad`` builds; needs a fitted PCA layer) or its ``embednet`` model
    (``pca=False``: no ``pca_layer``, descriptors are the ``K*D`` VLAD). CPU float32 tensors,
    sharing memory with the model where they can. ``ValueError`` says why a model cannot be
    written in that layout; :func:`openibl_notes` lists the settings OpenIBL must change."""
    config = model.config
    if config.trunk != "vgg16":
        raise ValueError(f"OpenIBL's NetVLAD models have a VGG16 trunk; this model's trunk is {config.trunk}")
    if pca and (model.pca is None or not model.pca.is_fitted):
        why = "no PCA layer (pca_dim unset)" if model.pca is None else "a PCA layer that is not fitted"
        raise ValueError(f"this model has {why}, but OpenIBL's vgg16_netvlad (embednetpca) needs pca_layer.*; "
                         "fit the PCA, or write OpenIBL's embednet layout without it (pca=False, --no-pca)")
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        name = _openibl_key(key)
        if name is None or (name.startswith("pca_layer.") and not pca):
            continue
        out[name] = _openibl_value(key, value).detach().to("cpu", torch.float32).contiguous()
    return out


class OpenIBLExport(NamedTuple):
    """What :func:`export_openibl` wrote."""

    path: Path
    model: str  # OpenIBL's model name: "embednetpca" or "embednet"
    num_clusters: int
    pca_dim: int | None
    notes: list[str]  # see openibl_notes


def export_openibl(checkpoint: str | os.PathLike, out: str | os.PathLike, *, pca: bool = True) -> OpenIBLExport:
    """Write the model of one of our checkpoints (:func:`load_model`) as an
    OpenIBL state dict at ``out``, atomically (see :func:`to_openibl_state_dict`). Refusals are
    ``CheckpointError``\\ s naming the checkpoint."""
    src, dst = Path(checkpoint), Path(out)
    if dst.exists() and src.exists() and os.path.samefile(src, dst):
        raise ValueError(f"{dst}: --out is the checkpoint itself; choose another file")
    try:
        model, _ = load_model(src)
    except CheckpointError as err:
        message = str(err)
        if "\n" in message or "weights_only" in message or len(message) > MAX_MESSAGE:
            cause = err.__context__
            state_dict_error = isinstance(cause, RuntimeError) and "loading state_dict" in str(cause)
            message = (describe_load_failure(src, cause) if cause is not None and not state_dict_error
                       and not isinstance(cause, CheckpointError) else one_line(message))
        raise CheckpointError(message) from None
    except ValueError as err:  # e.g. a model_config with unknown fields
        raise CheckpointError(one_line(f"{src}: {err}")) from None
    try:
        state = to_openibl_state_dict(model, pca=pca)
    except ValueError as err:
        raise CheckpointError(f"{src}: cannot be written for OpenIBL: {err}") from None
    with atomic_path(dst) as tmp:
        torch.save(state, tmp)
    return OpenIBLExport(dst, "embednetpca" if pca else "embednet", model.config.num_clusters,
                         model.pca.out_dim if pca and model.pca is not None else None, openibl_notes(model))


# --------------------------------------------------------------------------- importing


class OpenIBLImport(NamedTuple):
    """What :func:`import_openibl` wrote."""

    path: Path
    model: str  # OpenIBL's model the file held: "embednetpca" (with pca_layer) or "embednet"
    num_clusters: int
    pca_dim: int | None
    input_norm: str  # the input normalisation recorded in the checkpoint ("matconvnet")


def import_openibl(weights: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False) -> OpenIBLImport:
    """Convert OpenIBL's NetVLAD weights (its released ``vgg16_netvlad`` file or a training
    checkpoint; every layout :func:`load_openibl` reads) into one of our checkpoints
    (``models.checkpoint.model_payload``: what :func:`load_model`, ``evaluate``, ``index`` and
    ``query`` take), written atomically with its manifest entry. The whole file is checked before
    anything is written. ``FileExistsError`` when ``out`` exists and ``overwrite`` is false; a
    wrong or corrupt file is a one-line ``CheckpointError`` naming it. Inverse of
    :func:`export_openibl`: tensors come back bit for bit."""
    src, dst = Path(weights), Path(out)
    if dst.is_dir():
        raise FileExistsError(f"{dst}: is a folder; --out names the checkpoint file to write")
    if dst.exists():
        if src.exists() and os.path.samefile(src, dst):
            raise ValueError(f"{dst}: --out is the OpenIBL file itself; choose another file")
        if not overwrite:
            raise FileExistsError(f"{dst}: already exists; pass --overwrite to replace it")
    model = load_openibl(src)
    has_pca = model.pca is not None
    name = "embednetpca" if has_pca else "embednet"
    save_checkpoint(dst, model_payload(model, imported_from={"format": "openibl", "model": name, "file": src.name}))
    return OpenIBLImport(dst, name, model.config.num_clusters, model.pca.out_dim if has_pca else None,
                         model.normalization.name)
