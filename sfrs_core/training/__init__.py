"""Training: SARE/SFRS generations, tuple mining, checkpoints and the run folder."""
from .config import TrainConfig
from .mining import MiningConfig
from .trainer import RunExistsError, Trainer, TrainingStopped, resume_run, train

__all__ = ["TrainConfig", "MiningConfig", "Trainer", "TrainingStopped", "RunExistsError", "train", "resume_run"]
