"""What the model computes in training: a step's SARE/SFRS losses, and the descriptors it is judged by.

Generation 0 trains with the hard loss only. Generation g ≥ 1 minimises ``L_hard + λ·L_soft``
where ``L_hard`` uses each negative's hardest region and ``L_soft`` matches the teacher's
image-to-region similarity distribution over the k×9 regions of the difficult positives
(:func:`soft_label_snapshot` records those distributions). Under torchrun the losses run behind
``DistributedDataParallel`` (:func:`ddp_forward`; trainable BatchNorms: :func:`sync_batchnorm`).

Everything here reads the frozen-prefix features of a split (:class:`SplitFeatures`): a step's
images, NetVLAD's k-means initialisation (:func:`kmeans_init`), and the descriptors the miner
ranks by and the validation recall that selects each generation's kept epoch is scored on
(:func:`evaluate_sharded`), extracted in slices, one per rank, and all-gathered
(:func:`sharded_descriptors`).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.dataset import PlaceSplit
from ..data.transforms import ImageTransform
from ..losses import hard_loss, region_similarities, sfrs_hard_loss, soft_labels, soft_region_loss
from ..models.model import NetVLADModel
from ..models.netvlad import sample_local_descriptors
from ..retrieval.evaluate import evaluate
from ..retrieval.results import QueryResults
from .config import TrainConfig
from .distributed import DistContext
from .feature_cache import PrefixFeatures, descriptors, local_features, trunk_suffix
from .mining import TrainingTuple
from .precision import Precision

log = logging.getLogger(__name__)

#: What computes a step's losses: ``(student, teacher, x_q, x_db, counts, generation) -> losses``.
Losses = Callable[..., dict[str, torch.Tensor]]


class SplitFeatures:
    """Frozen-prefix features of a split's database and queries."""

    def __init__(self, model: NetVLADModel, split: PlaceSplit, transform: ImageTransform, cfg: TrainConfig,
                 device: torch.device, progress: bool):
        args = dict(device=device, budget_gb=cfg.feature_cache_gb / 2, batch_size=cfg.batch_size,
                    num_workers=cfg.num_workers, progress=progress, channels_last=cfg.channels_last)
        self.split = split
        self.db = PrefixFeatures(model, split.database, transform, name=f"{split.name} database", **args)
        self.q = PrefixFeatures(model, split.queries, transform, name=f"{split.name} queries", **args)


