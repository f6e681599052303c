"""Checkpoints and run files: the names training and its callers have always imported from here.

The checkpoint format itself (manifest, atomic save, verified and safe load, model payloads)
lives in :mod:`sfrs_core.models.checkpoint`, below the models that use it; :func:`load_model`
(ours or OpenIBL's files) in :mod:`sfrs_core.models.openibl`. This module re-exports them.
"""
from __future__ import annotations

from ..models.checkpoint import (MANIFEST, load_checkpoint, load_checkpoint_or_previous, model_from_payload,
                                 model_payload, previous_path, save_checkpoint, verify_checkpoint)
from ..models.openibl import load_model

__all__ = [
    "MANIFEST", "load_checkpoint", "load_checkpoint_or_previous", "load_model", "model_from_payload",
    "model_payload", "previous_path", "save_checkpoint", "verify_checkpoint",
]
