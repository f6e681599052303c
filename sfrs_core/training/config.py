"""Training configuration, serialised as ``config.json`` in the run folder."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from ..losses import LOSS_TYPES
from ..models.model import ModelConfig
from .mining import MiningConfig

PAPER_TEMPERATURES = (0.07, 0.07, 0.06, 0.05)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on. Defaults are the paper's (VGG16, 4 generations)."""

    data: str
    run: str = "sfrs"
    runs_dir: str = "runs"
    model: ModelConfig = field(default_factory=ModelConfig.paper)
    loss: str = "sare_ind"
    generations: int = 4
    epochs: int = 5
    lr: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 0.001
    lr_step_epochs: int = 5
    lr_gamma: float = 0.5
    tuples_per_batch: int = 4
    mining: MiningConfig = field(default_factory=MiningConfig)
    cache_size: int = 1000  # queries between two re-extractions of the training descriptors
    lambda_soft: float = 0.5
    temperatures: tuple[float, ...] = PAPER_TEMPERATURES  # teacher temperature of generation g
    tau0: float = 0.07
    margin: float = 0.1
    image_size: tuple[int, int] | None = (480, 640)  # (H, W); None keeps each image's size
    kmeans_images: int = 500
    kmeans_per_image: int = 100
    train_split: str = "train"
    val_split: str = "val"
    test_split: str | None = "test"
    eval_every_epoch: bool = True
    snapshot_queries: int = 8
    seed: int = 0
    device: str = "auto"
    feature_cache_gb: float = 4.0
    batch_size: int = 32  # images per batch when extracting descriptors
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.loss not in LOSS_TYPES:
            raise ValueError(f"unknown loss {self.loss!r}; choose one of {list(LOSS_TYPES)}")
        if self.generations < 1 or self.epochs < 1:
            raise ValueError("generations and epochs must be at least 1")
        if self.tuples_per_batch < 1 or self.cache_size < self.tuples_per_batch:
            raise ValueError("need tuples_per_batch >= 1 and cache_size >= tuples_per_batch")
        if not self.run or "/" in self.run or self.run.startswith("."):
            raise ValueError(f"run name {self.run!r} must be a plain folder name")

    def temperature(self, generation: int) -> float:
        """Teacher temperature of ``generation`` (the last one repeats beyond the list)."""
        return self.temperatures[min(generation, len(self.temperatures) - 1)]

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        out = asdict(self)
        out["temperatures"] = list(self.temperatures)
        out["image_size"] = list(self.image_size) if self.image_size else None
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Inverse of :meth:`to_dict`; unknown keys are refused."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s): {', '.join(unknown)}")
        values = dict(data)
        if isinstance(values.get("model"), dict):
            values["model"] = ModelConfig.from_dict(values["model"])
        if isinstance(values.get("mining"), dict):
            values["mining"] = MiningConfig(**values["mining"])
        if values.get("temperatures") is not None:
            values["temperatures"] = tuple(values["temperatures"])
        if values.get("image_size") is not None:
            values["image_size"] = tuple(values["image_size"])
        return cls(**values)

    def replace(self, **changes: Any) -> "TrainConfig":
        return replace(self, **changes)