def pad_positives(regions: torch.Tensor, counts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
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


def tuple_indices(tuples: list[TrainingTuple], generation: int) -> tuple[list[int], list[int], list[int]]:
    """The query images, the database images (easiest positives, negatives, then from generation
    1 the difficult positives) and the number of difficult positives of each tuple."""
    q_idx = [t.query for t in tuples]
    db_idx = [t.easiest for t in tuples] + np.concatenate([t.negatives for t in tuples]).tolist()
    if generation > 0:
        db_idx += np.concatenate([t.positives for t in tuples]).tolist()
    return q_idx, db_idx, [len(t.positives) for t in tuples]


def step_inputs(q: PrefixFeatures, db: PrefixFeatures, tuples: list[TrainingTuple], generation: int,
                precision: Precision, augment: Callable | None, augment_seed: int | None,
                images: tuple[torch.Tensor | None, torch.Tensor | None] | None
                ) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """The frozen-prefix features of a step's query and database images, and its positives' counts
    (the body of :meth:`~sfrs_core.training.trainer.Trainer.train_step`). Every image is loaded
    (and augmented: ``augment`` seeded by ``augment_seed``) once; the student and the teacher see
    the same images. ``images``: what a DataLoader worker already read (None where the
    frozen-feature cache serves them)."""
    q_idx, db_idx, counts = tuple_indices(tuples, generation)
    with precision.autocast():
        if images is not None:
            raw_q, raw_db = images
            x_q = q.from_images(raw_q) if raw_q is not None else q.get(q_idx)
            x_db = db.from_images(raw_db) if raw_db is not None else db.get(db_idx)
        else:
            with torch.random.fork_rng(devices=[]):
                if augment is not None:
                    torch.manual_seed(augment_seed)
                x_q, x_db = q.get(q_idx, augment), db.get(db_idx, augment)
    return x_q, x_db, counts


def step_losses(cfg: TrainConfig, precision: Precision, student: NetVLADModel, teacher: NetVLADModel | None,
                x_q: torch.Tensor, x_db: torch.Tensor, counts: list[int], generation: int) -> dict[str, torch.Tensor]:
    """The step's losses from the frozen-prefix features of its query and database images
    (see :func:`step_inputs`). The forward passes run under the configured autocast; the
    losses are computed in float32."""
    B, N = len(counts), cfg.mining.neg_num
    amp = precision.autocast
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
    pos_regions, mask = pad_positives(regions[B + B * N:], counts)
    l_hard = sfrs_hard_loss(q, p_global, neg_regions, cfg.loss, **losses)
    with torch.no_grad():
        with amp():
            tq = teacher.aggregate(local_features(teacher, x_q), use_pca=False)
            t_regions = teacher.regions_from_features(local_features(teacher, x_db[B + B * N:]), use_pca=False)
        t_sims = region_similarities(tq.float(), pad_positives(t_regions.float(), counts)[0])
    entries = mask.repeat_interleave(9, dim=1)  # B x (k*9), positive-major like the similarities
    l_soft = soft_region_loss(region_similarities(q, pos_regions), t_sims, cfg.temperature(generation), cfg.tau0,
                              mask=entries)
    return {"loss": l_hard + cfg.lambda_soft * l_soft, "loss_hard": l_hard, "loss_soft": l_soft}


def sync_batchnorm(model: NetVLADModel, dist: DistContext, device: torch.device) -> bool:
    """With several ranks, trainable BatchNorms (``freeze_bn=False``) see every rank's batch:
    ``SyncBatchNorm`` on CUDA. On CPU (SyncBatchNorm needs a GPU) DDP broadcasts rank 0's
    running statistics every step instead (returns True: see :func:`ddp_forward`'s ``sync_buffers``).
    Frozen BatchNorms (the default) stay in eval mode, their statistics fixed: nothing to synchronise."""
    trunk = model.trunk
    if not dist.enabled or trunk.freeze_bn:
        return False
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm)
               for m in trunk.body[trunk.frozen_upto:].modules()):
        return False
    if device.type == "cuda":
        for i in range(trunk.frozen_upto, len(trunk.body)):
            trunk.body[i] = nn.SyncBatchNorm.convert_sync_batchnorm(trunk.body[i])
        trunk.train(trunk.training)
        return False
    log.warning("trainable BatchNorm on CPU: SyncBatchNorm needs CUDA; rank 0's running statistics are "
                "broadcast at every forward and chunk end instead")
    return True


def ddp_forward(dist: DistContext, device: torch.device, student: NetVLADModel, teacher: NetVLADModel | None,
                losses: Losses, sync_buffers: bool) -> Losses | None:
    """Under torchrun, ``losses`` behind ``DistributedDataParallel`` (None alone).

    DDP wraps :class:`StudentStep`, which registers exactly the parameters the losses use
    (the trunk's trainable suffix and NetVLAD; not the PCA layer, fitted after training), so
    every one gets a gradient each step and ``find_unused_parameters`` is not needed."""
    if not dist.enabled:
        return None
    ddp = dist.ddp(StudentStep(student, losses), device, sync_buffers=sync_buffers)
    return lambda _student, _teacher, x_q, x_db, counts, generation: ddp(teacher, x_q, x_db, counts, generation)


class StudentStep(nn.Module):
    """What DDP wraps: the student's parts the losses train (trunk suffix and NetVLAD, registered
    here so that DDP sees exactly those parameters) and a forward that is the trainer's losses."""

    def __init__(self, student: NetVLADModel, losses: Losses):
        super().__init__()
        self.trunk_suffix = trunk_suffix(student)
        self.net_vlad = student.net_vlad
        self._owner = (losses, student)  # a tuple: not registered as submodules

    def forward(self, teacher: NetVLADModel | None, x_q: torch.Tensor, x_db: torch.Tensor, counts: list[int],
                generation: int) -> dict[str, torch.Tensor]:
        losses, student = self._owner
        return losses(student, teacher, x_q, x_db, counts, generation)


def step_batches(plan: list[tuple[list[TrainingTuple], int | None]], generation: int, q: PrefixFeatures,
                 db: PrefixFeatures, jitter: Callable | None, num_workers: int, device: torch.device):
    """``(tuples, augment_seed, images)`` of each planned batch. With ``num_workers`` and images
    to read from disk (no cache, or ColorJitter), DataLoader workers read them ahead (pinned on
    CUDA), seeded as :func:`step_inputs` would; otherwise ``images`` is None."""
    augment = jitter is not None
    if num_workers == 0 or not (q.needs_images(augment) or db.needs_images(augment)):
        for tuples, seed in plan:
            yield tuples, seed, None
        return
    items = [(*tuple_indices(tuples, generation)[:2], seed) for tuples, seed in plan]
    loader = torch.utils.data.DataLoader(TupleImages(q, db, items, jitter), batch_size=None,
                                         num_workers=num_workers, pin_memory=device.type == "cuda")
    for (tuples, seed), images in zip(plan, loader):
        yield tuples, seed, images


