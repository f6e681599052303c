"""Evaluate a model on a split: extract, index, search, recall@N at 25 m, per-query results."""
from __future__ import annotations

import logging
import os

import numpy as np
import torch
from torch import nn

from sfrs_core.data.dataset import EVAL_POS_RADIUS_M, PlaceSplit
from sfrs_core.data.transforms import ImageTransform

from .extract import extract_descriptors
from .index import UseGpu, build_index, search
from .metrics import RECALL_NS, dedupe_columns, place_labels, recall_from_hits
from .results import QueryResults

log = logging.getLogger(__name__)


def _check_descriptors(desc: np.ndarray | None, n: int, what: str) -> np.ndarray | None:
    if desc is None:
        return None
    desc = np.ascontiguousarray(np.asarray(desc, dtype=np.float32))
    if desc.ndim != 2 or desc.shape[0] != n:
        raise ValueError(f"{what} descriptors have shape {desc.shape}; expected ({n}, dim)")
    return desc


def rank(
    db_desc: np.ndarray, q_desc: np.ndarray, k: int, *, db_utm: np.ndarray | None = None,
    dedupe: bool = False, index_kind: str = "flat", use_gpu: UseGpu = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` (sims, ids) of each query; with ``dedupe``, one hit per database position."""
    if q_desc.shape[1] != db_desc.shape[1]:
        raise ValueError(f"query descriptors have dim {q_desc.shape[1]}, database ones {db_desc.shape[1]}")
    index = build_index(db_desc, index_kind, use_gpu=use_gpu)
    if not dedupe:
        return search(index, q_desc, k)
    if db_utm is None:
        raise ValueError("dedupe=True needs the database positions")
    labels = place_labels(db_utm)
    views = int(np.bincount(labels).max())
    k = min(k, int(labels.max()) + 1)
    sims, ids = search(index, q_desc, k * views)
    cols = dedupe_columns(ids, labels, k)  # -1 only where an approximate index returned short lists
    safe = np.maximum(cols, 0)
    sims = np.where(cols >= 0, np.take_along_axis(sims, safe, axis=1), -np.inf).astype(np.float32)
    return sims, np.where(cols >= 0, np.take_along_axis(ids, safe, axis=1), -1)


def evaluate(
    model: nn.Module,
    split: PlaceSplit,
    *,
    image_size: tuple[int, int] | None = None,
    k: int = 20,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    dedupe: bool = False,
    progress: bool = True,
    db_descriptors: np.ndarray | None = None,
    query_descriptors: np.ndarray | None = None,
    num_workers: int = 0,
    index_kind: str = "flat",
    use_gpu: UseGpu = "auto",
    run: str = "",
    dataset_root: str | os.PathLike | None = None,
) -> QueryResults:
    """Retrieve the top-``k`` database images of every query of ``split`` and score them.

    Descriptors are extracted at ``image_size`` (H, W; None keeps the image size) unless given
    (``db_descriptors`` lets a caller reuse a database extraction). A retrieved image is correct
    when it lies within 25 m of the query; recall@1/5/10/20 (those N <= k) follows from that.
    ``dedupe`` applies Tokyo 24/7's spatial NMS (one hit per database position). ``k`` is capped
    at the number of database images (distinct places with ``dedupe``).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    db, qs = split.database, split.queries
    db_desc = _check_descriptors(db_descriptors, len(db), "database")
    q_desc = _check_descriptors(query_descriptors, len(qs), "query")
    if db_desc is None or q_desc is None:
        transform = ImageTransform(image_size, getattr(model, "normalization", None))
        common = dict(batch_size=batch_size, device=device, num_workers=num_workers, progress=progress)
        if db_desc is None:
            db_desc = extract_descriptors(model, db, transform, desc=f"{split.name} database", **common)
        if q_desc is None:
            q_desc = extract_descriptors(model, qs, transform, desc=f"{split.name} queries", **common)

    sims, ids = rank(db_desc, q_desc, k, db_utm=db.utm, dedupe=dedupe, index_kind=index_kind, use_gpu=use_gpu)
    valid = ids >= 0
    safe = np.where(valid, ids, 0)
    distances = np.linalg.norm(db.utm[safe] - qs.utm[:, None, :], axis=-1)
    distances = np.where(valid, distances, np.inf).astype(np.float32)
    correct = valid & (distances <= EVAL_POS_RADIUS_M)

    no_positive = sum(len(p) == 0 for p in split.eval_positives)
    if no_positive:
        log.warning("%s: %d of %d queries have no database image within %.0f m; they count as wrong",
                    split.name, no_positive, len(qs), EVAL_POS_RADIUS_M)
    ns = [n for n in RECALL_NS if n <= ids.shape[1]]
    recall = recall_from_hits(correct, ns)
    if dataset_root is None:
        dataset_root = os.path.commonpath([str(db.root), str(qs.root)])
    meta = {
        "image_size": list(image_size) if image_size is not None else None,
        "dedupe": bool(dedupe),
        "index_kind": index_kind,
        "descriptor_dim": int(db_desc.shape[1]),
        "num_database": len(db),
        "database_root": str(db.root),
        "queries_root": str(qs.root),
        "queries_without_positive": int(no_positive),
        "radius_m": EVAL_POS_RADIUS_M,
    }
    return QueryResults(
        queries=np.arange(len(qs)), ids=ids, similarities=sims, distances_m=distances, correct=correct,
        recall=recall, split=split.name, dataset_root=str(dataset_root), run=run, meta=meta,
    )
