"""The run's schedule: where a step falls, each epoch's chunks, the steps left, each chunk's mined plan.

Each epoch visits the trainable queries in a seeded order, in chunks of ``cache_size``; before
each chunk the training descriptors are re-extracted and mining starts afresh. ``latest.pt`` is
written at chunk boundaries (all random draws derive from (seed, generation, epoch, chunk)), so
``resume`` continues exactly where the last checkpoint was taken.

Under ``torchrun`` each rank trains on its own share of every chunk's queries, mined with its own
generator, seeded by (seed, generation, epoch, chunk, world size, rank); ``tuples_per_batch``
counts per rank or per step over all ranks (``tuples_per_batch_scope``). The learning rate follows
its own schedule (StepLR over epochs: :meth:`Schedule.optimizer`), and the random training images
k-means and PCA sample are drawn from seeds of their own (:meth:`Schedule.training_images`).
"""
from __future__ import annotations

from dataclasses import dataclass

from typing import Any

import numpy as np
import torch

from .config import TrainConfig
from ..models.model import NetVLADModel
from .distributed import DistContext, batches_per_chunk, strided_batches
from .mining import TrainingTuple, TupleMiner


@dataclass
class Position:
    """Where the run is: the generation, epoch and chunk under way and the optimizer steps done."""

    generation: int = 0
    epoch: int = 0
    chunk: int = 0
    iteration: int = 0


class Schedule:
    """The order of a run's steps at this world size: ``rank_tuples`` tuples per step on each rank."""

    def __init__(self, cfg: TrainConfig, dist: DistContext, rank_tuples: int, miner: TupleMiner, jitter: bool):
        self.cfg, self.dist, self.rank_tuples, self.miner = cfg, dist, rank_tuples, miner
        self.jitter = jitter  # a ColorJitter seed is drawn for every batch

    def chunks(self, generation: int, epoch: int) -> list[np.ndarray]:
        order = np.random.default_rng([self.cfg.seed, generation, epoch]).permutation(self.miner.trainable)
        return [order[i:i + self.cfg.cache_size] for i in range(0, len(order), self.cfg.cache_size)]

    def chunk_steps(self) -> list[int]:
        """Optimizer steps of each chunk of an epoch at this world size (the same every epoch)."""
        return [batches_per_chunk(len(c), self.rank_tuples, self.dist.world_size) for c in self.chunks(0, 0)]

    def iterations_per_epoch(self) -> int:
        return sum(self.chunk_steps())

    def total_iterations(self, pos: Position | None = None) -> int:
        """Steps of the whole run: those done before ``pos`` plus those left from it at this world
        size (a run resumed on another number of ranks takes other steps from there)."""
        pos = pos or Position()
        steps, left = self.chunk_steps(), 0
        for g in range(pos.generation, self.cfg.generations):
            for e in range(pos.epoch if g == pos.generation else 0, self.cfg.epochs_of(g)):
                left += sum(steps[pos.chunk if (g, e) == (pos.generation, pos.epoch) else 0:])
        return pos.iteration + left

    def mining_rng(self, generation: int, epoch: int, chunk: int) -> np.random.Generator:
        """The generator of a chunk's mining and jitter seeds: (seed, generation, epoch, chunk) alone,
        plus (world size, rank) with several ranks, so that the ranks draw differently."""
        key = [self.cfg.seed, generation, epoch, chunk]
        if self.dist.enabled:
            key += [self.dist.world_size, self.dist.rank]
        return np.random.default_rng(key)

    def plan(self, queries: np.ndarray, rng: np.random.Generator) -> list[tuple[list[TrainingTuple], int | None]]:
        """This rank's batches of a chunk, mined (the descriptors are fixed for the chunk, so mining
        it all before the first step gives the same tuples as mining batch by batch), each with its
        ColorJitter seed."""
        plan = []
        for batch in strided_batches(queries, self.rank_tuples, self.dist):
            tuples = [self.miner.mine(int(q), rng) for q in batch]
            plan.append((tuples, int(rng.integers(2**62)) if self.jitter else None))
        return plan

    def training_images(self, count: int, seed: list[int], n_db: int) -> tuple[np.ndarray, np.ndarray]:
        """``count`` random images of OpenIBL's training set (the trainable queries and the
        ``n_db`` database images), as sorted indices into the queries and into the database."""
        queries = self.miner.trainable
        n_q, n = len(queries), len(queries) + n_db
        pick = np.sort(np.random.default_rng(seed).choice(n, size=min(count, n), replace=False))
        return queries[pick[pick < n_q]], pick[pick >= n_q] - n_q

    def optimizer(self, student: NetVLADModel, scaler: torch.amp.GradScaler, state: dict[str, Any] | None
                  ) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.StepLR]:
        """SGD over the student's trainable weights and its learning-rate schedule (StepLR over
        epochs), restored (with the grad ``scaler``) from a mid-generation resume ``state``."""
        cfg = self.cfg
        params = [p for p in student.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_step_epochs, gamma=cfg.lr_gamma)
        if state is not None:
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            if "scaler" in state and scaler.is_enabled():
                scaler.load_state_dict(state["scaler"])
        return opt, sched
