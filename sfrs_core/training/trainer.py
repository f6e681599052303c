"""The SFRS generation loop (DESIGN.md §1) and everything a run writes to ``runs/NAME/``.

Generation 0 trains with the hard loss only (with ``generations=1`` the run *is* the SARE
baseline). Generation g ≥ 1 re-initialises the student to generation 0's initial weights,
freezes generation g−1 as teacher, and minimises ``L_hard + λ·L_soft`` where ``L_hard`` uses
each negative's hardest region and ``L_soft`` matches the teacher's image-to-region similarity
distribution over the k×9 regions of the difficult positives.

Each epoch visits the trainable queries in a seeded order, in chunks of ``cache_size``; before
each chunk the training descriptors are re-extracted and mining starts afresh. ``latest.pt`` is
written at chunk boundaries (all random draws derive from (seed, generation, epoch, chunk)), so
``resume`` continues exactly where the last checkpoint was taken.

The protocol is OpenIBL's (README "Paper protocol"): generation 0 trains ``gen0_epochs``; the
negative cache lives through the whole run; validation recall after every epoch selects each
generation's kept checkpoint (best recall@5); the next generation's teacher is the previous
generation's last epoch (``teacher="last"``); PCA-whitening is fitted on ``pca_samples`` random
training images of the kept model.

Run folder: ``config.json``, ``metrics.jsonl``, ``progress.json``, ``init.pt``, ``gen{g}.pt``
(the kept checkpoint), ``gen{g}_last.pt`` (the teacher, when it differs), ``best.json`` (the
run's best generation by validation recall), ``environment.json`` (package versions, threads
and device of every session), ``latest.pt``, ``soft_labels/gen{g}.npz``,
``results/{split}_gen{g}.npz``.
"""
from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..data import load_dataset
from ..data.dataset import PlaceSplit
from ..data.transforms import ImageTransform
from ..losses import hard_loss, region_similarities, sfrs_hard_loss, soft_labels, soft_region_loss
from ..models.model import NetVLADModel, build_model
from ..models.netvlad import sample_local_descriptors
from ..retrieval.device import pick_device
from ..retrieval.evaluate import evaluate
from ..retrieval.results import QueryResults
from .._torchvision import torchvision
from ..io import atomic_path, atomic_write_json
from .checkpoint import (load_checkpoint, load_checkpoint_or_previous, load_model, model_payload, previous_path,
                         save_checkpoint)
from .config import TrainConfig
from .environment import record_environment
from .feature_cache import PrefixFeatures, descriptors, local_features
from .metrics_log import MetricsLog, truncate_metrics
from .mining import TrainingTuple, TupleMiner

log = logging.getLogger(__name__)


class TrainingStopped(Exception):
    """Raised when a stop was requested; ``latest.pt`` holds the state to resume from."""


class RunExistsError(FileExistsError):
    """The run folder exists and neither resume nor overwrite was asked for."""


def _trainable_state(model: NetVLADModel) -> dict[str, torch.Tensor]:
    """A copy of the weights training can change (the PCA layer is fitted only afterwards)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith("pca.")}


def _pad_positives(regions: torch.Tensor, counts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-query positives' regions ``sum(counts) x 9 x L`` -> ``B x k x 9 x L`` (zeros) and a ``B x k`` mask."""
    k = max(counts)
    out = regions.new_zeros((len(counts), k, *regions.shape[1:]))
    mask = torch.zeros(len(counts), k, dtype=torch.bool, device=regions.device)
    start = 0
    for b, n in enumerate(counts):
        out[b, :n] = regions[start:start + n]
        mask[b, :n] = True
        start += n
    return out, mask


@dataclass
class _Position:
    generation: int = 0
    epoch: int = 0
    chunk: int = 0
    iteration: int = 0


class _SplitFeatures:
    """Frozen-prefix features of a split's database and queries."""

    def __init__(self, trainer: "Trainer", split: PlaceSplit):
        args = dict(device=trainer.device, budget_gb=trainer.cfg.feature_cache_gb / 2, batch_size=trainer.cfg.batch_size,
                    num_workers=trainer.cfg.num_workers, progress=trainer.progress)
        self.split = split
        self.db = PrefixFeatures(trainer.model, split.database, trainer.transform, name=f"{split.name} database", **args)
        self.q = PrefixFeatures(trainer.model, split.queries, trainer.transform, name=f"{split.name} queries", **args)


