"""Checkpoints and run files, written atomically (temp file + rename) and loaded safely."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..models.model import ModelConfig, NetVLADModel, build_model


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary sibling and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    return atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """``torch.save`` ``payload`` atomically (tensors, numbers, strings, lists and dicts only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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