class TupleImages(torch.utils.data.Dataset):
    """Item i: the images of planned batch i before the frozen prefix, read (and jittered, seeded
    as :func:`step_inputs` seeds it) in a DataLoader worker; None where the cache serves them."""

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


@torch.no_grad()
def soft_label_snapshot(cfg: TrainConfig, feats: SplitFeatures, teacher: NetVLADModel,
                        generation: int) -> dict[str, np.ndarray]:
    """The k×9 soft labels ``teacher`` (generation g) gives generation g+1, on fixed val queries
    (``feats``: the validation split's)."""
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


def sharded_descriptors(model: NetVLADModel, source, dist: DistContext, precision: Precision, batch_size: int,
                        use_pca: bool | None = False) -> torch.Tensor:
    """:func:`descriptors` of ``source``; with several ranks each extracts a contiguous slice and
    the slices are all-gathered (every rank gets them all, in order)."""
    autocast = precision.autocast if precision.enabled else None
    if not dist.enabled:
        return descriptors(model, source, batch_size, use_pca=use_pca, autocast=autocast)
    part = dist.shard(len(source))
    if len(part):
        local = descriptors(model, Subset(source, np.arange(part.start, part.stop)), batch_size,
                            use_pca=use_pca, autocast=autocast)
    else:
        dim = model.vlad_dim if use_pca is False else model.descriptor_dim
        local = torch.zeros((0, dim), dtype=torch.float32)
    return dist.gather_rows(local)


def evaluate_sharded(model: NetVLADModel, feats: SplitFeatures, cfg: TrainConfig, dist: DistContext,
                     precision: Precision, generation: int,
                     dataset_root: Path) -> tuple[QueryResults | None, dict[int, float]]:
    """Sharded extraction, then rank 0 searches and scores; every rank gets the recall@N (and rank 0
    the per-query results; the others None)."""
    db = sharded_descriptors(model, feats.db, dist, precision, cfg.batch_size, use_pca=None).numpy()
    qs = sharded_descriptors(model, feats.q, dist, precision, cfg.batch_size, use_pca=None).numpy()

    def score() -> QueryResults:
        return evaluate(model, feats.split, k=min(20, len(feats.split.database)), db_descriptors=db,
                        query_descriptors=qs, progress=False, run=f"{cfg.run}/gen{generation}",
                        dataset_root=dataset_root, precision=precision.name)

    if not dist.enabled:
        res = score()
        return res, res.recall
    held: dict[str, QueryResults] = {}

    def score_main() -> list[list[float]]:
        held["res"] = score()
        return [[int(n), float(v)] for n, v in held["res"].recall.items()]

    pairs = dist.from_main(score_main)
    return held.get("res"), {int(n): float(v) for n, v in pairs}


@torch.no_grad()
def kmeans_init(model: NetVLADModel, images: list[tuple[PrefixFeatures, np.ndarray]], cfg: TrainConfig) -> None:
    """NetVLAD's centroids by k-means on local descriptors sampled from ``images`` (features, indices)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    model.eval()
    parts = []
    for source, idx in images:
        for start in range(0, len(idx), cfg.batch_size):
            local = local_features(model, source.get(idx[start:start + cfg.batch_size]))
            parts.append(sample_local_descriptors(local.cpu(), cfg.kmeans_per_image, gen))
    alpha = model.init_netvlad(torch.cat(parts), seed=cfg.seed, method=cfg.kmeans_init)
    log.info("NetVLAD initialised by %s k-means on %d local descriptors (alpha %.1f)", cfg.kmeans_init,
             sum(len(p) for p in parts), alpha)


class Subset:
    """The images ``indices`` of a :class:`PrefixFeatures`, with its ``get`` and ``len``."""

    def __init__(self, source: PrefixFeatures, indices: np.ndarray):
        self.source, self.indices = source, np.asarray(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def get(self, indices, augment=None) -> torch.Tensor:
        return self.source.get(self.indices[np.asarray(indices)], augment)
