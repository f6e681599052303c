"""Checkpoints and run files, written atomically (temp file + rename) and loaded safely."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..io import atomic_path
from ..models.model import ModelConfig, NetVLADModel, build_model
from ..models.openibl import is_openibl_state_dict, load_openibl


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """``torch.save`` ``payload`` atomically (tensors, numbers, strings, lists and dicts only)."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``: no code from the file is ever run."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt zip, pickled code, truncated file ...
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not an SFRS Studio checkpoint (top level is {type(data).__name__})")
    return data


def model_payload(model: NetVLADModel, **extra: Any) -> dict[str, Any]:
    """What a model checkpoint holds: its config, its weights and ``extra`` metadata."""
    return {"model_config": model.config.to_dict(), "state_dict": model.state_dict(), **extra}


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[NetVLADModel, dict[str, Any]]:
    """Rebuild a model from a checkpoint of :func:`model_payload`; returns it (eval mode) and the payload."""
    data = load_checkpoint(path)
    state = data.get("state_dict", data)
    if "model_config" not in data and isinstance(state, dict) and is_openibl_state_dict(state):
        return load_openibl(path).to(device), data
    if "model_config" not in data or "state_dict" not in data:
        raise CheckpointError(f"{path}: has no model_config/state_dict; not a model checkpoint")
    config = ModelConfig.from_dict({**data["model_config"], "pretrained": False})
    model = build_model(config)
    try:
        model.load_state_dict(data["state_dict"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit the model it describes ({err})") from None
    model.config = ModelConfig.from_dict(data["model_config"])
    return model.to(device).eval(), data
