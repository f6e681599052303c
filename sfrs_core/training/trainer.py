"""The SFRS generation loop (docs/design.md §1): the :class:`Trainer` sets a run up and orchestrates it.

Generation 0 trains with the hard loss only (with ``generations=1`` the run *is* the SARE
baseline). Generation g ≥ 1 re-initialises the student to generation 0's initial weights,
freezes generation g−1 as teacher, and minimises ``L_hard + λ·L_soft`` (:mod:`.objective`, which
also scores the validation recall). Each epoch visits the trainable queries in chunks, mined
afresh before each (:mod:`.schedule`); ``latest.pt`` is written at chunk boundaries, so ``resume``
continues exactly where the last checkpoint was taken (:mod:`.run_writer`: the run folder).

The protocol is OpenIBL's (docs/protocol.md): generation 0 trains ``gen0_epochs``; the
negative cache lives through the whole run; validation recall after every epoch selects each
generation's kept checkpoint (best recall@5); the next generation's teacher is the previous
generation's last epoch (``teacher="last"``); PCA-whitening is fitted on ``pca_samples`` random
training images of the kept model.

Under ``torchrun`` (``sfrs_core.training.distributed``) each rank extracts a slice of every
descriptor set, trains on its own share of every chunk's queries, DDP averages the gradients,
the negative-cache rows the ranks mined are exchanged at every chunk's end (unless
``per_rank_negative_cache``: each rank keeps its own, as OpenIBL), and rank 0 alone writes the
run folder. One process (no torchrun) runs exactly the single-process code path.
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import load_dataset
from ..data.transforms import ImageTransform
from ..models.model import NetVLADModel, build_model
from ..retrieval.device import pick_device
from ..retrieval.results import QueryResults
from .._torchvision import torchvision
from ..io import atomic_write_json
from .checkpoint import load_checkpoint, model_payload, save_checkpoint
from .config import TrainConfig
from .distributed import DebugLog, DistContext, RankFailed, merge_negative_cache, rank_device, session, state_digest
from .environment import record_environment
from .feature_cache import PrefixFeatures
from .mining import TrainingTuple, TupleMiner
from .objective import (SplitFeatures, Subset, ddp_forward, evaluate_sharded, kmeans_init, sharded_descriptors,
                        soft_label_snapshot, step_batches, step_inputs, step_losses, sync_batchnorm)
from .precision import resolve_precision
from .run_writer import (TRUNK_WEIGHTS_FILE, RunExistsError, RunWriter, TrainingStopped,  # noqa: F401 - re-exported
                         negative_cache_payload, restore_negative_cache)
from .schedule import Position, Schedule

#: Test hook: behave as if a stop was requested once this many optimizer steps are done.
STOP_AT_ENV = "SFRS_TRAIN_STOP_AT_ITERATION"


def _trainable_state(model: NetVLADModel) -> dict[str, torch.Tensor]:
    """A copy of the weights training can change (the PCA layer is fitted only afterwards)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith("pca.")}


def _of_writer(name: str) -> property:
    """A trainer attribute that is its :class:`RunWriter`'s ``name``."""
    return property(lambda self: getattr(self.writer, name), lambda self, value: setattr(self.writer, name, value))


