"""Everything a run writes to ``runs/NAME/``: the locked folder, progress, metrics and checkpoints.

Run folder: ``config.json``, ``trunk_weights.json``, ``metrics.jsonl``, ``progress.json``, ``init.pt``,
``gen{g}.pt`` (the kept checkpoint), ``gen{g}_last.pt`` (the teacher, when it differs), ``best.json`` (the
run's best generation by validation recall), ``environment.json`` (package versions, threads
and device of every session), ``latest.pt``, ``soft_labels/gen{g}.npz``,
``results/{split}_gen{g}.npz``.

``trunk_weights.json`` records where the trunk's weights came from (file and SHA-256, torchvision's
named weights, or random) and the input normalisation they take.

Under ``torchrun`` rank 0 alone writes the run folder. A checkpoint holds nothing that depends on
the number of ranks (per-rank caches are kept beside the merged one and used when resumed on as
many ranks), so a run resumes on any number.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..io import atomic_path, atomic_write_json
from ..models.backbones import weights_provenance
from ..models.model import NetVLADModel
from .checkpoint import (load_checkpoint, load_checkpoint_or_previous, model_from_payload, model_payload, previous_path,
                         save_checkpoint)
from .config import TrainConfig
from .distributed import DebugLog, DistContext, gather_negative_caches, state_digest
from .metrics_log import MetricsLog, NullMetricsLog, truncate_metrics
from .schedule import Position

#: Where a run records its trunk weights' origin and normalisation (read back by ``sfrs_core.runs.Run.trunk_weights``).
TRUNK_WEIGHTS_FILE = "trunk_weights.json"

log = logging.getLogger(__name__)


class RunExistsError(FileExistsError):
    """The run folder exists and neither resume nor overwrite was asked for."""


class TrainingStopped(Exception):
    """Raised when a stop was requested; ``latest.pt`` holds the state to resume from."""


class RunWriter:
    """The run folder of one training session: rank 0 writes, every rank takes part in the collectives.

    ``write_json`` and ``save`` are how files are written (:func:`~sfrs_core.io.atomic_write_json`
    and :func:`~sfrs_core.training.checkpoint.save_checkpoint` unless the trainer hands in others)."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, dist: DistContext, debug: DebugLog, *, resume: bool,
                 overwrite: bool, progress: bool, write_json: Callable[[Path, Any], Any] = atomic_write_json,
                 save: Callable[..., Any] = save_checkpoint):
        self.cfg, self.run_dir, self.dist, self.debug = cfg, run_dir, dist, debug
        self.resume, self.overwrite, self.show_bar = resume, overwrite, progress
        self._write_json, self._save = write_json, save
        self._lock_file = None
        self.pos: Position | None = None  # the position progress.json reports when given none
        self.total = 0  # the run's steps; 0 while preparing
        self.t0: float | None = None  # when the run started (a resumed run: as if it had never stopped)
        self.process_t0: float | None = None
        self.start_iteration = 0
        self.progress_written = time.time()
        self.stage_name: str | None = None
        self.stage_started: float | None = None
        self.metrics: MetricsLog | NullMetricsLog | None = None
        self.bar: tqdm | None = None
        self.reset_losses()

    # ------------------------------------------------------------------ the folder
    def open(self) -> None:
        """Create (or check, for a resume) and lock the run folder: rank 0's job; the others learn
        whether it worked."""
        self.dist.from_main(self._open_main)

    def _open_main(self) -> None:
        exists = (self.run_dir / "config.json").is_file()
        if exists and not self.resume:
            if not self.overwrite:
                raise RunExistsError(f"{self.run_dir} already holds a run; resume it (--resume) or choose another --run name")
            shutil.rmtree(self.run_dir)
            exists = False
        if self.resume and not exists:
            raise FileNotFoundError(f"{self.run_dir}: no run to resume")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.run_dir / ".lock", "w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"{self.run_dir} is being trained by another process") from None
        self._lock_file.write(str(os.getpid()))
        self._lock_file.flush()
        if not exists:
            self._write_json(self.run_dir / "config.json", self.cfg.to_dict())

    @contextlib.contextmanager
    def session(self, should_stop: Callable[[], bool]):
        """The run: progress.json says how it ended if it did not finish (stopped, or failed with
        the error), and the run folder is unlocked in any case."""
        try:
            yield
        except TrainingStopped:
            self.progress("stopped", None)
            raise
        except BaseException as err:
            if should_stop():  # a stop signal arrived inside a library call, which wrapped it
                self.progress("stopped", None)
                raise TrainingStopped(f"stopped during {type(err).__name__}: {err}"[:300]) from err
            self.progress("failed", None, error=f"{type(err).__name__}: {err}")
            raise
        finally:
            if self._lock_file is not None:
                self._lock_file.close()

    def record_trunk_weights(self, model: NetVLADModel) -> None:
        """Rank 0: ``trunk_weights.json``, when this session makes the initial weights (no ``init.pt``
        yet): where the trunk's weights came from and their input normalisation."""
        if not self.dist.is_main or (self.run_dir / "init.pt").is_file():
            return
        record = {**weights_provenance(model.trunk), "random_trunk": bool(self.cfg.random_trunk),
                  "recorded": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        self._write_json(self.run_dir / TRUNK_WEIGHTS_FILE, record)

    def resume_state(self) -> dict[str, Any] | None:
        """``latest.pt`` (or its previous version) when resuming and there is one."""
        latest = self.run_dir / "latest.pt"
        has_latest = latest.is_file() or previous_path(latest).is_file()
        return load_checkpoint_or_previous(latest) if self.resume and has_latest else None

    # ------------------------------------------------------------------ progress and metrics
    def start(self, pos: Position, state: dict[str, Any] | None, total: int) -> None:
        """Set up: ``metrics.jsonl`` cut back to what the resume state had seen, the clocks, the bar."""
        if self.dist.is_main:
            if state is not None:
                truncate_metrics(self.run_dir / "metrics.jsonl", pos.iteration, state.get("metrics_records"))
            elif self.resume:
                truncate_metrics(self.run_dir / "metrics.jsonl", 0)
        self.metrics = MetricsLog(self.run_dir / "metrics.jsonl") if self.dist.is_main else NullMetricsLog()
        self.t0 = time.time() - (state["elapsed_s"] if state else 0.0)
        self.process_t0, self.start_iteration = time.time(), pos.iteration
        self.total = total
        self.bar = tqdm(total=self.total, initial=pos.iteration, desc=self.cfg.run, unit="it",
                        disable=not self.show_bar)
        self.progress("running", pos)  # set up: the total is known

    def finish(self, pos: Position) -> None:
        self.progress("finished", pos)
        self.bar.close()
        self.metrics.close()

    def seconds(self) -> float:
        """The run's time so far, as metrics records give it."""
        return round(time.time() - self.t0, 2)

    def progress(self, status: str, pos: Position | None, error: str | None = None) -> None:
        if not self.dist.is_main:  # one writer
            return
        pos = pos or self.pos or Position()
        total = self.total
        now = time.time()
        elapsed = now - (self.t0 if self.t0 is not None else now)
        # ETA from this process's own pace (a resumed run has not done the earlier iterations)
        done = max(pos.iteration - self.start_iteration, 0)
        spent = now - (self.process_t0 if self.process_t0 is not None else now)
        eta = spent / done * (total - pos.iteration) if done and status == "running" else None
        self.progress_written = now
        self._write_json(self.run_dir / "progress.json", {
            "status": status, "pid": os.getpid(), "generation": pos.generation, "generations": self.cfg.generations,
            "epoch": pos.epoch, "epochs": self.cfg.epochs_of(pos.generation) if pos.generation < self.cfg.generations
            else self.cfg.epochs, "iteration": pos.iteration, "total_iterations": total,
            "elapsed_s": round(elapsed, 1), "eta_s": None if eta is None else round(eta, 1), "error": error,
            "stage": self.stage_name, "stage_started": self.stage_started,
            "updated": time.time(),
        })

    @contextlib.contextmanager
    def stage(self, name: str):
        """Name a set-up stage (dataset, frozen features, k-means, PCA) in progress.json while it runs;
        the enclosing stage (or none) is reported again when it ends."""
        outer = (self.stage_name, self.stage_started)
        self.stage_name, self.stage_started = name, time.time()
        self.progress("running", None)
        try:
            yield
        finally:
            self.stage_name, self.stage_started = outer
            self.progress("running", None)

    def stepped(self, pos: Position) -> None:
        """After an optimizer step: the bar, and progress.json every 10 steps or 5 seconds."""
        self.bar.update()
        if pos.iteration % 10 == 0 or time.time() - self.progress_written >= 5:
            self.progress("running", pos)

    def reset_losses(self) -> None:
        self.loss_sum: torch.Tensor | None = None
        self.loss_names: list[str] = []
        self.loss_steps = 0

    def log_step(self, pos: Position, losses: dict[str, torch.Tensor], opt, g: int, epoch: int, log_every: int) -> None:
        """Accumulate the step's losses on the device; every ``log_every`` steps (and at the end of
        an epoch, :meth:`flush_losses`) their mean over the steps and the ranks becomes one
        ``metrics.jsonl`` record: the step's only host-device sync."""
        stacked = torch.stack([v.detach() for v in losses.values()])
        self.loss_sum = stacked if self.loss_sum is None else self.loss_sum + stacked
        self.loss_names, self.loss_steps = list(losses), self.loss_steps + 1
        if pos.iteration % log_every == 0:
            self.flush_losses(pos, opt, g, epoch)

    def flush_losses(self, pos: Position, opt, g: int, epoch: int) -> None:
        """Write the step record of the losses accumulated since the last one (if any)."""
        if not self.loss_steps:
            return
        mean = self.loss_sum if self.loss_steps == 1 else self.loss_sum / self.loss_steps
        values = self.dist.mean(mean).tolist()
        self.loss_sum, self.loss_steps = None, 0
        record = {"event": "step", "iteration": pos.iteration, "generation": g, "epoch": epoch,
                  **{k: round(float(v), 6) for k, v in zip(self.loss_names, values)},
                  "lr": opt.param_groups[0]["lr"], "seconds": self.seconds()}
        self.metrics.write(record)
        self.bar.set_postfix(gen=g, epoch=epoch, loss=f"{record['loss']:.3f}")

    def eval_record(self, pos: Position, g: int, epoch: int, split: str, pca: bool, recall: dict[int, float],
                    **extra: Any) -> None:
        """An ``eval`` record of ``metrics.jsonl``: the recall@N of generation ``g`` (``epoch``) on ``split``."""
        self.metrics.write({"event": "eval", "iteration": pos.iteration, "generation": g, "epoch": epoch,
                            "split": split, "pca": pca, **extra,
                            **{f"recall@{n}": round(v, 6) for n, v in recall.items()}, "seconds": self.seconds()})

    # ------------------------------------------------------------------ checkpoints
    def teacher(self, g: int, device: torch.device) -> NetVLADModel:
        """Generation g-1 frozen: its last epoch (``teacher="last"``) or its kept checkpoint (rank 0
        reads it; every rank gets it)."""
        def read() -> dict[str, Any]:
            last = self.run_dir / f"gen{g - 1}_last.pt"
            path = last if self.cfg.teacher == "last" and last.is_file() else self.run_dir / f"gen{g - 1}.pt"
            return {**load_checkpoint(path), "path": str(path)}

        payload = self.dist.from_main(read, tensors=True)
        teacher = model_from_payload(payload, device, payload["path"])
        if self.cfg.channels_last:
            teacher.to(memory_format=torch.channels_last)
        return teacher.requires_grad_(False)

    def save_latest(self, pos: Position, student, opt, sched, selection: dict[str, Any], negative_cache: np.ndarray,
                    scaler: torch.amp.GradScaler | None = None) -> None:
        """``latest.pt`` (rank 0 writes; the others wait): nothing in it depends on the rank or the
        number of ranks, but for the per-rank negative caches (``per_rank_negative_cache``), kept
        beside rank 0's."""
        caches = negative_cache_payload(negative_cache, self.cfg, self.dist)  # a collective with per-rank caches
        if self.dist.is_main:
            self.metrics.sync()
            payload = {
                "generation": pos.generation, "epoch": pos.epoch, "chunk": pos.chunk, "iteration": pos.iteration,
                "student": student.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                **caches, "elapsed_s": time.time() - self.t0,
                "selection": selection, "metrics_records": self.metrics.records,
            }
            if scaler is not None and scaler.is_enabled():
                payload["scaler"] = scaler.state_dict()
            self._save(self.run_dir / "latest.pt", keep_previous=True, payload=payload)
        if self.debug.enabled:
            self.debug.write({"event": "latest", "iteration": pos.iteration,
                              "digest": state_digest(student.state_dict())})
        self.dist.barrier()

    def write_generation(self, g: int, student: NetVLADModel, pos: Position, selection: dict[str, Any], kept: int,
                         snapshot: dict[str, np.ndarray], recalls: dict[str, dict[int, float]],
                         caches: dict[str, torch.Tensor]) -> None:
        """Rank 0: the generation's soft labels, checkpoint, ``best.json`` and boundary ``latest.pt``."""
        cfg = self.cfg
        (self.run_dir / "soft_labels").mkdir(exist_ok=True)
        save_npz(self.run_dir / "soft_labels" / f"gen{g}.npz", snapshot)
        self._save(self.run_dir / f"gen{g}.pt", model_payload(
            student, generation=g, loss=cfg.loss, selected_epoch=kept,
            selection={"metric": f"val recall@{cfg.select_recall_n}" if cfg.select_recall_n else "last epoch",
                       "value": selection["recall"] if cfg.select_recall_n else None},
            recall={s: {str(n): v for n, v in r.items()} for s, r in recalls.items()}))
        self.update_best(g, kept, selection["recall"] if cfg.select_recall_n else None)
        self.metrics.sync()
        self._save(self.run_dir / "latest.pt", keep_previous=True, payload={
            "generation": g + 1, "epoch": 0, "chunk": 0, "iteration": pos.iteration, "elapsed_s": time.time() - self.t0,
            **caches, "metrics_records": self.metrics.records})

    def update_best(self, g: int, epoch: int, score: float | None) -> None:
        """``best.json``: the run's best generation by validation recall (OpenIBL's model_best)."""
        path = self.run_dir / "best.json"
        best = json.loads(path.read_text()) if path.is_file() and g > 0 else None
        if score is None:  # no selection metric: the last generation is the run's result
            best = None
        if best is None or (score is not None and score > best["value"]):
            self._write_json(path, {"generation": g, "epoch": epoch, "checkpoint": f"gen{g}.pt",
                                    "metric": f"{self.cfg.val_split} recall@{self.cfg.select_recall_n}"
                                    if self.cfg.select_recall_n else "last generation", "value": score})


def negative_cache_payload(cache: np.ndarray, cfg: TrainConfig, dist: DistContext) -> dict[str, torch.Tensor]:
    """What ``latest.pt`` keeps of the negative cache: this (rank 0's) cache, and with
    ``per_rank_negative_cache`` under torchrun every rank's (``W x Q x N``, gathered: every
    rank must call this)."""
    out = {"negative_cache": torch.from_numpy(cache.copy())}
    if cfg.per_rank_negative_cache and dist.enabled:
        out["negative_cache_per_rank"] = gather_negative_caches(cache, dist)
    return out


def restore_negative_cache(cache: np.ndarray, state: dict[str, Any], cfg: TrainConfig, dist: DistContext) -> None:
    """Fill ``cache`` with the negative cache a resume state holds: this rank's own when the run keeps
    per-rank caches and resumes on as many ranks, else the (merged, or rank 0's) ``negative_cache``."""
    per_rank = state.get("negative_cache_per_rank")
    if (cfg.per_rank_negative_cache and per_rank is not None and dist.enabled
            and per_rank.shape[0] == dist.world_size):
        cache[:] = per_rank[dist.rank].numpy()
        return
    if per_rank is not None and cfg.per_rank_negative_cache:
        log.warning("per-rank negative caches of %d ranks resumed on %d: every rank starts from rank 0's",
                    per_rank.shape[0], dist.world_size)
    cache[:] = state["negative_cache"].numpy()


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
