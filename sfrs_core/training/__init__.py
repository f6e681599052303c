"""Training: SARE/SFRS generations, tuple mining, checkpoints and the run folder.

The names below are imported on first use, so that ``sfrs_core.training.options`` (the ``train``
command's flags) loads without torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainConfig": ".config", "MiningConfig": ".mining", "Trainer": ".trainer", "TrainingStopped": ".trainer",
    "RunExistsError": ".trainer", "train": ".trainer", "resume_run": ".trainer",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_EXPORTS)