class Trainer:
    """Train (or resume) one run; :meth:`run` returns the run folder."""

    # the step log's state, kept by the writer (its metrics.jsonl, progress bar, clock and pending losses)
    metrics, _bar, _t0 = _of_writer("metrics"), _of_writer("bar"), _of_writer("t0")
    _loss_sum, _loss_steps = _of_writer("loss_sum"), _of_writer("loss_steps")

    def __init__(self, cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False, progress: bool = True,
                 should_stop: Callable[[], bool] | None = None, dist: DistContext | None = None):
        self.cfg = cfg
        self.run_dir = Path(cfg.runs_dir) / cfg.run
        self.resume = resume
        self.overwrite = overwrite
        self.dist = dist or DistContext()
        self.progress = progress and self.dist.is_main
        self.should_stop = should_stop or (lambda: False)
        self._debug = DebugLog(self.dist)
        stop_at = os.environ.get(STOP_AT_ENV)
        self._stop_at = int(stop_at) if stop_at else None
        self._broadcast_buffers = False
        self._built: NetVLADModel | None = None
        self._resumed_init = False  # resuming a run whose init.pt exists (set by _build_model)
        #: tuples this rank trains per step (``tuples_per_batch``, or its share with scope "step")
        self.rank_tuples = cfg.tuples_per_rank(self.dist.world_size)
        # The run folder's files are written through this module's atomic_write_json and
        # save_checkpoint, looked up at each write as when the writes lived here (tests patch them here).
        self.writer = RunWriter(cfg, self.run_dir, self.dist, self._debug, resume=resume, overwrite=overwrite,
                                progress=self.progress, write_json=lambda *a, **kw: atomic_write_json(*a, **kw),
                                save=lambda *a, **kw: save_checkpoint(*a, **kw))

    # ------------------------------------------------------------------ setup
    def _open_run_dir(self) -> None:
        """Create (or check, for a resume) and lock the run folder (:meth:`RunWriter.open`)."""
        self.writer.open()

    def _build_model(self) -> NetVLADModel:
        """The model, seeded as every run starts (the trunk's random parts and NetVLAD's), on CPU.

        The trunk's pretrained weights must load (``cfg.model.trunk_weights``, else torchvision's
        in the hub cache): otherwise a one-line :class:`~sfrs_core.models.backbones.TrunkWeightsError`
        (naming ``--trunk-weights FILE`` and ``import-weights``) ends the run before it writes
        anything, unless ``random_trunk`` (or a model config that is not ``pretrained``) asks for a
        random trunk. A resumed run whose ``init.pt`` exists takes every weight from there, so it
        needs none. Under torchrun every rank builds its own and they all stop if any failed."""
        cfg = self.cfg
        model_cfg = dataclasses.replace(cfg.model, pretrained=False) if cfg.random_trunk else cfg.model
        self._resumed_init = self.resume and bool(self.dist.from_main(lambda: (self.run_dir / "init.pt").is_file()))
        torch.manual_seed(cfg.seed)
        error: BaseException | None = None
        try:
            model = build_model(model_cfg, require_pretrained=not self._resumed_init)
        except Exception as err:  # noqa: BLE001 - re-raised below, after telling the other ranks
            error, model = err, None
        if self.dist.any(error is not None):
            raise error if error is not None else RankFailed("another rank could not build the model "
                                                             "(its log says why)")
        self._built = model
        return model

    def _record_trunk_weights(self) -> None:
        """``trunk_weights.json``, when this session makes the initial weights (see :class:`RunWriter`)."""
        self.writer.record_trunk_weights(self._built)

    def _prepare(self) -> None:
        cfg = self.cfg
        model = self._built if self._built is not None else self._build_model()
        self.device = rank_device(pick_device(None if cfg.device == "auto" else cfg.device), self.dist)
        self.precision = resolve_precision(cfg.amp, self.device)
        if self.dist.is_main:
            record_environment(self.run_dir, self.device)
        with self.writer.stage("reading the dataset"):
            self.dataset = load_dataset(cfg.data)
        self.train_split = self.dataset[cfg.train_split]
        self.model = model.to(self.device)
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self._broadcast_buffers = sync_batchnorm(self.model, self.dist, self.device)
        self.transform = ImageTransform(cfg.image_size, self.model.normalization)
        self.features: dict[str, SplitFeatures] = {}
        self.jitter = torchvision.transforms.ColorJitter(*cfg.color_jitter) if cfg.color_jitter else None
        self.miner = TupleMiner(self.train_split, cfg.mining)
        if len(self.miner.trainable) == 0:
            raise ValueError(f"no training query of {cfg.data} has a positive within {cfg.mining.pos_radius_m} m")
        self.schedule = Schedule(cfg, self.dist, self.rank_tuples, self.miner, jitter=self.jitter is not None)
        if self.dist.enabled and not self._resumed_init:  # every rank's own frozen features, while rank 0 runs k-means
            self.split_features(cfg.train_split)
        # rank 0 reads init.pt or runs k-means and writes it; every rank starts from its weights
        self.init_state = self.dist.from_main(self._initial_state, tensors=True)
        self.model.load_state_dict(self.init_state)

    def _initial_state(self) -> dict[str, torch.Tensor]:
        """The weights every generation starts from: ``init.pt``, or k-means (then written there)."""
        cfg, init = self.cfg, self.run_dir / "init.pt"
        if init.is_file():
            return load_checkpoint(init)["state_dict"]
        self.split_features(cfg.train_split)  # the features k-means samples, reported as their own stage
        with self.writer.stage("k-means initialisation of NetVLAD"):
            kmeans_init(self.model, self._training_images(cfg.kmeans_images, [cfg.seed, 0xC1]), cfg)
        state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        save_checkpoint(init, model_payload(self.model))
        return state

    def split_features(self, name: str) -> SplitFeatures:
        if name not in self.features:
            with self.writer.stage(f"frozen features of the {name} split"):
                self.features[name] = SplitFeatures(self.model, self.dataset[name], self.transform, self.cfg,
                                                    self.device, self.progress)
        return self.features[name]

    def _training_images(self, count: int, seed: list[int]) -> list[tuple[PrefixFeatures, np.ndarray]]:
        """``count`` random images of the training set (:meth:`Schedule.training_images`) and their features."""
        train = self.split_features(self.cfg.train_split)
        q_idx, db_idx = self.schedule.training_images(count, seed, len(train.db))
        return [(train.q, q_idx), (train.db, db_idx)]

    def _descriptors(self, model: NetVLADModel, source, use_pca: bool | None = False) -> torch.Tensor:
        """:func:`~.objective.sharded_descriptors` of ``source``: every rank gets them all, in order."""
        return sharded_descriptors(model, source, self.dist, self.precision, self.cfg.batch_size, use_pca=use_pca)

    # ------------------------------------------------------------------ steps (objective.py)
    def train_step(self, student: NetVLADModel, teacher: NetVLADModel | None, tuples: list[TrainingTuple],
                   generation: int, augment_seed: int | None = None,
                   images: tuple[torch.Tensor | None, torch.Tensor | None] | None = None,
                   forward: Callable[..., dict[str, torch.Tensor]] | None = None) -> dict[str, torch.Tensor]:
        """Losses of one batch of tuples. Every image is loaded (and augmented) once; the
        student and the teacher see the same images. ``augment_seed`` seeds the ColorJitter.

        ``images``: the query and database images a DataLoader worker already read (None where
        the frozen-feature cache serves them); ``forward``: what computes the losses from the
        prefix features (the DDP-wrapped :meth:`losses` under torchrun)."""
        train = self.split_features(self.cfg.train_split)
        augment = self.jitter if augment_seed is not None else None
        x_q, x_db, counts = step_inputs(train.q, train.db, tuples, generation, self.precision, augment, augment_seed,
                                        images)
        return (forward or self.losses)(student, teacher, x_q, x_db, counts, generation)

    def losses(self, student: NetVLADModel, teacher: NetVLADModel | None, x_q: torch.Tensor, x_db: torch.Tensor,
               counts: list[int], generation: int) -> dict[str, torch.Tensor]:
        """The step's losses from the frozen-prefix features of its images (:func:`~.objective.step_losses`)."""
        return step_losses(self.cfg, self.precision, student, teacher, x_q, x_db, counts, generation)

    def _batches(self, plan: list[tuple[list[TrainingTuple], int | None]], generation: int):
        """``(tuples, augment_seed, images)`` of each planned batch (:func:`~.objective.step_batches`)."""
        train = self.split_features(self.cfg.train_split)
        return step_batches(plan, generation, train.q, train.db, self.jitter, self.cfg.num_workers, self.device)

    def _log_step(self, pos: Position, losses: dict[str, torch.Tensor], opt, g: int, epoch: int) -> None:
        """The step's losses into ``metrics.jsonl``, every ``log_every`` steps (:meth:`RunWriter.log_step`)."""
        self.writer.log_step(pos, losses, opt, g, epoch, self.cfg.log_every)

    def _flush_losses(self, pos: Position, opt, g: int, epoch: int) -> None:
        self.writer.flush_losses(pos, opt, g, epoch)

    # ------------------------------------------------------------------ evaluation and snapshots
    def evaluate_split(self, model: NetVLADModel, split: str, generation: int) -> QueryResults | None:
        """Per-query results of ``model`` on ``split`` (on rank 0; None on the other ranks)."""
        return self._evaluate(model, split, generation)[0]

    def _evaluate(self, model: NetVLADModel, split: str, generation: int) -> tuple[QueryResults | None, dict[int, float]]:
        """Sharded extraction, then rank 0 searches and scores; every rank gets the recall@N."""
        return evaluate_sharded(model, self.split_features(split), self.cfg, self.dist, self.precision, generation,
                                self.dataset.root)

    def soft_label_snapshot(self, teacher: NetVLADModel, generation: int) -> dict[str, np.ndarray]:
        """The k×9 soft labels ``teacher`` (generation g) gives generation g+1, on fixed val queries."""
        return soft_label_snapshot(self.cfg, self.split_features(self.cfg.val_split), teacher, generation)

    def _pca_descriptors(self, model: NetVLADModel) -> torch.Tensor:
        """VLAD descriptors of ``pca_samples`` random training images (queries and database)."""
        parts = [self._descriptors(model, Subset(source, idx))
                 for source, idx in self._training_images(self.cfg.pca_samples, [self.cfg.seed, 0xCA])]
        return torch.cat(parts)

    # ------------------------------------------------------------------ the loop
    def run(self) -> Path:
        """Train every generation (or what is left of them); returns the run folder."""
        self._build_model()  # no pretrained trunk weights (and no --random-trunk): stop before writing anything
        self._open_run_dir()
        writer = self.writer
        with writer.session(self.should_stop):
            self._record_trunk_weights()
            pos = Position()
            state = self.dist.from_main(writer.resume_state, tensors=True)
            if state is not None:
                pos = Position(state["generation"], state["epoch"], state["chunk"], state["iteration"])
            # From here progress.json names this process: a watcher (the app) follows its pid while the
            # set-up (dataset, frozen features, k-means) runs; total_iterations 0 means "preparing".
            writer.pos = pos
            writer.progress("running", pos)
            self._prepare()
            if state is not None and "negative_cache" in state:  # the cache lives through the whole run
                self._restore_negative_cache(state)
            writer.start(pos, state, self.schedule.total_iterations(pos))
            for g in range(pos.generation, self.cfg.generations):
                # A generation-boundary checkpoint holds no student: the generation starts afresh.
                mid_generation = state is not None and state["generation"] == g and "student" in state
                self._generation(g, pos, state if mid_generation else None)
                pos = Position(g + 1, 0, 0, pos.iteration)
                state = None
            self.dist.barrier()
            writer.finish(pos)
        return self.run_dir

    def _stop_requested(self, pos: Position) -> bool:
        """A stop was asked for (on any rank: they all stop at the same step)."""
        local = self.should_stop() or (self._stop_at is not None and pos.iteration >= self._stop_at)
        return self.dist.any(local)

    def _generation(self, g: int, pos: Position, state: dict[str, Any] | None) -> None:
        cfg, writer = self.cfg, self.writer
        student = self.model
        student.load_state_dict(self.init_state)  # re-initialised: the same start as generation 0
        teacher = self.writer.teacher(g, self.device) if g >= 1 else None
        if state is not None:
            student.load_state_dict(state["student"])
        scaler = self.precision.grad_scaler()  # a pass-through unless float16
        opt, sched = self.schedule.optimizer(student, scaler, state)
        # the epoch kept so far: its validation recall@N and weights (OpenIBL's best_recall5)
        selection: dict[str, Any] = {"epoch": -1, "recall": -1.0, "state": None}
        if state is not None:
            selection = state.get("selection", selection)
        forward = ddp_forward(self.dist, self.device, student, teacher, self.losses, self._broadcast_buffers)
        writer.reset_losses()
        train = self.split_features(cfg.train_split)
        epochs = cfg.epochs_of(g)
        for epoch in range(pos.epoch, epochs):
            chunks = self.schedule.chunks(g, epoch)
            first_chunk = pos.chunk if epoch == pos.epoch else 0
            for c in range(first_chunk, len(chunks)):
                student.eval()
                self.miner.refresh(self._descriptors(student, train.db).numpy(),
                                   self._descriptors(student, train.q).numpy(), rerank=g >= 1)
                plan = self.schedule.plan(chunks[c], self.schedule.mining_rng(g, epoch, c))
                student.train()
                for tuples, augment_seed, images in self._batches(plan, g):
                    if self._stop_requested(pos):
                        raise TrainingStopped(f"stopped at iteration {pos.iteration}; resume from {self.run_dir / 'latest.pt'}")
                    losses = self.train_step(student, teacher, tuples, g, augment_seed, images=images, forward=forward)
                    opt.zero_grad(set_to_none=True)
                    scaler.scale(losses["loss"]).backward()
                    scaler.step(opt)
                    scaler.update()
                    pos.iteration += 1
                    pos.generation, pos.epoch, pos.chunk = g, epoch, c
                    writer.pos = pos
                    self._debug.write({"event": "step", "iteration": pos.iteration, "generation": g, "epoch": epoch,
                                       "chunk": c, "queries": [t.query for t in tuples]})
                    self._log_step(pos, losses, opt, g, epoch)
                    writer.stepped(pos)
                merge_negative_cache(self.miner.negative_cache, [t.query for tuples, _ in plan for t in tuples],
                                     self.dist, per_rank=cfg.per_rank_negative_cache)
                if self._broadcast_buffers:  # CPU, trainable BatchNorm: extract with rank 0's statistics
                    self.dist.broadcast_module(student, buffers_only=True)
                if c + 1 < len(chunks):
                    writer.save_latest(Position(g, epoch, c + 1, pos.iteration), student, opt, sched, selection,
                                       self.miner.negative_cache, scaler)
            self._flush_losses(pos, opt, g, epoch)  # log_every > 1: the epoch's last steps too
            sched.step()
            if cfg.eval_every_epoch or epoch + 1 == epochs:
                _, recall = self._evaluate(student, cfg.val_split, g)
                writer.eval_record(pos, g, epoch, cfg.val_split, False, recall)
                n = cfg.select_recall_n
                score = recall.get(n, -1.0) if n is not None else float(epoch)
                if score > selection["recall"]:  # strictly better: ties keep the earlier epoch
                    selection = {"epoch": epoch, "recall": score, "state": _trainable_state(student)}
            writer.save_latest(Position(g, epoch + 1, 0, pos.iteration), student, opt, sched, selection,
                               self.miner.negative_cache, scaler)
        self._finish_generation(g, student, pos, selection)

    def _finish_generation(self, g: int, student: NetVLADModel, pos: Position, selection: dict[str, Any]) -> None:
        cfg = self.cfg
        student.eval()
        last_epoch = cfg.epochs_of(g) - 1
        kept = selection["epoch"] if selection["state"] is not None else last_epoch
        main = self.dist.is_main  # rank 0 takes the snapshot and writes every file
        snapshot: dict[str, np.ndarray] = {}
        if cfg.teacher == "last" and main:  # the soft labels the next generation's teacher weights give
            snapshot = self.soft_label_snapshot(student, g)
            if kept != last_epoch and g + 1 < cfg.generations:
                save_checkpoint(self.run_dir / f"gen{g}_last.pt", model_payload(student, generation=g, epoch=last_epoch))
        if kept != last_epoch:
            student.load_state_dict(selection["state"], strict=False)
        if cfg.teacher == "selected" and main:
            snapshot = self.soft_label_snapshot(student, g)
        if student.pca is not None:
            with self.writer.stage("PCA whitening"):
                student.pca.fit(self._pca_descriptors(student))
                self.dist.broadcast_module(student.pca)  # every rank evaluates with rank 0's fit
        recalls = {}
        for split in [s for s in (cfg.val_split, cfg.test_split) if s and s in self.dataset.splits]:
            res, recall = self._evaluate(student, split, g)
            if main:
                res.save(self.run_dir / "results" / f"{split}_gen{g}.npz")
            recalls[split] = recall
            self.writer.eval_record(pos, g, kept, split, student.pca is not None, recall, final=True,
                                    selected_epoch=kept)
        if self._debug.enabled:
            self._debug.write({"event": "generation", "generation": g, "digest": state_digest(student.state_dict())})
        caches = negative_cache_payload(self.miner.negative_cache, self.cfg, self.dist)  # every rank takes part
        if main:
            self.writer.write_generation(g, student, pos, selection, kept, snapshot, recalls, caches)
        self.dist.barrier()
        self.writer.progress("running", Position(g + 1, 0, 0, pos.iteration))

    def _restore_negative_cache(self, state: dict[str, Any]) -> None:
        """The negative cache a resume state holds (:func:`restore_negative_cache`)."""
        restore_negative_cache(self.miner.negative_cache, state, self.cfg, self.dist)


def train(cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False, progress: bool = True,
          should_stop: Callable[[], bool] | None = None) -> Path:
    """Train a run described by ``cfg`` (see :class:`Trainer`); returns its folder. Under torchrun
    every rank calls this and joins the process group here."""
    with session() as ctx:
        return Trainer(cfg, resume=resume, overwrite=overwrite, progress=progress, should_stop=should_stop,
                       dist=ctx).run()


def resume_run(run_dir: str | os.PathLike, *, progress: bool = True, should_stop: Callable[[], bool] | None = None) -> Path:
    """Continue the run in ``run_dir`` from its ``latest.pt`` with its own ``config.json``."""
    run_dir = Path(run_dir)

    def read() -> dict[str, Any]:
        cfg_file = run_dir / "config.json"
        if not cfg_file.is_file():
            raise FileNotFoundError(f"{run_dir}: no config.json; not a run folder")
        return json.loads(cfg_file.read_text())

    with session() as ctx:  # rank 0 reads the config; the others receive it
        cfg = TrainConfig.from_dict(ctx.from_main(read))
        cfg = cfg.replace(runs_dir=str(run_dir.parent), run=run_dir.name)
        return Trainer(cfg, resume=True, progress=progress, should_stop=should_stop, dist=ctx).run()
