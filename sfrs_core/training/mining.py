"""Tuple mining for SARE/SFRS training: :mod:`sfrs_core.mining`, re-exported where training and its
callers have always imported it from (it lives below training, which the explanations use too)."""
from __future__ import annotations

from ..mining import MiningConfig, TrainingTuple, TupleMiner, promoted_first

__all__ = ["MiningConfig", "TrainingTuple", "TupleMiner", "promoted_first"]