class Trainer:
    """Train (or resume) one run; :meth:`run` returns the run folder."""

    def __init__(self, cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False, progress: bool = True,
                 should_stop: Callable[[], bool] | None = None):
        self.cfg = cfg
        self.run_dir = Path(cfg.runs_dir) / cfg.run
        self.resume = resume
        self.overwrite = overwrite
        self.progress = progress
        self.should_stop = should_stop or (lambda: False)
        self._lock_file = None

    # ------------------------------------------------------------------ setup
    def _open_run_dir(self) -> None:
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
            atomic_write_json(self.run_dir / "config.json", self.cfg.to_dict())

    def _prepare(self) -> None:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        self.device = pick_device(None if cfg.device == "auto" else cfg.device)
        record_environment(self.run_dir, self.device)
        self.dataset = load_dataset(cfg.data)
        self.train_split = self.dataset[cfg.train_split]
        self.model = build_model(cfg.model).to(self.device)
        self.transform = ImageTransform(cfg.image_size, self.model.normalization)
        self.features: dict[str, _SplitFeatures] = {}
        self.jitter = torchvision.transforms.ColorJitter(*cfg.color_jitter) if cfg.color_jitter else None
        self.miner = TupleMiner(self.train_split, cfg.mining)
        if len(self.miner.trainable) == 0:
            raise ValueError(f"no training query of {cfg.data} has a positive within {cfg.mining.pos_radius_m} m")
        init = self.run_dir / "init.pt"
        if init.is_file():
            self.init_state = load_checkpoint(init)["state_dict"]
        else:
            self._kmeans_init()
            self.init_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            save_checkpoint(init, model_payload(self.model))
        self.model.load_state_dict(self.init_state)

    def split_features(self, name: str) -> _SplitFeatures:
        if name not in self.features:
            self.features[name] = _SplitFeatures(self, self.dataset[name])
        return self.features[name]

    @torch.no_grad()
    def _kmeans_init(self) -> None:
        cfg = self.cfg
        gen = torch.Generator().manual_seed(cfg.seed)
        self.model.eval()
        parts = []
        for source, idx in self._training_images(cfg.kmeans_images, [cfg.seed, 0xC1]):
            for start in range(0, len(idx), cfg.batch_size):
                local = local_features(self.model, source.get(idx[start:start + cfg.batch_size]))
                parts.append(sample_local_descriptors(local.cpu(), cfg.kmeans_per_image, gen))
        alpha = self.model.init_netvlad(torch.cat(parts), seed=cfg.seed)
        log.info("NetVLAD initialised by k-means on %d local descriptors (alpha %.1f)", sum(len(p) for p in parts), alpha)

    def _training_images(self, count: int, seed: list[int]) -> list[tuple[PrefixFeatures, np.ndarray]]:
        """``count`` random images of OpenIBL's training set (the trainable queries and the
        database), as sorted indices into the query and database features."""
        train = self.split_features(self.cfg.train_split)
        queries = self.miner.trainable
        n_q, n = len(queries), len(queries) + len(train.db)
        pick = np.sort(np.random.default_rng(seed).choice(n, size=min(count, n), replace=False))
        return [(train.q, queries[pick[pick < n_q]]), (train.db, pick[pick >= n_q] - n_q)]

    # ------------------------------------------------------------------ schedule
    def _chunks(self, generation: int, epoch: int) -> list[np.ndarray]:
        order = np.random.default_rng([self.cfg.seed, generation, epoch]).permutation(self.miner.trainable)
        return [order[i:i + self.cfg.cache_size] for i in range(0, len(order), self.cfg.cache_size)]

    def _iterations_per_epoch(self) -> int:
        sizes = [len(c) for c in self._chunks(0, 0)]
        return sum(math.ceil(s / self.cfg.tuples_per_batch) for s in sizes)

    def _total_iterations(self) -> int:
        return self._iterations_per_epoch() * sum(self.cfg.epochs_of(g) for g in range(self.cfg.generations))

    # ------------------------------------------------------------------ steps
    def train_step(self, student: NetVLADModel, teacher: NetVLADModel | None, tuples: list[TrainingTuple],
                   generation: int, augment_seed: int | None = None) -> dict[str, torch.Tensor]:
        """Losses of one batch of tuples. Every image is loaded (and augmented) once; the
        student and the teacher see the same images. ``augment_seed`` seeds the ColorJitter."""
        cfg = self.cfg
        train = self.split_features(cfg.train_split)
        B, N = len(tuples), cfg.mining.neg_num
        q_idx = [t.query for t in tuples]
        db_idx = [t.easiest for t in tuples] + np.concatenate([t.negatives for t in tuples]).tolist()
        counts = [len(t.positives) for t in tuples]
        if generation > 0:
            db_idx += np.concatenate([t.positives for t in tuples]).tolist()
        augment = self.jitter if augment_seed is not None else None
        with torch.random.fork_rng(devices=[]):
            if augment is not None:
                torch.manual_seed(augment_seed)
            x_q, x_db = train.q.get(q_idx, augment), train.db.get(db_idx, augment)
        losses = dict(tau=cfg.tau0, margin=cfg.margin, similarity=cfg.similarity)
        q = student.aggregate(local_features(student, x_q), use_pca=False)
        if generation == 0:
            db = student.aggregate(local_features(student, x_db), use_pca=False)
            loss = hard_loss(cfg.loss, q, db[:B], db[B:].view(B, N, -1), **losses)
            return {"loss": loss, "loss_hard": loss, "loss_soft": torch.zeros(())}
        regions = student.regions_from_features(local_features(student, x_db), use_pca=False)
        p_global = regions[:B, 0]
        neg_regions = regions[B:B + B * N].view(B, N, 9, -1)
        pos_regions, mask = _pad_positives(regions[B + B * N:], counts)
        l_hard = sfrs_hard_loss(q, p_global, neg_regions, cfg.loss, **losses)
        with torch.no_grad():
            tq = teacher.aggregate(local_features(teacher, x_q), use_pca=False)
            t_regions = teacher.regions_from_features(local_features(teacher, x_db[B + B * N:]), use_pca=False)
            t_sims = region_similarities(tq, _pad_positives(t_regions, counts)[0])
        entries = mask.repeat_interleave(9, dim=1)  # B x (k*9), positive-major like the similarities
        l_soft = soft_region_loss(region_similarities(q, pos_regions), t_sims, cfg.temperature(generation), cfg.tau0,
                                  mask=entries)
        return {"loss": l_hard + cfg.lambda_soft * l_soft, "loss_hard": l_hard, "loss_soft": l_soft}

    # ------------------------------------------------------------------ evaluation and snapshots
    def evaluate_split(self, model: NetVLADModel, split: str, generation: int) -> QueryResults:
        feats = self.split_features(split)
        db = descriptors(model, feats.db, self.cfg.batch_size, use_pca=None).numpy()
        qs = descriptors(model, feats.q, self.cfg.batch_size, use_pca=None).numpy()
        return evaluate(model, feats.split, k=min(20, len(feats.split.database)), db_descriptors=db, query_descriptors=qs,
                        progress=False, run=f"{self.cfg.run}/gen{generation}", dataset_root=self.dataset.root)

    @torch.no_grad()
    def soft_label_snapshot(self, teacher: NetVLADModel, generation: int) -> dict[str, np.ndarray]:
        """The k×9 soft labels ``teacher`` (generation g) gives generation g+1, on fixed val queries."""
        cfg = self.cfg
        feats = self.split_features(cfg.val_split)
        pos_lists = feats.split.positives(cfg.mining.pos_radius_m)
        k = cfg.mining.pos_num
        if not any(len(p) >= k for p in pos_lists):  # a sparse split: as many as every usable query has
            k = max(len(p) for p in pos_lists)
        usable = np.array([i for i, p in enumerate(pos_lists) if len(p) >= k], dtype=np.int64)
        queries = usable[np.linspace(0, len(usable) - 1, min(cfg.snapshot_queries, len(usable))).round().astype(int)]
        positives = np.stack([pos_lists[q][:k] for q in queries])  # the k GPS-nearest, no repeats
        teacher.eval()
        q = teacher.aggregate(local_features(teacher, feats.q.get(queries)), use_pca=False)
        regions = teacher.regions_from_features(local_features(teacher, feats.db.get(positives.ravel())), use_pca=False)
        sims = region_similarities(q, regions.view(len(queries), k, 9, -1))
        tau = cfg.temperature(generation + 1)
        return {
            "split": np.array(cfg.val_split), "generation": np.array(generation), "temperature": np.array(tau),
            "queries": queries, "positives": positives,
            "similarities": sims.view(len(queries), -1, 9).cpu().numpy(),
            "soft_labels": soft_labels(sims, tau).view(len(queries), -1, 9).cpu().numpy(),
        }

    # ------------------------------------------------------------------ the loop
    def run(self) -> Path:
        """Train every generation (or what is left of them); returns the run folder."""
        self._open_run_dir()
        try:
            pos = _Position()
            latest = self.run_dir / "latest.pt"
            has_latest = latest.is_file() or previous_path(latest).is_file()
            state = load_checkpoint_or_previous(latest) if self.resume and has_latest else None
            if state is not None:
                pos = _Position(state["generation"], state["epoch"], state["chunk"], state["iteration"])
            # From here progress.json names this process: a watcher (the app) follows its pid while the
            # set-up (dataset, frozen features, k-means) runs; total_iterations 0 means "preparing".
            self._pos = pos
            self._progress("running", pos)
            self._prepare()
            if state is not None and "negative_cache" in state:  # the cache lives through the whole run
                self.miner.negative_cache[:] = state["negative_cache"].numpy()
            if state is not None:
                truncate_metrics(self.run_dir / "metrics.jsonl", pos.iteration, state.get("metrics_records"))
            elif self.resume:
                truncate_metrics(self.run_dir / "metrics.jsonl", 0)
            self.metrics = MetricsLog(self.run_dir / "metrics.jsonl")
            self._t0 = time.time() - (state["elapsed_s"] if state else 0.0)
            self._process_t0, self._start_iteration = time.time(), pos.iteration
            self._total = self._total_iterations()
            self._bar = tqdm(total=self._total, initial=pos.iteration, desc=self.cfg.run, unit="it", disable=not self.progress)
            self._progress("running", pos)  # set up: the total is known
            for g in range(pos.generation, self.cfg.generations):
                # A generation-boundary checkpoint holds no student: the generation starts afresh.
                mid_generation = state is not None and state["generation"] == g and "student" in state
                self._generation(g, pos, state if mid_generation else None)
                pos = _Position(g + 1, 0, 0, pos.iteration)
                state = None
            self._progress("finished", pos)
            self._bar.close()
            self.metrics.close()
        except TrainingStopped:
            self._progress("stopped", None)
            raise
        except BaseException as err:
            if self.should_stop():  # a stop signal arrived inside a library call, which wrapped it
                self._progress("stopped", None)
                raise TrainingStopped(f"stopped during {type(err).__name__}: {err}"[:300]) from err
            self._progress("failed", None, error=f"{type(err).__name__}: {err}")
            raise
        finally:
            if self._lock_file is not None:
                self._lock_file.close()
        return self.run_dir

    def _progress(self, status: str, pos: _Position | None, error: str | None = None) -> None:
        pos = pos or getattr(self, "_pos", _Position())
        total = getattr(self, "_total", 0)
        now = time.time()
        elapsed = now - getattr(self, "_t0", now)
        # ETA from this process's own pace (a resumed run has not done the earlier iterations)
        done = max(pos.iteration - getattr(self, "_start_iteration", 0), 0)
        spent = now - getattr(self, "_process_t0", now)
        eta = spent / done * (total - pos.iteration) if done and status == "running" else None
        self._progress_written = now
        atomic_write_json(self.run_dir / "progress.json", {
            "status": status, "pid": os.getpid(), "generation": pos.generation, "generations": self.cfg.generations,
            "epoch": pos.epoch, "epochs": self.cfg.epochs_of(pos.generation) if pos.generation < self.cfg.generations
            else self.cfg.epochs, "iteration": pos.iteration, "total_iterations": total,
            "elapsed_s": round(elapsed, 1), "eta_s": None if eta is None else round(eta, 1), "error": error,
            "updated": time.time(),
        })

    def _save_latest(self, pos: _Position, student, opt, sched, selection: dict[str, Any]) -> None:
        self.metrics.sync()
        save_checkpoint(self.run_dir / "latest.pt", keep_previous=True, payload={
            "generation": pos.generation, "epoch": pos.epoch, "chunk": pos.chunk, "iteration": pos.iteration,
            "student": student.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "negative_cache": torch.from_numpy(self.miner.negative_cache.copy()), "elapsed_s": time.time() - self._t0,
            "selection": selection, "metrics_records": self.metrics.records,
        })

    def _teacher(self, g: int) -> NetVLADModel:
        """Generation g-1 frozen: its last epoch (``teacher="last"``) or its kept checkpoint."""
        last = self.run_dir / f"gen{g - 1}_last.pt"
        path = last if self.cfg.teacher == "last" and last.is_file() else self.run_dir / f"gen{g - 1}.pt"
        teacher, _ = load_model(path, self.device)
        return teacher.requires_grad_(False)

    def _generation(self, g: int, pos: _Position, state: dict[str, Any] | None) -> None:
        cfg = self.cfg
        student = self.model
        student.load_state_dict(self.init_state)  # re-initialised: the same start as generation 0
        teacher = self._teacher(g) if g >= 1 else None
        params = [p for p in student.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_step_epochs, gamma=cfg.lr_gamma)
        # the epoch kept so far: its validation recall@N and weights (OpenIBL's best_recall5)
        selection: dict[str, Any] = {"epoch": -1, "recall": -1.0, "state": None}
        if state is not None:
            student.load_state_dict(state["student"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            selection = state.get("selection", selection)
        train = self.split_features(cfg.train_split)
        epochs = cfg.epochs_of(g)
        for epoch in range(pos.epoch, epochs):
            chunks = self._chunks(g, epoch)
            first_chunk = pos.chunk if epoch == pos.epoch else 0
            for c in range(first_chunk, len(chunks)):
                student.eval()
                self.miner.refresh(descriptors(student, train.db, cfg.batch_size).numpy(),
                                   descriptors(student, train.q, cfg.batch_size).numpy(), rerank=g >= 1)
                rng = np.random.default_rng([cfg.seed, g, epoch, c])
                student.train()
                for b in range(0, len(chunks[c]), cfg.tuples_per_batch):
                    if self.should_stop():
                        raise TrainingStopped(f"stopped at iteration {pos.iteration}; resume from {self.run_dir / 'latest.pt'}")
                    tuples = [self.miner.mine(int(q), rng) for q in chunks[c][b:b + cfg.tuples_per_batch]]
                    augment_seed = int(rng.integers(2**62)) if self.jitter is not None else None
                    losses = self.train_step(student, teacher, tuples, g, augment_seed)
                    opt.zero_grad(set_to_none=True)
                    losses["loss"].backward()
                    opt.step()
                    pos.iteration += 1
                    pos.generation, pos.epoch, pos.chunk = g, epoch, c
                    self._pos = pos
                    record = {"event": "step", "iteration": pos.iteration, "generation": g, "epoch": epoch,
                              **{k: round(float(v.detach()), 6) for k, v in losses.items()},
                              "lr": opt.param_groups[0]["lr"], "seconds": round(time.time() - self._t0, 2)}
                    self.metrics.write(record)
                    self._bar.update()
                    self._bar.set_postfix(gen=g, epoch=epoch, loss=f"{record['loss']:.3f}")
                    if pos.iteration % 10 == 0 or time.time() - self._progress_written >= 5:
                        self._progress("running", pos)
                if c + 1 < len(chunks):
                    self._save_latest(_Position(g, epoch, c + 1, pos.iteration), student, opt, sched, selection)
            sched.step()
            if cfg.eval_every_epoch or epoch + 1 == epochs:
                res = self.evaluate_split(student, cfg.val_split, g)
                self.metrics.write({"event": "eval", "iteration": pos.iteration, "generation": g, "epoch": epoch,
                                    "split": cfg.val_split, "pca": False,
                                    **{f"recall@{n}": round(v, 6) for n, v in res.recall.items()},
                                    "seconds": round(time.time() - self._t0, 2)})
                n = cfg.select_recall_n
                score = res.recall.get(n, -1.0) if n is not None else float(epoch)
                if score > selection["recall"]:  # strictly better: ties keep the earlier epoch
                    selection = {"epoch": epoch, "recall": score, "state": _trainable_state(student)}
            self._save_latest(_Position(g, epoch + 1, 0, pos.iteration), student, opt, sched, selection)
        self._finish_generation(g, student, pos, selection)

    def _finish_generation(self, g: int, student: NetVLADModel, pos: _Position, selection: dict[str, Any]) -> None:
        cfg = self.cfg
        student.eval()
        last_epoch = cfg.epochs_of(g) - 1
        kept = selection["epoch"] if selection["state"] is not None else last_epoch
        if cfg.teacher == "last":  # the soft labels the next generation's teacher weights give
            snapshot = self.soft_label_snapshot(student, g)
            if kept != last_epoch and g + 1 < cfg.generations:
                save_checkpoint(self.run_dir / f"gen{g}_last.pt", model_payload(student, generation=g, epoch=last_epoch))
        if kept != last_epoch:
            student.load_state_dict(selection["state"], strict=False)
        if cfg.teacher == "selected":
            snapshot = self.soft_label_snapshot(student, g)
        if student.pca is not None:
            student.pca.fit(self._pca_descriptors(student))
        recalls = {}
        for split in [s for s in (cfg.val_split, cfg.test_split) if s and s in self.dataset.splits]:
            res = self.evaluate_split(student, split, g)
            res.save(self.run_dir / "results" / f"{split}_gen{g}.npz")
            recalls[split] = res.recall
            self.metrics.write({"event": "eval", "iteration": pos.iteration, "generation": g, "epoch": kept,
                                "split": split, "pca": student.pca is not None, "final": True, "selected_epoch": kept,
                                **{f"recall@{n}": round(v, 6) for n, v in res.recall.items()},
                                "seconds": round(time.time() - self._t0, 2)})
        (self.run_dir / "soft_labels").mkdir(exist_ok=True)
        _save_npz(self.run_dir / "soft_labels" / f"gen{g}.npz", snapshot)
        save_checkpoint(self.run_dir / f"gen{g}.pt", model_payload(
            student, generation=g, loss=cfg.loss, selected_epoch=kept,
            selection={"metric": f"val recall@{cfg.select_recall_n}" if cfg.select_recall_n else "last epoch",
                       "value": selection["recall"] if cfg.select_recall_n else None},
            recall={s: {str(n): v for n, v in r.items()} for s, r in recalls.items()}))
        self._update_best(g, kept, selection["recall"] if cfg.select_recall_n else None)
        self.metrics.sync()
        save_checkpoint(self.run_dir / "latest.pt", keep_previous=True, payload={
            "generation": g + 1, "epoch": 0, "chunk": 0, "iteration": pos.iteration, "elapsed_s": time.time() - self._t0,
            "negative_cache": torch.from_numpy(self.miner.negative_cache.copy()), "metrics_records": self.metrics.records})
        self._progress("running", _Position(g + 1, 0, 0, pos.iteration))

    def _pca_descriptors(self, model: NetVLADModel) -> torch.Tensor:
        """VLAD descriptors of ``pca_samples`` random training images (queries and database)."""
        parts = [descriptors(model, _Subset(source, idx), self.cfg.batch_size)
                 for source, idx in self._training_images(self.cfg.pca_samples, [self.cfg.seed, 0xCA])]
        return torch.cat(parts)

    def _update_best(self, g: int, epoch: int, score: float | None) -> None:
        """``best.json``: the run's best generation by validation recall (OpenIBL's model_best)."""
        path = self.run_dir / "best.json"
        best = json.loads(path.read_text()) if path.is_file() and g > 0 else None
        if score is None:  # no selection metric: the last generation is the run's result
            best = None
        if best is None or (score is not None and score > best["value"]):
            atomic_write_json(path, {"generation": g, "epoch": epoch, "checkpoint": f"gen{g}.pt",
                                     "metric": f"{self.cfg.val_split} recall@{self.cfg.select_recall_n}"
                                     if self.cfg.select_recall_n else "last generation", "value": score})


class _Subset:
    """The images ``indices`` of a :class:`PrefixFeatures`, with its ``get`` and ``len``."""

    def __init__(self, source: PrefixFeatures, indices: np.ndarray):
        self.source, self.indices = source, np.asarray(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def get(self, indices, augment=None) -> torch.Tensor:
        return self.source.get(self.indices[np.asarray(indices)], augment)


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def train(cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False, progress: bool = True,
          should_stop: Callable[[], bool] | None = None) -> Path:
    """Train a run described by ``cfg`` (see :class:`Trainer`); returns its folder."""
    return Trainer(cfg, resume=resume, overwrite=overwrite, progress=progress, should_stop=should_stop).run()


def resume_run(run_dir: str | os.PathLike, *, progress: bool = True, should_stop: Callable[[], bool] | None = None) -> Path:
    """Continue the run in ``run_dir`` from its ``latest.pt`` with its own ``config.json``."""
    run_dir = Path(run_dir)
    cfg_file = run_dir / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{run_dir}: no config.json; not a run folder")
    cfg = TrainConfig.from_dict(json.loads(cfg_file.read_text()))
    cfg = cfg.replace(runs_dir=str(run_dir.parent), run=run_dir.name)
    return train(cfg, resume=True, progress=progress, should_stop=should_stop)
