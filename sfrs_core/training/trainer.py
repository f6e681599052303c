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

Before anything is written the model is built, and a trunk whose pretrained weights cannot be
loaded stops the run there (one line naming ``--trunk-weights FILE`` and ``import-weights``)
unless ``random_trunk`` asks for a random one; ``trunk_weights.json`` records where the trunk's
weights came from (file and SHA-256, torchvision's named weights, or random) and the input
normalisation they take.

Run folder: ``config.json``, ``trunk_weights.json``, ``metrics.jsonl``, ``progress.json``, ``init.pt``,
``gen{g}.pt`` (the kept checkpoint), ``gen{g}_last.pt`` (the teacher, when it differs), ``best.json`` (the
run's best generation by validation recall), ``environment.json`` (package versions, threads
and device of every session), ``latest.pt``, ``soft_labels/gen{g}.npz``,
``results/{split}_gen{g}.npz``.

Under ``torchrun`` (``sfrs_core.training.distributed``) each rank extracts a contiguous slice of
every descriptor set (mining, evaluation, PCA) and the slices are all-gathered; each rank trains
on its own share of every chunk's queries (mined with its own generator, seeded by (seed,
generation, epoch, chunk, world size, rank)), DDP averages the gradients, the negative-cache rows
the ranks mined are exchanged at every chunk's end (unless ``per_rank_negative_cache``: each rank
keeps its own, as OpenIBL), and rank 0 alone writes the run folder. ``tuples_per_batch`` counts
per rank or per step over all ranks (``tuples_per_batch_scope``; the paper preset: per step). A
checkpoint holds nothing that depends on the number of ranks (per-rank caches are kept beside the
merged one and used when resumed on as many ranks), so a run resumes on any number. One process
(no torchrun) runs exactly the single-process code path.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..data import load_dataset
from ..data.dataset import PlaceSplit
from ..data.transforms import ImageTransform
from ..losses import hard_loss, region_similarities, sfrs_hard_loss, soft_labels, soft_region_loss
from ..models.backbones import weights_provenance
from ..models.model import NetVLADModel, build_model
from ..models.netvlad import sample_local_descriptors
from ..retrieval.device import pick_device
from ..retrieval.evaluate import evaluate
from ..retrieval.results import QueryResults
from .._torchvision import torchvision
from ..io import atomic_path, atomic_write_json
from .checkpoint import (load_checkpoint, load_checkpoint_or_previous, model_from_payload, model_payload,
                         previous_path, save_checkpoint)
from .config import TrainConfig
from .distributed import (DebugLog, DistContext, RankFailed, batches_per_chunk, gather_negative_caches,
                          merge_negative_cache, rank_device, session, state_digest, strided_batches)
from .environment import record_environment
from .feature_cache import PrefixFeatures, descriptors, local_features, trunk_suffix
from .metrics_log import MetricsLog, NullMetricsLog, truncate_metrics
from .mining import TrainingTuple, TupleMiner
from .precision import resolve_precision

#: Test hook: behave as if a stop was requested once this many optimizer steps are done.
STOP_AT_ENV = "SFRS_TRAIN_STOP_AT_ITERATION"
#: Where a run records its trunk weights' origin and normalisation (read back by ``sfrs_core.runs.Run.trunk_weights``).
TRUNK_WEIGHTS_FILE = "trunk_weights.json"

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
                    num_workers=trainer.cfg.num_workers, progress=trainer.progress,
                    channels_last=trainer.cfg.channels_last)
        self.split = split
        self.db = PrefixFeatures(trainer.model, split.database, trainer.transform, name=f"{split.name} database", **args)
        self.q = PrefixFeatures(trainer.model, split.queries, trainer.transform, name=f"{split.name} queries", **args)


