"""Checkpoints and run files, written atomically (temp file + rename) and loaded safely.

Each folder that holds checkpoints keeps ``manifest.json``: the size and SHA-256 of every
checkpoint written there. Loading checks a file against it, so a checkpoint truncated or
corrupted after it was written (a full disk, a bad copy) is reported as such, not half-read.
``keep_previous`` (``latest.pt``) keeps the prior version as ``latest.prev.pt`` (a hard link,
no copy), which :func:`load_checkpoint_or_previous` falls back to, with a warning naming both.

Every file is read with ``torch.load(weights_only=True)`` (:func:`safe_torch_load`): no code
from it runs. A model checkpoint is :func:`model_payload`; :func:`sfrs_core.models.openibl.load_model`
rebuilds the model of any model file, ours or OpenIBL's (``sfrs_core.training.checkpoint``
gathers all these names).
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..io import atomic_path, atomic_write_json, file_sha256
from .model import ModelConfig, NetVLADModel, build_model, resolved_config

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MAX_MESSAGE = 300  # a checkpoint error is one line, about this long at most


def one_line(text: str) -> str:
    """``text`` on one line, cut to :data:`MAX_MESSAGE` characters."""
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def describe_load_failure(path: str | os.PathLike, err: BaseException) -> str:
    """One short line for why ``torch.load(path, weights_only=True)`` failed with ``err``
    (never torch's multi-line advice to retry with ``weights_only=False``)."""
    text = str(err)
    if isinstance(err, pickle.UnpicklingError) or "Weights only load failed" in text:
        found = re.search(r"GLOBAL ([\w.]+)", text)
        what = f"would call {found.group(1)}" if found else "holds objects other than tensors and plain containers"
        return f"{path}: refused: its pickle {what}; only tensors and plain containers are read from a checkpoint"
    if isinstance(err, EOFError):
        return f"{path}: truncated checkpoint (the data ends early)"
    if "zip archive" in text or "PytorchStreamReader" in text:
        return f"{path}: corrupt or truncated checkpoint (not a valid torch zip archive)"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return one_line(f"{path}: not a torch checkpoint ({type(err).__name__}{': ' + first if first else ''})")


def safe_torch_load(path: str | os.PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU; a one-line ``CheckpointError`` naming the
    file if it is missing, empty, corrupt, or its pickle would run code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found" + (" (it is a folder)" if path.is_dir() else ""))
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes), not a checkpoint")
    with open(path, "rb") as f:
        head = f.read(4)
    if not head.startswith((b"PK\x03\x04", b"\x80")):  # torch's zip format, or its legacy pickle (protocol >= 2)
        raise CheckpointError(f"{path}: not a torch checkpoint (neither a torch zip archive nor a pickle)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. torch's note on the pickle protocol
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - anything torch raises is one kind of unreadable
        raise CheckpointError(describe_load_failure(path, err)) from None


def _manifest(folder: Path) -> dict[str, dict[str, Any]]:
    try:
        return json.loads((folder / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _record(path: Path, entry: dict[str, Any] | None) -> None:
    files = _manifest(path.parent)
    if entry is None:
        files.pop(path.name, None)
    else:
        files[path.name] = entry
    atomic_write_json(path.parent / MANIFEST, {"files": files})


def previous_path(path: str | os.PathLike) -> Path:
    """Where :func:`save_checkpoint` keeps the prior version (``latest.pt`` -> ``latest.prev.pt``)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any], *, keep_previous: bool = False) -> Path:
    """``torch.save`` ``payload`` atomically (tensors, numbers, strings, lists and dicts only) and
    record its size and checksum in the folder's manifest; ``keep_previous`` keeps the file it
    replaces as :func:`previous_path`."""
    path = Path(path)
    if keep_previous and path.is_file():
        prev, tmp_link = previous_path(path), path.with_name(f".{path.name}.prev.tmp")
        tmp_link.unlink(missing_ok=True)
        os.link(path, tmp_link)
        os.replace(tmp_link, prev)
        _record(prev, _manifest(path.parent).get(path.name))
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
        entry = {"bytes": os.path.getsize(tmp), "sha256": file_sha256(tmp)}
    _record(path, entry)
    return path


def verify_checkpoint(path: str | os.PathLike) -> bool:
    """Raise :class:`CheckpointError` when ``path`` differs from its manifest entry; True when it
    has one and matches it (the file is byte for byte what was written), False when it has none."""
    path = Path(path)
    entry = _manifest(path.parent).get(path.name)
    if entry is None or not path.is_file():
        return False
    size = path.stat().st_size
    if size != entry.get("bytes"):
        raise CheckpointError(f"{path}: {size} bytes, but {entry.get('bytes')} were written "
                              f"(truncated or overwritten; see {MANIFEST})")
    if file_sha256(path) != entry.get("sha256"):
        raise CheckpointError(f"{path}: contents differ from the checksum recorded when it was written "
                              f"(corrupt; see {MANIFEST})")
    return True


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no code from the file is ever run), after
    checking it against the folder's manifest."""
    path = Path(path)
    verify_checkpoint(path)
    data = safe_torch_load(path)  # one-line CheckpointError: missing, empty, truncated, code-carrying ...
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not an SFRS Studio checkpoint (top level is {type(data).__name__})")
    return data


def load_checkpoint_or_previous(path: str | os.PathLike) -> dict[str, Any]:
    """:func:`load_checkpoint`, falling back to :func:`previous_path` (with a warning naming both)
    when ``path`` is missing, truncated or corrupt and the previous version is good."""
    path = Path(path)
    try:
        return load_checkpoint(path)
    except CheckpointError as err:
        prev = previous_path(path)
        if not prev.is_file():
            raise
        data = load_checkpoint(prev)
        log.warning("%s; using the previous checkpoint %s instead", err, prev)
        return data


def model_payload(model: NetVLADModel, **extra: Any) -> dict[str, Any]:
    """What a model checkpoint holds: its config (with the input normalisation it was trained
    with), its weights and ``extra`` metadata."""
    return {"model_config": resolved_config(model).to_dict(), "state_dict": model.state_dict(), **extra}


def _checkpoint_config(data: dict[str, Any]) -> dict[str, Any]:
    cfg = dict(data["model_config"])
    if cfg.get("input_norm") is None and cfg.get("trunk") == "vgg16":
        cfg["input_norm"] = "matconvnet"  # checkpoints before the normalisation was recorded
    return cfg


def model_from_payload(data: dict[str, Any], device: str | torch.device = "cpu",
                       path: str | os.PathLike = "checkpoint") -> NetVLADModel:
    """The model (eval mode) a :func:`model_payload` dict describes, e.g. one received from another
    rank; ``path`` names it in errors."""
    if "model_config" not in data or "state_dict" not in data:
        raise CheckpointError(f"{path}: has no model_config/state_dict; not a model checkpoint")
    recorded = _checkpoint_config(data)
    config = ModelConfig.from_dict({**recorded, "pretrained": False})
    model = build_model(config)
    try:
        model.load_state_dict(data["state_dict"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit the model it describes ({err})") from None
    model.config = ModelConfig.from_dict(recorded)
    return model.to(device).eval()
