"""Evaluate a model on a split: extract, index, search, recall@N at 25 m, per-query results.

Descriptors live in RAM, or, for a database too large for that, in on-disk descriptor stores
(``store=FOLDER``: ``FOLDER/database`` and ``FOLDER/queries``, extracted resumably, see
:mod:`.store`); ranking then reads the store chunk by chunk (exact search streamed with a
running top-k, or an IVF-PQ/HNSW index filled chunk by chunk) and never forms a Q x N matrix.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sfrs_core.data.dataset import EVAL_POS_RADIUS_M, PlaceDataset, PlaceSplit
from sfrs_core.data.transforms import RESIZE_MODES, ImageTransform

from .extract import ExtractStats, extract_descriptors, extract_to_store
from .index import Descriptors, IndexConfig, UseGpu, build_index, rerank_exact, search, search_exact
from .metrics import RECALL_NS, TOKYO_NMS_WINDOW, dedupe_columns, nms_groups, place_labels, recall_from_hits
from .results import QueryResults
from .store import ArraySource, DescriptorStore

log = logging.getLogger(__name__)

PROTOCOLS = ("plain", "tokyo247")
OPENIBL_IMAGE_SIZE = (480, 640)  # OpenIBL's test.py --height/--width defaults


def _check_descriptors(desc: Descriptors | None, n: int, what: str) -> Descriptors | None:
    if desc is None:
        return None
    if isinstance(desc, (DescriptorStore, ArraySource)):
        if desc.count != n:
            raise ValueError(f"{what} descriptors have shape ({desc.count}, {desc.dim}); expected ({n}, dim)")
        if isinstance(desc, DescriptorStore) and not desc.complete:
            raise ValueError(f"{desc.header_path}: {what} descriptor store is incomplete "
                             f"({desc.rows_done} of {desc.count} rows)")
        return desc
    desc = np.ascontiguousarray(np.asarray(desc, dtype=np.float32))
    if desc.ndim != 2 or desc.shape[0] != n:
        raise ValueError(f"{what} descriptors have shape {desc.shape}; expected ({n}, dim)")
    return desc


def _dim(desc: Descriptors) -> int:
    return desc.dim if isinstance(desc, (DescriptorStore, ArraySource)) else int(np.shape(desc)[1])


def _count(desc: Descriptors) -> int:
    return desc.count if isinstance(desc, (DescriptorStore, ArraySource)) else int(np.shape(desc)[0])


def rank(
    db_desc: Descriptors, q_desc: Descriptors, k: int, *, db_utm: np.ndarray | None = None,
    dedupe: bool = False, groups: np.ndarray | None = None, window: int | None = None,
    index_kind: str | IndexConfig = "flat", use_gpu: UseGpu = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` (sims, ids) of each query.

    Descriptors are arrays or :class:`~sfrs_core.retrieval.store.DescriptorStore` s. A flat
    (exact) ranking of a store streams it chunk by chunk (:func:`~.index.search_exact`); IVF-PQ
    and HNSW indexes (``index_kind``: a kind or an :class:`~.index.IndexConfig`) are filled
    chunk by chunk, and with ``IndexConfig.rerank`` = R their top R is re-ranked exactly from
    the descriptors; queries are searched in blocks. No Q x N matrix is formed.

    With ``dedupe``, spatial NMS keeps one hit per place: places are ``groups`` (one id per
    database image) when given, else database positions equal within 1 cm (``db_utm``). The NMS
    looks at the top ``window`` of each ranking (OpenIBL's Tokyo 24/7 protocol:
    :data:`~.metrics.TOKYO_NMS_WINDOW`, 120) or, when None, as deep as it takes to fill ``k``
    places; ``k`` is capped at the number of places. Lists left short are padded with id -1 and
    similarity -inf.
    """
    if _dim(q_desc) != _dim(db_desc):
        raise ValueError(f"query descriptors have dim {_dim(q_desc)}, database ones {_dim(db_desc)}")
    kind = index_kind.kind if isinstance(index_kind, IndexConfig) else index_kind
    if kind == "flat" and isinstance(db_desc, DescriptorStore):
        def find(kk: int) -> tuple[np.ndarray, np.ndarray]:
            return search_exact(db_desc, q_desc, kk, use_gpu=use_gpu)
    else:
        index = build_index(db_desc, index_kind, use_gpu=use_gpu)
        depth = index_kind.rerank if isinstance(index_kind, IndexConfig) else 0

        def find(kk: int) -> tuple[np.ndarray, np.ndarray]:
            if depth <= 0:
                return search(index, q_desc, kk)
            _, candidates = search(index, q_desc, max(kk, depth))
            return rerank_exact(db_desc, q_desc, candidates, kk)
    if not dedupe:
        return find(k)
    if groups is not None:
        labels = np.unique(np.asarray(groups).reshape(-1), return_inverse=True)[1].reshape(-1)
        if len(labels) != _count(db_desc):
            raise ValueError(f"{len(labels)} place groups for {_count(db_desc)} database descriptors")
    elif db_utm is not None:
        labels = place_labels(db_utm)
    else:
        raise ValueError("dedupe=True needs the database positions or place groups")
    views = int(np.bincount(labels).max())
    k = min(k, int(labels.max()) + 1)
    if window is not None and window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    sims, ids = find(k * views if window is None else window)
    cols = dedupe_columns(ids, labels, k)  # -1 where the window (or an approximate index) held fewer places
    safe = np.maximum(cols, 0)
    sims = np.where(cols >= 0, np.take_along_axis(sims, safe, axis=1), -np.inf).astype(np.float32)
    return sims, np.where(cols >= 0, np.take_along_axis(ids, safe, axis=1), -1)