class Trainer:
    """Train (or resume) one run; :meth:`run` returns the run folder."""

    def __init__(self, cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False, progress: bool = True,
                 should_stop: Callable[[], bool] | None = None, dist: DistContext | None = None):
        self.cfg = cfg
        self.run_dir = Path(cfg.runs_dir) / cfg.run
        self.resume = resume
        self.overwrite = overwrite
        self.dist = dist or DistContext()
        self.progress = progress and self.dist.is_main
        self.should_stop = should_stop or (lambda: False)
        self._lock_file = None
        self._debug = DebugLog(self.dist)
        stop_at = os.environ.get(STOP_AT_ENV)
        self._stop_at = int(stop_at) if stop_at else None
        self._broadcast_buffers = False
        self._progress_written = time.time()
        self._built: NetVLADModel | None = None
        self._resumed_init = False  # resuming a run whose init.pt exists (set by _build_model)
        #: tuples this rank trains per step (``tuples_per_batch``, or its share with scope "step")
        self.rank_tuples = cfg.tuples_per_rank(self.dist.world_size)

    # ------------------------------------------------------------------ setup
    def _open_run_dir(self) -> None:
        """Create (or check, for a resume) and lock the run folder: rank 0's job; the others learn
        whether it worked."""
        self.dist.from_main(self._open_run_dir_main)

    def _open_run_dir_main(self) -> None:
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

    def _build_model(self) -> NetVLADModel:
        """The model, seeded as every run starts (the trunk's random parts and NetVLAD's), on CPU.

        The trunk's pretrained weights must load (``cfg.model.trunk_weights``, else torchvision's
        in the hub cache): otherwise a one-line :class:`~sfrs_core.models.backbones.TrunkWeightsError`
        ends the run before it writes anything, unless ``random_trunk`` (or a model config that
        is not ``pretrained``) asks for a random trunk. A resumed run whose ``init.pt`` exists
        takes every weight from there, so it needs none. Under torchrun every rank builds its own
        and they all stop if any failed."""
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
        """Rank 0: ``trunk_weights.json``, when this session makes the initial weights (no ``init.pt``
        yet): where the trunk's weights came from and their input normalisation."""
        if not self.dist.is_main or (self.run_dir / "init.pt").is_file():
            return
        record = {**weights_provenance(self._built.trunk), "random_trunk": bool(self.cfg.random_trunk),
                  "recorded": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        atomic_write_json(self.run_dir / TRUNK_WEIGHTS_FILE, record)

    def _prepare(self) -> None:
        cfg = self.cfg
        model = self._built if self._built is not None else self._build_model()
        self.device = rank_device(pick_device(None if cfg.device == "auto" else cfg.device), self.dist)
        self.precision = resolve_precision(cfg.amp, self.device)
        if self.dist.is_main:
            record_environment(self.run_dir, self.device)
        with self._stage("reading the dataset"):
            self.dataset = load_dataset(cfg.data)
        self.train_split = self.dataset[cfg.train_split]
        self.model = model.to(self.device)
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self._sync_batchnorm()
        self.transform = ImageTransform(cfg.image_size, self.model.normalization)
        self.features: dict[str, _SplitFeatures] = {}
        self.jitter = torchvision.transforms.ColorJitter(*cfg.color_jitter) if cfg.color_jitter else None
        self.miner = TupleMiner(self.train_split, cfg.mining)
        if len(self.miner.trainable) == 0:
            raise ValueError(f"no training query of {cfg.data} has a positive within {cfg.mining.pos_radius_m} m")
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
        with self._stage("k-means initialisation of NetVLAD"):
            self._kmeans_init()
        state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        save_checkpoint(init, model_payload(self.model))
        return state

    def _sync_batchnorm(self) -> None:
        """With several ranks, trainable BatchNorms (``freeze_bn=False``) see every rank's batch:
        ``SyncBatchNorm`` on CUDA. On CPU (SyncBatchNorm needs a GPU) DDP broadcasts rank 0's
        running statistics every step instead. Frozen BatchNorms (the default) stay in eval mode,
        their statistics fixed: nothing to synchronise."""
        trunk = self.model.trunk
        if not self.dist.enabled or trunk.freeze_bn:
            return
        if not any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                   for m in trunk.body[trunk.frozen_upto:].modules()):
            return
        if self.device.type == "cuda":
            for i in range(trunk.frozen_upto, len(trunk.body)):
                trunk.body[i] = nn.SyncBatchNorm.convert_sync_batchnorm(trunk.body[i])
            trunk.train(trunk.training)
        else:
            log.warning("trainable BatchNorm on CPU: SyncBatchNorm needs CUDA; rank 0's running statistics are "
                        "broadcast at every forward and chunk end instead")
            self._broadcast_buffers = True

    def split_features(self, name: str) -> _SplitFeatures:
        if name not in self.features:
            with self._stage(f"frozen features of the {name} split"):
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
        alpha = self.model.init_netvlad(torch.cat(parts), seed=cfg.seed, method=cfg.kmeans_init)
        log.info("NetVLAD initialised by %s k-means on %d local descriptors (alpha %.1f)", cfg.kmeans_init,
                 sum(len(p) for p in parts), alpha)

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

    def _chunk_steps(self) -> list[int]:
        """Optimizer steps of each chunk of an epoch at this world size (the same every epoch)."""
        return [batches_per_chunk(len(c), self.rank_tuples, self.dist.world_size) for c in self._chunks(0, 0)]

    def _iterations_per_epoch(self) -> int:
        return sum(self._chunk_steps())

    def _total_iterations(self, pos: _Position | None = None) -> int:
        """Steps of the whole run: those done before ``pos`` plus those left from it at this world
        size (a run resumed on another number of ranks takes other steps from there)."""
        pos = pos or _Position()
        steps, left = self._chunk_steps(), 0
        for g in range(pos.generation, self.cfg.generations):
            for e in range(pos.epoch if g == pos.generation else 0, self.cfg.epochs_of(g)):
                left += sum(steps[pos.chunk if (g, e) == (pos.generation, pos.epoch) else 0:])
        return pos.iteration + left

    def _mining_rng(self, generation: int, epoch: int, chunk: int) -> np.random.Generator:
        """The generator of a chunk's mining and jitter seeds: (seed, generation, epoch, chunk) alone,
        plus (world size, rank) with several ranks, so that the ranks draw differently."""
        key = [self.cfg.seed, generation, epoch, chunk]
        if self.dist.enabled:
            key += [self.dist.world_size, self.dist.rank]
        return np.random.default_rng(key)

    def _plan(self, queries: np.ndarray, rng: np.random.Generator) -> list[tuple[list[TrainingTuple], int | None]]:
        """This rank's batches of a chunk, mined (the descriptors are fixed for the chunk, so mining
        it all before the first step gives the same tuples as mining batch by batch), each with its
        ColorJitter seed."""
        plan = []
        for batch in strided_batches(queries, self.rank_tuples, self.dist):
            tuples = [self.miner.mine(int(q), rng) for q in batch]
            plan.append((tuples, int(rng.integers(2**62)) if self.jitter is not None else None))
        return plan

    def _descriptors(self, model: NetVLADModel, source, use_pca: bool | None = False) -> torch.Tensor:
        """:func:`descriptors` of ``source``; with several ranks each extracts a contiguous slice and
        the slices are all-gathered (every rank gets them all, in order)."""
        autocast = self.precision.autocast if self.precision.enabled else None
        if not self.dist.enabled:
            return descriptors(model, source, self.cfg.batch_size, use_pca=use_pca, autocast=autocast)
        part = self.dist.shard(len(source))
        if len(part):
            local = descriptors(model, _Subset(source, np.arange(part.start, part.stop)), self.cfg.batch_size,
                                use_pca=use_pca, autocast=autocast)
        else:
            dim = model.vlad_dim if use_pca is False else model.descriptor_dim
            local = torch.zeros((0, dim), dtype=torch.float32)
        return self.dist.gather_rows(local)

    # ------------------------------------------------------------------ steps
    @staticmethod
    def _tuple_indices(tuples: list[TrainingTuple], generation: int) -> tuple[list[int], list[int], list[int]]:
        """The query images, the database images (easiest positives, negatives, then from generation
        1 the difficult positives) and the number of difficult positives of each tuple."""
        q_idx = [t.query for t in tuples]
        db_idx = [t.easiest for t in tuples] + np.concatenate([t.negatives for t in tuples]).tolist()
        if generation > 0:
            db_idx += np.concatenate([t.positives for t in tuples]).tolist()
        return q_idx, db_idx, [len(t.positives) for t in tuples]

    def train_step(self, student: NetVLADModel, teacher: NetVLADModel | None, tuples: list[TrainingTuple],
                   generation: int, augment_seed: int | None = None,
                   images: tuple[torch.Tensor | None, torch.Tensor | None] | None = None,
                   forward: Callable[..., dict[str, torch.Tensor]] | None = None) -> dict[str, torch.Tensor]:
        """Losses of one batch of tuples. Every image is loaded (and augmented) once; the
        student and the teacher see the same images. ``augment_seed`` seeds the ColorJitter.

        ``images``: the query and database images a DataLoader worker already read (None where
        the frozen-feature cache serves them); ``forward``: what computes the losses from the
        prefix features (the DDP-wrapped :meth:`losses` under torchrun)."""
        cfg = self.cfg
        train = self.split_features(cfg.train_split)
        q_idx, db_idx, counts = self._tuple_indices(tuples, generation)
        augment = self.jitter if augment_seed is not None else None
        with self.precision.autocast():
            if images is not None:
                raw_q, raw_db = images
                x_q = train.q.from_images(raw_q) if raw_q is not None else train.q.get(q_idx)
                x_db = train.db.from_images(raw_db) if raw_db is not None else train.db.get(db_idx)
            else:
                with torch.random.fork_rng(devices=[]):
                    if augment is not None:
                        torch.manual_seed(augment_seed)
                    x_q, x_db = train.q.get(q_idx, augment), train.db.get(db_idx, augment)
        return (forward or self.losses)(student, teacher, x_q, x_db, counts, generation)

    def losses(self, student: NetVLADModel, teacher: NetVLADModel | None, x_q: torch.Tensor, x_db: torch.Tensor,
               counts: list[int], generation: int) -> dict[str, torch.Tensor]:
        """The step's losses from the frozen-prefix features of its query and database images
        (see :meth:`train_step`). The forward passes run under the configured autocast; the
        losses are computed in float32."""
        cfg = self.cfg
        B, N = len(counts), cfg.mining.neg_num
        amp = self.precision.autocast
        if cfg.channels_last:
            x_q, x_db = (x.contiguous(memory_format=torch.channels_last) for x in (x_q, x_db))
        losses = dict(tau=cfg.tau0, margin=cfg.margin, similarity=cfg.similarity)
        with amp():
            q = student.aggregate(local_features(student, x_q), use_pca=False)
        q = q.float()
        if generation == 0:
            with amp():
                db = student.aggregate(local_features(student, x_db), use_pca=False)
            db = db.float()
            loss = hard_loss(cfg.loss, q, db[:B], db[B:].view(B, N, -1), **losses)
            return {"loss": loss, "loss_hard": loss, "loss_soft": loss.new_zeros(())}
        with amp():
            regions = student.regions_from_features(local_features(student, x_db), use_pca=False)
        regions = regions.float()
        p_global = regions[:B, 0]
        neg_regions = regions[B:B + B * N].view(B, N, 9, -1)
        pos_regions, mask = _pad_positives(regions[B + B * N:], counts)
        l_hard = sfrs_hard_loss(q, p_global, neg_regions, cfg.loss, **losses)
        with torch.no_grad():
            with amp():
                tq = teacher.aggregate(local_features(teacher, x_q), use_pca=False)
                t_regions = teacher.regions_from_features(local_features(teacher, x_db[B + B * N:]), use_pca=False)
            t_sims = region_similarities(tq.float(), _pad_positives(t_regions.float(), counts)[0])
        entries = mask.repeat_interleave(9, dim=1)  # B x (k*9), positive-major like the similarities
        l_soft = soft_region_loss(region_similarities(q, pos_regions), t_sims, cfg.temperature(generation), cfg.tau0,
                                  mask=entries)
        return {"loss": l_hard + cfg.lambda_soft * l_soft, "loss_hard": l_hard, "loss_soft": l_soft}

    # ------------------------------------------------------------------ evaluation and snapshots
    def evaluate_split(self, model: NetVLADModel, split: str, generation: int) -> QueryResults | None:
        """Per-query results of ``model`` on ``split`` (on rank 0; None on the other ranks)."""
        return self._evaluate(model, split, generation)[0]

    def _evaluate(self, model: NetVLADModel, split: str, generation: int) -> tuple[QueryResults | None, dict[int, float]]:
        """Sharded extraction, then rank 0 searches and scores; every rank gets the recall@N."""
        feats = self.split_features(split)
        db = self._descriptors(model, feats.db, use_pca=None).numpy()
        qs = self._descriptors(model, feats.q, use_pca=None).numpy()

        def score() -> QueryResults:
            return evaluate(model, feats.split, k=min(20, len(feats.split.database)), db_descriptors=db,
                            query_descriptors=qs, progress=False, run=f"{self.cfg.run}/gen{generation}",
                            dataset_root=self.dataset.root, precision=self.precision.name)

        if not self.dist.enabled:
            res = score()
            return res, res.recall
        held: dict[str, QueryResults] = {}

        def score_main() -> list[list[float]]:
            held["res"] = score()
            return [[int(n), float(v)] for n, v in held["res"].recall.items()]

        pairs = self.dist.from_main(score_main)
        return held.get("res"), {int(n): float(v) for n, v in pairs}

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
        self._build_model()  # no pretrained trunk weights (and no --random-trunk): stop before writing anything
        self._open_run_dir()
        try:
            self._record_trunk_weights()
            pos = _Position()
            state = self.dist.from_main(self._resume_state, tensors=True)
            if state is not None:
                pos = _Position(state["generation"], state["epoch"], state["chunk"], state["iteration"])
            # From here progress.json names this process: a watcher (the app) follows its pid while the
            # set-up (dataset, frozen features, k-means) runs; total_iterations 0 means "preparing".
            self._pos = pos
            self._progress("running", pos)
            self._prepare()
            if state is not None and "negative_cache" in state:  # the cache lives through the whole run
                self._restore_negative_cache(state)
            if self.dist.is_main:
                if state is not None:
                    truncate_metrics(self.run_dir / "metrics.jsonl", pos.iteration, state.get("metrics_records"))
                elif self.resume:
                    truncate_metrics(self.run_dir / "metrics.jsonl", 0)
            self.metrics = MetricsLog(self.run_dir / "metrics.jsonl") if self.dist.is_main else NullMetricsLog()
            self._t0 = time.time() - (state["elapsed_s"] if state else 0.0)
            self._process_t0, self._start_iteration = time.time(), pos.iteration
            self._total = self._total_iterations(pos)
            self._bar = tqdm(total=self._total, initial=pos.iteration, desc=self.cfg.run, unit="it", disable=not self.progress)
            self._progress("running", pos)  # set up: the total is known
            for g in range(pos.generation, self.cfg.generations):
                # A generation-boundary checkpoint holds no student: the generation starts afresh.
                mid_generation = state is not None and state["generation"] == g and "student" in state
                self._generation(g, pos, state if mid_generation else None)
                pos = _Position(g + 1, 0, 0, pos.iteration)
                state = None
            self.dist.barrier()
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

    def _resume_state(self) -> dict[str, Any] | None:
        """``latest.pt`` (or its previous version) when resuming and there is one."""
        latest = self.run_dir / "latest.pt"
        has_latest = latest.is_file() or previous_path(latest).is_file()
        return load_checkpoint_or_previous(latest) if self.resume and has_latest else None

    def _progress(self, status: str, pos: _Position | None, error: str | None = None) -> None:
        if not self.dist.is_main:  # one writer
            return
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
            "stage": getattr(self, "_stage_name", None), "stage_started": getattr(self, "_stage_started", None),
            "updated": time.time(),
        })

    @contextlib.contextmanager
    def _stage(self, name: str):
        """Name a set-up stage (dataset, frozen features, k-means, PCA) in progress.json while it runs;
        the enclosing stage (or none) is reported again when it ends."""
        outer = (getattr(self, "_stage_name", None), getattr(self, "_stage_started", None))
        self._stage_name, self._stage_started = name, time.time()
        self._progress("running", None)
        try:
            yield
        finally:
            self._stage_name, self._stage_started = outer
            self._progress("running", None)

    def _save_latest(self, pos: _Position, student, opt, sched, selection: dict[str, Any],
                     scaler: torch.amp.GradScaler | None = None) -> None:
        """``latest.pt`` (rank 0 writes; the others wait): nothing in it depends on the rank or the
        number of ranks, but for the per-rank negative caches (``per_rank_negative_cache``), kept
        beside rank 0's."""
        caches = self._cache_payload()  # a collective with per-rank caches: every rank takes part
        if self.dist.is_main:
            self.metrics.sync()
            payload = {
                "generation": pos.generation, "epoch": pos.epoch, "chunk": pos.chunk, "iteration": pos.iteration,
                "student": student.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                **caches, "elapsed_s": time.time() - self._t0,
                "selection": selection, "metrics_records": self.metrics.records,
            }
            if scaler is not None and scaler.is_enabled():
                payload["scaler"] = scaler.state_dict()
            save_checkpoint(self.run_dir / "latest.pt", keep_previous=True, payload=payload)
        if self._debug.enabled:
            self._debug.write({"event": "latest", "iteration": pos.iteration, "digest": state_digest(student.state_dict())})
        self.dist.barrier()

    def _teacher(self, g: int) -> NetVLADModel:
        """Generation g-1 frozen: its last epoch (``teacher="last"``) or its kept checkpoint."""
        def read() -> dict[str, Any]:
            last = self.run_dir / f"gen{g - 1}_last.pt"
            path = last if self.cfg.teacher == "last" and last.is_file() else self.run_dir / f"gen{g - 1}.pt"
            return {**load_checkpoint(path), "path": str(path)}

        payload = self.dist.from_main(read, tensors=True)
        teacher = model_from_payload(payload, self.device, payload["path"])
        if self.cfg.channels_last:
            teacher.to(memory_format=torch.channels_last)
        return teacher.requires_grad_(False)

    def _ddp_forward(self, student: NetVLADModel, teacher: NetVLADModel | None) -> Callable[..., dict[str, torch.Tensor]] | None:
        """Under torchrun, :meth:`losses` behind ``DistributedDataParallel`` (None alone).

        DDP wraps :class:`_StudentStep`, which registers exactly the parameters the losses use
        (the trunk's trainable suffix and NetVLAD; not the PCA layer, fitted after training), so
        every one gets a gradient each step and ``find_unused_parameters`` is not needed."""
        if not self.dist.enabled:
            return None
        ddp = self.dist.ddp(_StudentStep(self, student), self.device, sync_buffers=self._broadcast_buffers)
        return lambda _student, _teacher, x_q, x_db, counts, generation: ddp(teacher, x_q, x_db, counts, generation)

    def _stop_requested(self, pos: _Position) -> bool:
        """A stop was asked for (on any rank: they all stop at the same step)."""
        local = self.should_stop() or (self._stop_at is not None and pos.iteration >= self._stop_at)
        return self.dist.any(local)

    def _batches(self, plan: list[tuple[list[TrainingTuple], int | None]], generation: int):
        """``(tuples, augment_seed, images)`` of each planned batch. With ``num_workers`` and images
        to read from disk (no cache, or ColorJitter), DataLoader workers read them ahead (pinned on
        CUDA), seeded as :meth:`train_step` would; otherwise ``images`` is None."""
        train = self.split_features(self.cfg.train_split)
        augment = self.jitter is not None
        if self.cfg.num_workers == 0 or not (train.q.needs_images(augment) or train.db.needs_images(augment)):
            for tuples, seed in plan:
                yield tuples, seed, None
            return
        items = [(*self._tuple_indices(tuples, generation)[:2], seed) for tuples, seed in plan]
        loader = torch.utils.data.DataLoader(_TupleImages(train.q, train.db, items, self.jitter), batch_size=None,
                                             num_workers=self.cfg.num_workers, pin_memory=self.device.type == "cuda")
        for (tuples, seed), images in zip(plan, loader):
            yield tuples, seed, images

    def _log_step(self, pos: _Position, losses: dict[str, torch.Tensor], opt, g: int, epoch: int) -> None:
        """Accumulate the step's losses on the device; every ``log_every`` steps (and at the end of
        an epoch, :meth:`_flush_losses`) their mean over the steps and the ranks becomes one
        ``metrics.jsonl`` record: the step's only host-device sync."""
        stacked = torch.stack([v.detach() for v in losses.values()])
        self._loss_sum = stacked if self._loss_sum is None else self._loss_sum + stacked
        self._loss_names, self._loss_steps = list(losses), self._loss_steps + 1
        if pos.iteration % self.cfg.log_every == 0:
            self._flush_losses(pos, opt, g, epoch)

    def _flush_losses(self, pos: _Position, opt, g: int, epoch: int) -> None:
        """Write the step record of the losses accumulated since the last one (if any)."""
        if not self._loss_steps:
            return
        mean = self._loss_sum if self._loss_steps == 1 else self._loss_sum / self._loss_steps
        values = self.dist.mean(mean).tolist()
        self._loss_sum, self._loss_steps = None, 0
        record = {"event": "step", "iteration": pos.iteration, "generation": g, "epoch": epoch,
                  **{k: round(float(v), 6) for k, v in zip(self._loss_names, values)},
                  "lr": opt.param_groups[0]["lr"], "seconds": round(time.time() - self._t0, 2)}
        self.metrics.write(record)
        self._bar.set_postfix(gen=g, epoch=epoch, loss=f"{record['loss']:.3f}")

    def _generation(self, g: int, pos: _Position, state: dict[str, Any] | None) -> None:
        cfg = self.cfg
        student = self.model
        student.load_state_dict(self.init_state)  # re-initialised: the same start as generation 0
        teacher = self._teacher(g) if g >= 1 else None
        params = [p for p in student.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_step_epochs, gamma=cfg.lr_gamma)
        scaler = self.precision.grad_scaler()  # a pass-through unless float16
        # the epoch kept so far: its validation recall@N and weights (OpenIBL's best_recall5)
        selection: dict[str, Any] = {"epoch": -1, "recall": -1.0, "state": None}
        if state is not None:
            student.load_state_dict(state["student"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            selection = state.get("selection", selection)
            if "scaler" in state and scaler.is_enabled():
                scaler.load_state_dict(state["scaler"])
        forward = self._ddp_forward(student, teacher)
        self._loss_sum, self._loss_steps = None, 0
        train = self.split_features(cfg.train_split)
        epochs = cfg.epochs_of(g)
        for epoch in range(pos.epoch, epochs):
            chunks = self._chunks(g, epoch)
            first_chunk = pos.chunk if epoch == pos.epoch else 0
            for c in range(first_chunk, len(chunks)):
                student.eval()
                self.miner.refresh(self._descriptors(student, train.db).numpy(),
                                   self._descriptors(student, train.q).numpy(), rerank=g >= 1)
                plan = self._plan(chunks[c], self._mining_rng(g, epoch, c))
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
                    self._pos = pos
                    self._debug.write({"event": "step", "iteration": pos.iteration, "generation": g, "epoch": epoch,
                                       "chunk": c, "queries": [t.query for t in tuples]})
                    self._log_step(pos, losses, opt, g, epoch)
                    self._bar.update()
                    if pos.iteration % 10 == 0 or time.time() - self._progress_written >= 5:
                        self._progress("running", pos)
                merge_negative_cache(self.miner.negative_cache, [t.query for tuples, _ in plan for t in tuples],
                                     self.dist, per_rank=cfg.per_rank_negative_cache)
                if self._broadcast_buffers:  # CPU, trainable BatchNorm: extract with rank 0's statistics
                    self.dist.broadcast_module(student, buffers_only=True)
                if c + 1 < len(chunks):
                    self._save_latest(_Position(g, epoch, c + 1, pos.iteration), student, opt, sched, selection, scaler)
            self._flush_losses(pos, opt, g, epoch)  # log_every > 1: the epoch's last steps too
            sched.step()
            if cfg.eval_every_epoch or epoch + 1 == epochs:
                _, recall = self._evaluate(student, cfg.val_split, g)
                self.metrics.write({"event": "eval", "iteration": pos.iteration, "generation": g, "epoch": epoch,
                                    "split": cfg.val_split, "pca": False,
                                    **{f"recall@{n}": round(v, 6) for n, v in recall.items()},
                                    "seconds": round(time.time() - self._t0, 2)})
                n = cfg.select_recall_n
                score = recall.get(n, -1.0) if n is not None else float(epoch)
                if score > selection["recall"]:  # strictly better: ties keep the earlier epoch
                    selection = {"epoch": epoch, "recall": score, "state": _trainable_state(student)}
            self._save_latest(_Position(g, epoch + 1, 0, pos.iteration), student, opt, sched, selection, scaler)
        self._finish_generation(g, student, pos, selection)

    def _finish_generation(self, g: int, student: NetVLADModel, pos: _Position, selection: dict[str, Any]) -> None:
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
            with self._stage("PCA whitening"):
                student.pca.fit(self._pca_descriptors(student))
                self.dist.broadcast_module(student.pca)  # every rank evaluates with rank 0's fit
        recalls = {}
        for split in [s for s in (cfg.val_split, cfg.test_split) if s and s in self.dataset.splits]:
            res, recall = self._evaluate(student, split, g)
            if main:
                res.save(self.run_dir / "results" / f"{split}_gen{g}.npz")
            recalls[split] = recall
            self.metrics.write({"event": "eval", "iteration": pos.iteration, "generation": g, "epoch": kept,
                                "split": split, "pca": student.pca is not None, "final": True, "selected_epoch": kept,
                                **{f"recall@{n}": round(v, 6) for n, v in recall.items()},
                                "seconds": round(time.time() - self._t0, 2)})
        if self._debug.enabled:
            self._debug.write({"event": "generation", "generation": g, "digest": state_digest(student.state_dict())})
        caches = self._cache_payload()  # a collective with per-rank caches: every rank takes part
        if main:
            self._write_generation(g, student, pos, selection, kept, snapshot, recalls, caches)
        self.dist.barrier()
        self._progress("running", _Position(g + 1, 0, 0, pos.iteration))

    def _write_generation(self, g: int, student: NetVLADModel, pos: _Position, selection: dict[str, Any], kept: int,
                          snapshot: dict[str, np.ndarray], recalls: dict[str, dict[int, float]],
                          caches: dict[str, torch.Tensor]) -> None:
        """Rank 0: the generation's soft labels, checkpoint, ``best.json`` and boundary ``latest.pt``."""
        cfg = self.cfg
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
            **caches, "metrics_records": self.metrics.records})

    def _cache_payload(self) -> dict[str, torch.Tensor]:
        """What ``latest.pt`` keeps of the negative cache: this (rank 0's) cache, and with
        ``per_rank_negative_cache`` under torchrun every rank's (``W x Q x N``, gathered: every
        rank must call this)."""
        out = {"negative_cache": torch.from_numpy(self.miner.negative_cache.copy())}
        if self.cfg.per_rank_negative_cache and self.dist.enabled:
            out["negative_cache_per_rank"] = gather_negative_caches(self.miner.negative_cache, self.dist)
        return out

    def _restore_negative_cache(self, state: dict[str, Any]) -> None:
        """The negative cache a resume state holds: this rank's own when the run keeps per-rank
        caches and resumes on as many ranks, else the (merged, or rank 0's) ``negative_cache``."""
        per_rank = state.get("negative_cache_per_rank")
        if (self.cfg.per_rank_negative_cache and per_rank is not None and self.dist.enabled
                and per_rank.shape[0] == self.dist.world_size):
            self.miner.negative_cache[:] = per_rank[self.dist.rank].numpy()
            return
        if per_rank is not None and self.cfg.per_rank_negative_cache:
            log.warning("per-rank negative caches of %d ranks resumed on %d: every rank starts from rank 0's",
                        per_rank.shape[0], self.dist.world_size)
        self.miner.negative_cache[:] = state["negative_cache"].numpy()

    def _pca_descriptors(self, model: NetVLADModel) -> torch.Tensor:
        """VLAD descriptors of ``pca_samples`` random training images (queries and database)."""
        parts = [self._descriptors(model, _Subset(source, idx))
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


class _StudentStep(nn.Module):
    """What DDP wraps: the student's parts the losses train (trunk suffix and NetVLAD, registered
    here so that DDP sees exactly those parameters) and a forward that is :meth:`Trainer.losses`."""

    def __init__(self, trainer: Trainer, student: NetVLADModel):
        super().__init__()
        self.trunk_suffix = trunk_suffix(student)
        self.net_vlad = student.net_vlad
        self._owner = (trainer, student)  # a tuple: not registered as submodules

    def forward(self, teacher: NetVLADModel | None, x_q: torch.Tensor, x_db: torch.Tensor, counts: list[int],
                generation: int) -> dict[str, torch.Tensor]:
        trainer, student = self._owner
        return trainer.losses(student, teacher, x_q, x_db, counts, generation)


class _TupleImages(torch.utils.data.Dataset):
    """Item i: the images of planned batch i before the frozen prefix, read (and jittered, seeded
    as :meth:`Trainer.train_step` seeds it) in a DataLoader worker; None where the cache serves them."""

    def __init__(self, q: PrefixFeatures, db: PrefixFeatures, items: list[tuple[list[int], list[int], int | None]],
                 jitter: Callable | None):
        self.q, self.db, self.items, self.jitter = q, db, items, jitter

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        q_idx, db_idx, seed = self.items[i]
        augment = self.jitter if seed is not None else None
        with torch.random.fork_rng(devices=[]):
            if augment is not None:
                torch.manual_seed(seed)
            x_q = self.q.load(q_idx, augment) if self.q.needs_images(augment is not None) else None
            x_db = self.db.load(db_idx, augment) if self.db.needs_images(augment is not None) else None
        return x_q, x_db


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
