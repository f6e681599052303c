"""Searching: the top-k of each query from a built index, exactly from a database streamed chunk
by chunk (no index, no Q×N matrix), or re-ranked exactly from the full descriptors; and the
query-time recall/speed knobs of a built index.

Descriptors are L2-normalised, so the inner product is the cosine similarity, larger is closer.
"""
from __future__ import annotations

import faiss
import numpy as np

from .index_device import UseGpu, gpu_resources, is_gpu_index, want_gpu
from .sources import as_float32, prefetch
from .store import Descriptors, as_source

DEFAULT_QUERY_BYTES = 256 << 20  # queries per search step: about 256 MiB of float32


def set_search_params(index: faiss.Index, *, nprobe: int | None = None, ef_search: int | None = None) -> faiss.Index:
    """Change the query-time recall/speed knobs of a built (or loaded) index, CPU or GPU:
    ``nprobe`` (IVF-PQ) or ``ef_search`` (HNSW). Returns ``index``."""
    space = faiss.GpuParameterSpace() if is_gpu_index(index) else faiss.ParameterSpace()
    if nprobe is not None:
        space.set_index_parameter(index, "nprobe", int(nprobe))
    if ef_search is not None:
        space.set_index_parameter(index, "efSearch", int(ef_search))
    return index


def _query_rows(dim: int) -> int:
    return max(1, DEFAULT_QUERY_BYTES // (4 * dim))


def search(index: faiss.Index, queries: Descriptors, k: int, *,
           query_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` database entries per query: ``(sims float32 Q×k, ids int64 Q×k)``, best first.

    Queries (an array or a store) are searched ``query_rows`` at a time (default about 256 MiB).
    ``k`` is capped at the index size. With IVF-PQ or HNSW a list can come back short; its
    tail is filled by faiss with id -1 and similarity -inf.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    src = as_source(as_float32(queries, "queries") if isinstance(queries, np.ndarray) else queries)
    if src.dim != index.d:
        raise ValueError(f"queries have dimension {src.dim} but the index holds dimension {index.d}")
    if index.ntotal == 0:
        raise ValueError("the index is empty")
    k = min(int(k), int(index.ntotal))
    blocks = src.chunks(query_rows or _query_rows(index.d))
    sims, ids = [], []
    for _, block in blocks:
        s, i = index.search(as_float32(block, "queries"), k)
        sims.append(s.astype(np.float32, copy=False))
        ids.append(i.astype(np.int64, copy=False))
    if not sims:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    return np.concatenate(sims), np.concatenate(ids)


def rerank_exact(database: Descriptors, queries: Descriptors, ids: np.ndarray,
                 k: int) -> tuple[np.ndarray, np.ndarray]:
    """Re-rank each query's candidate ``ids`` (Q x R, -1 for none) by their exact inner product
    with the query, read from ``database`` (an array, or a store: R positioned row reads per
    query, so the full matrix is never loaded); keep the best ``k``. Returns ``(sims, ids)``,
    Q x k, best first, padded with -inf / -1 when a query has fewer than ``k`` candidates."""
    db = as_source(database)
    q = as_float32(queries if isinstance(queries, np.ndarray) else as_source(queries).read(), "queries")
    ids = np.asarray(ids, dtype=np.int64)
    if ids.ndim != 2 or len(ids) != len(q):
        raise ValueError(f"candidate ids have shape {ids.shape}; expected ({len(q)}, R)")
    sims_out = np.full((len(q), k), -np.inf, dtype=np.float32)
    ids_out = np.full((len(q), k), -1, dtype=np.int64)
    for i, (row, vec) in enumerate(zip(ids, q)):
        cand = np.unique(row[row >= 0])
        if cand.size == 0:
            continue
        sims = db.rows(cand) @ vec
        order = np.lexsort((cand, -sims))[:k]  # best first; ties by id
        sims_out[i, :len(order)] = sims[order]
        ids_out[i, :len(order)] = cand[order]
    return sims_out, ids_out


def _knn(queries: np.ndarray, block: np.ndarray, k: int, gpu: bool) -> tuple[np.ndarray, np.ndarray]:
    if gpu:
        return faiss.knn_gpu(gpu_resources(0), queries, block, k, metric=faiss.METRIC_INNER_PRODUCT)
    return faiss.knn(queries, block, k, metric=faiss.METRIC_INNER_PRODUCT)


def search_exact(database: Descriptors, queries: Descriptors, k: int, *, use_gpu: UseGpu = "auto",
                 chunk_rows: int | None = None, query_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` by inner product without an index and without a Q×N matrix.

    The database (array or store) is read ``chunk_rows`` rows at a time (default about 128 MiB);
    each chunk's top-k of every query (``faiss.knn``, blocked BLAS; ``faiss.knn_gpu`` on a GPU)
    is merged into one running top-k per query (``faiss.ResultHeap``); the next chunk is read
    while the current one is searched (:func:`~.sources.prefetch`). Queries are taken
    ``query_rows`` at a time (default about 256 MiB): one pass over the database per query block.
    Returns ``(sims float32 Q×k, ids int64 Q×k)``, best first; ``k`` capped at N.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    db, qs = as_source(database), as_source(queries)
    if qs.dim != db.dim:
        raise ValueError(f"queries have dimension {qs.dim} but the database holds dimension {db.dim}")
    if db.count == 0:
        raise ValueError("the database is empty")
    k = min(int(k), db.count)
    gpu = want_gpu(use_gpu) and hasattr(faiss, "knn_gpu")
    sims, ids = [], []
    for _, q in qs.chunks(query_rows or _query_rows(qs.dim)):
        q = as_float32(q, "queries")
        heap = faiss.ResultHeap(len(q), k, keep_max=True)
        for start, block in prefetch(db.chunks(chunk_rows)):
            block = as_float32(block, "database descriptors")
            d, i = _knn(q, block, min(k, len(block)), gpu)
            heap.add_result(d, np.where(i >= 0, i + start, -1))
        heap.finalize()
        sims.append(heap.D.astype(np.float32, copy=False))
        ids.append(heap.I.astype(np.int64, copy=False))
    if not sims:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    return np.concatenate(sims), np.concatenate(ids)
