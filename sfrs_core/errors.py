"""Error types shared across the library (no heavy imports here: the CLI catches them)."""
from __future__ import annotations

from .data.errors import DatasetError


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or not one of ours; the message names the file."""


__all__ = ["DatasetError", "CheckpointError"]
