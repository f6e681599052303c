"""Training configuration, serialised as ``config.json`` in the run folder."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from ..losses import LOSS_TYPES, SIMILARITIES, TRIPLET_MARGIN
from ..models.model import ModelConfig
from .mining import MiningConfig

PAPER_TEMPERATURES = (0.07, 0.07, 0.06, 0.05)
OPENIBL_COLOR_JITTER = (0.7, 0.7, 0.7, 0.5)  # brightness, contrast, saturation, hue
TEACHERS = ("last", "selected")
OPENIBL_SEED = 43  # OpenIBL's --seed default (its k-means random_state too)
KMEANS_INITS = ("faiss", "kmeans++")
BATCH_SCOPES = ("rank", "step")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on. Defaults are OpenIBL's SFRS script
    (``examples/netvlad_img_sfrs.py`` with ``scripts/train_sfrs_dist.sh``): VGG16, 4 generations,
    generation 0 one epoch, then 5 per generation.

    * ``gen0_epochs``: epochs of generation 0 (None: ``epochs``). OpenIBL starts generation 0 at
      its last epoch, so it trains one.
    * ``similarity``: the SARE logits, ``"dot"`` (sim/τ0, SFRS) or ``"euclidean"`` (-‖q-x‖²,
      OpenIBL's SARE baseline script); see ``sfrs_core.losses``.
    * ``color_jitter``: ColorJitter(brightness, contrast, saturation, hue) on every training image
      (OpenIBL's 0.7, 0.7, 0.7, 0.5), None for none. Augmented images must go through the whole
      trunk, so with jitter the training tuples never come from the frozen-feature cache (which
      still serves the un-augmented extraction for mining and evaluation).
    * ``select_recall_n``: keep, per generation, the epoch with the best validation recall@N
      (OpenIBL: 5; ties keep the earlier epoch); None keeps the last epoch.
    * ``teacher``: which weights of generation g-1 teach generation g: ``"last"`` (its last epoch,
      as OpenIBL copies the live model) or ``"selected"`` (the kept checkpoint).
    * ``pca_samples``: PCA-whitening is fitted on this many random training images (queries and
      database) of the selected model (OpenIBL: 10,000).
    * ``amp``: mixed precision in the training step and the mining/evaluation extraction
      (bf16 autocast where supported, else fp16 with a GradScaler; bf16 on CPU). Off by default.
    * ``channels_last``: run the trunk in channels_last memory format (faster convolutions on
      recent GPUs with ``amp``).
    * ``log_every``: write a step record to ``metrics.jsonl`` every N optimizer steps, with the
      losses averaged over those N steps (reading a loss forces a host-device sync; 1 = every step).
    * ``random_trunk``: train from a randomly initialised trunk on purpose. Otherwise a run whose
      trunk's pretrained weights cannot be loaded (``model.trunk_weights``, or torchvision's
      ImageNet weights in the torch hub cache) refuses to start. The run records where its trunk
      weights came from in ``trunk_weights.json``.
    * ``kmeans_init``: the NetVLAD k-means, ``"faiss"`` (random-init faiss k-means) or
      ``"kmeans++"`` (OpenIBL's scikit-learn k-means++ with ``random_state=seed``; the paper preset).
    * ``tuples_per_batch_scope``: what ``tuples_per_batch`` counts under torchrun: ``"rank"``
      (each of the W ranks trains that many per step: W x as many per step) or ``"step"`` (that
      many per step over all ranks, ``tuples_per_batch / W`` each: OpenIBL's 4 GPUs x 1 tuple
      is the paper preset's 4 on any number of GPUs dividing 4). One process: the same.
    * ``per_rank_negative_cache``: under torchrun each rank keeps its own negative cache, updated
      only by the queries it mined, as OpenIBL's per-rank samplers do (the exact 4-GPU replica);
      by default the ranks' rows are merged at every chunk end so every rank sees every query's
      previous negatives, as one process does. One process: no difference.

    Only ``tuples_per_batch_scope`` and ``per_rank_negative_cache`` act on the number of
    processes; a run started with ``torchrun`` on N processes resumes on any other number (see
    ``sfrs_core.training.distributed``).
    """

    data: str
    run: str = "sfrs"
    runs_dir: str = "runs"
    model: ModelConfig = field(default_factory=ModelConfig.paper)
    loss: str = "sare_ind"
    similarity: str = "dot"
    generations: int = 4
    epochs: int = 5
    gen0_epochs: int | None = 1
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
    margin: float = TRIPLET_MARGIN  # √0.1 on non-squared distances, as OpenIBL trains it
    color_jitter: tuple[float, float, float, float] | None = OPENIBL_COLOR_JITTER
    select_recall_n: int | None = 5
    teacher: str = "last"
    pca_samples: int = 10000
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
    num_workers: int = 0  # DataLoader workers for images read from disk (pinned memory on CUDA)
    amp: bool = False
    channels_last: bool = False
    log_every: int = 1
    random_trunk: bool = False
    kmeans_init: str = "faiss"  # the paper preset: "kmeans++", as OpenIBL
    tuples_per_batch_scope: str = "rank"  # the paper preset: "step", as OpenIBL's 4 GPUs x 1 tuple
    per_rank_negative_cache: bool = False

    def __post_init__(self) -> None:
        if self.loss not in LOSS_TYPES:
            raise ValueError(f"unknown loss {self.loss!r}; choose one of {list(LOSS_TYPES)}")
        if self.generations < 1 or self.epochs < 1 or (self.gen0_epochs is not None and self.gen0_epochs < 1):
            raise ValueError("generations, epochs and gen0_epochs must be at least 1")
        if self.similarity not in SIMILARITIES:
            raise ValueError(f"unknown similarity {self.similarity!r}; choose one of {list(SIMILARITIES)}")
        if self.teacher not in TEACHERS:
            raise ValueError(f"unknown teacher {self.teacher!r}; choose one of {list(TEACHERS)}")
        if self.color_jitter is not None and len(self.color_jitter) != 4:
            raise ValueError("color_jitter takes 4 values: brightness, contrast, saturation, hue")
        if self.tuples_per_batch < 1 or self.cache_size < self.tuples_per_batch:
            raise ValueError("need tuples_per_batch >= 1 and cache_size >= tuples_per_batch")
        if self.log_every < 1 or self.num_workers < 0:
            raise ValueError("need log_every >= 1 and num_workers >= 0")
        if self.random_trunk and isinstance(self.model, ModelConfig) and self.model.trunk_weights is not None:
            raise ValueError("random_trunk (--random-trunk) and model.trunk_weights (--trunk-weights) "
                             "contradict each other")
        if self.kmeans_init not in KMEANS_INITS:
            raise ValueError(f"unknown kmeans_init {self.kmeans_init!r}; choose one of {list(KMEANS_INITS)}")
        if self.tuples_per_batch_scope not in BATCH_SCOPES:
            raise ValueError(f"unknown tuples_per_batch_scope {self.tuples_per_batch_scope!r}; "
                             f"choose one of {list(BATCH_SCOPES)}")
        if not self.run or "/" in self.run or self.run.startswith("."):
            raise ValueError(f"run name {self.run!r} must be a plain folder name")

    def epochs_of(self, generation: int) -> int:
        """Number of epochs generation ``generation`` trains."""
        return self.gen0_epochs if generation == 0 and self.gen0_epochs is not None else self.epochs

    def tuples_per_rank(self, world_size: int) -> int:
        """Tuples each of ``world_size`` ranks trains per step (see ``tuples_per_batch_scope``)."""
        if self.tuples_per_batch_scope == "rank" or world_size == 1:
            return self.tuples_per_batch
        if self.tuples_per_batch % world_size:
            raise ValueError(
                f"tuples_per_batch {self.tuples_per_batch} counts the tuples of one step over all ranks "
                f"(tuples_per_batch_scope 'step', the paper preset) and does not split over {world_size} ranks; "
                f"pass --tuples-per-batch a multiple of {world_size}, or --tuples-per-batch-scope rank for "
                f"{self.tuples_per_batch} per rank")
        return self.tuples_per_batch // world_size

    def temperature(self, generation: int) -> float:
        """Teacher temperature of ``generation`` (the last one repeats beyond the list)."""
        return self.temperatures[min(generation, len(self.temperatures) - 1)]

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        out = asdict(self)
        out["temperatures"] = list(self.temperatures)
        out["image_size"] = list(self.image_size) if self.image_size else None
        out["color_jitter"] = list(self.color_jitter) if self.color_jitter else None
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
        if values.get("color_jitter") is not None:
            values["color_jitter"] = tuple(values["color_jitter"])
        for key, before in _BEFORE_OPENIBL_PROTOCOL.items():
            values.setdefault(key, before)  # a run written before these settings existed trained so
        return cls(**values)

    def replace(self, **changes: Any) -> "TrainConfig":
        return replace(self, **changes)


#: What runs written before the OpenIBL-protocol settings existed were trained with.
_BEFORE_OPENIBL_PROTOCOL = {"gen0_epochs": None, "margin": 0.1, "color_jitter": None, "select_recall_n": None,
                            "teacher": "last", "similarity": "dot"}