def _role(store: str | os.PathLike | None, role: str) -> Path | None:
    return None if store is None else Path(store) / role


def _extract(model: nn.Module, images, transform: ImageTransform, store: Path | None, *,
             store_dtype: str, **options) -> Descriptors:
    """Descriptors of ``images``: in RAM, or streamed into (or resumed in) the store ``store``."""
    if store is None:
        return extract_descriptors(model, images, transform, **options)
    return extract_to_store(model, images, transform, store, dtype=store_dtype, **options)


def default_protocol(dataset: PlaceDataset) -> str:
    """The protocol a dataset is evaluated with by default: ``"tokyo247"`` for Tokyo 24/7 (format
    ``tokyo247``, not a TokyoTM split file), ``"plain"`` for everything else."""
    if dataset.format == "tokyo247" and not dataset.name.lower().startswith("tokyotm"):
        return "tokyo247"
    return "plain"


def evaluate(
    model: nn.Module | None,
    split: PlaceSplit,
    *,
    image_size: tuple[int, int] | None = None,
    k: int = 20,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    dedupe: bool = False,
    protocol: str = "plain",
    query_resize: str | None = None,
    nms_window: int | None = None,
    progress: bool = True,
    db_descriptors: Descriptors | None = None,
    query_descriptors: Descriptors | None = None,
    num_workers: int = 0,
    index_kind: str | IndexConfig = "flat",
    use_gpu: UseGpu = "auto",
    run: str = "",
    dataset_root: str | os.PathLike | None = None,
    store: str | os.PathLike | None = None,
    store_dtype: str = "float32",
    amp: bool = False,
    precision: str | None = None,
) -> QueryResults:
    """Retrieve the top-``k`` database images of every query of ``split`` and score them.

    Descriptors are extracted at ``image_size`` (H, W; None keeps the image size) unless given
    (``db_descriptors`` lets a caller reuse a database extraction; arrays or descriptor stores;
    ``model`` may be None when both are given). A retrieved image is correct
    when it lies within 25 m of the query; recall@1/5/10/20 (those N <= k) follows from that.

    ``dedupe`` applies spatial NMS: one hit per place, a place being the database's ``groups``
    where its reader set them (Tokyo 24/7: the image's folder), else one database position;
    ``k`` is then capped at the number of places. ``nms_window`` limits the NMS to the top that
    many of each ranking (lists with fewer places are padded with id -1, which counts as wrong);
    None looks as deep as it takes to fill ``k`` places. ``query_resize="shorter_edge"`` resizes
    each query, aspect kept, so that its shorter side is ``max(image_size)``, and extracts the
    queries one at a time; the database stays at ``image_size``.

    ``protocol="tokyo247"`` is Tokyo 24/7 as OpenIBL's ``test.py`` evaluates it: ``dedupe`` on,
    ``query_resize="shorter_edge"`` and ``nms_window`` = :data:`~.metrics.TOKYO_NMS_WINDOW` (120:
    OpenIBL's 12 x 10, whatever N is reported; explicit ``query_resize``/``nms_window`` override
    it); it needs ``image_size`` (OpenIBL: :data:`OPENIBL_IMAGE_SIZE`). ``"plain"`` (default)
    changes nothing.

    Extraction runs in float32, as OpenIBL evaluates, unless ``amp`` (bf16/fp16 autocast on CUDA;
    an error elsewhere). ``meta["precision"]`` records what the descriptors were computed in: the
    extraction's, or for descriptors passed in, ``precision`` as the caller states it (None: unknown).

    ``store`` (a folder) keeps the descriptors on disk instead of in RAM: the database in
    ``store/database``, the queries in ``store/queries`` (:func:`~.extract.extract_to_store`:
    written chunk by chunk in ``store_dtype``, resumed after an interruption, refused when made
    by another model, transform or image set), and the ranking streams them. ``index_kind``
    ("flat": exact; "ivfpq", "hnsw": approximate, see :mod:`.index`) or an
    :class:`~.index.IndexConfig` chooses the search.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    db, qs = split.database, split.queries
    groups = nms_groups(db) if (dedupe or protocol == "tokyo247") else None
    k = min(k, len(db) if groups is None else len(np.unique(groups)))
    if protocol == "tokyo247":
        dedupe = True
        query_resize = "shorter_edge" if query_resize is None else query_resize
        nms_window = TOKYO_NMS_WINDOW if nms_window is None else nms_window
    query_resize = query_resize or "exact"
    if query_resize not in RESIZE_MODES:
        raise ValueError(f"query_resize must be one of {RESIZE_MODES}, got {query_resize!r}")
    if query_resize != "exact" and image_size is None:
        raise ValueError(f"query_resize={query_resize!r} (protocol {protocol!r}) needs an image_size (H, W); "
                         f"OpenIBL evaluates at {OPENIBL_IMAGE_SIZE[0]}x{OPENIBL_IMAGE_SIZE[1]}")
    if nms_window is not None and not dedupe:
        raise ValueError("nms_window applies to spatial NMS; it needs dedupe=True")
    db_desc = _check_descriptors(db_descriptors, len(db), "database")
    q_desc = _check_descriptors(query_descriptors, len(qs), "query")
    if db_desc is None or q_desc is None:
        if model is None:
            raise ValueError("evaluate needs a model unless both database and query descriptors are given")
        normalization = getattr(model, "normalization", None)
        stats = ExtractStats()
        common = dict(device=device, num_workers=num_workers, progress=progress, store_dtype=store_dtype,
                      amp=bool(amp), stats=stats)
        if db_desc is None:
            db_desc = _extract(model, db, ImageTransform(image_size, normalization), _role(store, "database"),
                               batch_size=batch_size, desc=f"{split.name} database", **common)
        if q_desc is None:
            q_transform = ImageTransform(image_size, normalization, resize=query_resize)
            q_batch = batch_size if query_resize == "exact" else 1  # query sizes differ: one at a time
            q_desc = _extract(model, qs, q_transform, _role(store, "queries"), batch_size=q_batch,
                              desc=f"{split.name} queries", **common)
        # what this call extracted in (a complete store reopened runs nothing: then as asked)
        extracted = stats.precision or ("float32" if not amp else "autocast")
        precision = extracted if precision in (None, extracted) else f"{extracted} (extracted), {precision} (given)"

    sims, ids = rank(db_desc, q_desc, k, db_utm=db.utm, dedupe=dedupe, groups=groups, window=nms_window,
                     index_kind=index_kind, use_gpu=use_gpu)
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
        "protocol": protocol,
        "query_resize": query_resize,
        "nms_window": nms_window,
        "nms_groups": None if not dedupe else ("dataset" if db.groups is not None else "position"),
        "index_kind": index_kind.kind if isinstance(index_kind, IndexConfig) else index_kind,
        "descriptor_dim": _dim(db_desc),
        "descriptor_store": str(store) if store is not None else (
            str(db_desc.folder) if isinstance(db_desc, DescriptorStore) else None),
        "num_database": len(db),
        "database_root": str(db.root),
        "queries_root": str(qs.root),
        "queries_without_positive": int(no_positive),
        "radius_m": EVAL_POS_RADIUS_M,
        "precision": precision,
    }
    return QueryResults(
        queries=np.arange(len(qs)), ids=ids, similarities=sims, distances_m=distances, correct=correct,
        recall=recall, split=split.name, dataset_root=str(dataset_root), run=run, meta=meta,
    )
