"""faiss inner-product indexes: flat (exact), IVF-PQ or HNSW; CPU or GPU(s); built in RAM or chunk
by chunk from a descriptor store; atomic I/O.

Descriptors are L2-normalised, so the inner product is the cosine similarity, larger is closer.

Kinds (:data:`INDEX_KINDS`) and their recall-versus-speed settings (:class:`IndexConfig`):

* ``"flat"`` — ``IndexFlatIP``: exact, ``N x dim x 4`` bytes, query time linear in N. No
  settings. Over a :class:`~sfrs_core.retrieval.store.DescriptorStore` an evaluation does not
  even build it: :func:`search_exact` streams the store chunk by chunk and merges the top-k.
* ``"ivfpq"`` — ``IndexIVFPQ``: ``nlist`` cells (default ≈ 4·sqrt(N), at least 39 training
  vectors each), each vector stored as ``m`` bytes (default: the largest GPU-supported divisor
  of dim up to 64, so 64 bytes for 4096-D, 256x smaller than float32) with ``nbits`` = 8.
  ``nprobe`` cells are visited per query (default max(8, nlist/16)): more probes, higher recall,
  slower queries, linearly. ``m`` bounds recall from above (the codes are lossy); ``nlist``
  trades training time (k-means over ``train_size`` vectors, default max(40·nlist, 40·2^nbits);
  the PQ codebooks use at most 64·2^nbits of them) against query time. On CPU with N >= 1M pass
  a smaller ``nlist`` (e.g. 1024): the default trains 4000 centroids over 160k 4096-D vectors.
  64-byte codes of 4096-D descriptors rank coarsely (the exact top-1 is often 2nd-10th):
  ``rerank`` = R re-ranks each query's top R exactly from the full descriptors
  (:func:`rerank_exact`; from a store: R random row reads a query), which restores exact
  top-k agreement whenever the exact neighbour is among the R.
* ``"hnsw"`` — ``IndexHNSWFlat`` (or over 8-bit scalar-quantized storage, ``hnsw_storage="sq8"``,
  4x less memory): a graph with ``hnsw_m`` links per node (default 32; more: higher recall,
  more memory (``2·M`` ints per vector on level 0) and slower build), built with
  ``ef_construction`` candidates per insertion (default 120; more: better graph, slower build)
  and searched with ``ef_search`` candidates per query (default 128; the main query-time recall
  knob, query time about linear in it). The recall a given ``ef_search`` buys falls as the
  database grows, and rises with the graph's quality. On ``bench/retrieval.py``'s clustered
  4096-D descriptors (SQ8 storage, M=32), ``ef_search`` 128 found the exact top-1 for 98.7 % of
  queries at 250k with ``ef_construction`` 120 (99.9 % at 256), against 77-81 % with faiss's
  usual 40, which needed 1024 for 98.9 % (6x the query time); the better graph took 3x longer
  to build (27 min against 9 of CPU time). At 1M with 40: 46 % at 128, 87 % at 1024. A miss is
  a graph that never reached the right neighbourhood, not a ranking error (the exact top-1 was
  then not in the top 100 either), so ``rerank`` does not help HNSW. Raise ``ef_search`` with
  the database and measure on your data. Build is the costly part (a few hundred 4096-D vectors
  per second per CPU core). faiss has no GPU HNSW: it stays on CPU.

GPU: with ``use_gpu="auto"`` (default) a flat or IVF-PQ index is moved to the GPU when faiss has
GPU support and sees one (``faiss.index_cpu_to_gpu``), sharded over all of them when there are
several (``faiss.index_cpu_to_all_gpus`` -> ``IndexShards``); otherwise, and on CPU-only
machines, everything runs on CPU. ``use_gpu=True`` requires a GPU, ``False`` never uses one.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np

from ..io import atomic_path
from .store import ArraySource, DescriptorStore, as_source, prefetch

log = logging.getLogger(__name__)

INDEX_KINDS = ("flat", "ivfpq", "hnsw")
HNSW_STORAGES = ("flat", "sq8")
GPU_KINDS = ("flat", "ivfpq")
# Sub-quantizer counts that faiss's GPU IVF-PQ supports (so a default m works on both).
_GPU_PQ_M = (1, 2, 3, 4, 8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 96)
DEFAULT_QUERY_BYTES = 256 << 20  # queries per search step: about 256 MiB of float32
UseGpu = bool | Literal["auto"]
Descriptors = np.ndarray | DescriptorStore | ArraySource

_gpu_resources: list[Any] = []


@dataclass(frozen=True)
class IndexConfig:
    """What index to build and its recall-versus-speed settings (see the module docstring).

    ``None`` means the default computed from N and dim. IVF-PQ: ``nlist``, ``m``, ``nbits``,
    ``nprobe``, ``train_size``. HNSW: ``hnsw_m`` (M), ``ef_construction``, ``ef_search``,
    ``hnsw_storage`` ("flat" or "sq8"; sq8 trains on ``train_size`` vectors, default 20 000).
    ``rerank`` (IVF-PQ, HNSW): re-rank the top ``rerank`` of each query exactly from the full
    descriptors (applied by :func:`sfrs_core.retrieval.evaluate.rank`; 0, the default: off).
    """

    kind: str = "flat"
    nlist: int | None = None
    m: int | None = None
    nbits: int = 8
    nprobe: int | None = None
    train_size: int | None = None
    hnsw_m: int = 32
    ef_construction: int = 120
    ef_search: int = 128
    hnsw_storage: str = "flat"
    rerank: int = 0

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise ValueError(f"unknown index kind {self.kind!r}; choose one of {INDEX_KINDS}")
        if self.hnsw_storage not in HNSW_STORAGES:
            raise ValueError(f"hnsw_storage must be one of {HNSW_STORAGES}, got {self.hnsw_storage!r}")
        if self.hnsw_m < 2 or self.ef_construction < 1 or self.ef_search < 1:
            raise ValueError(f"hnsw needs hnsw_m >= 2, ef_construction >= 1 and ef_search >= 1 "
                             f"(got {self.hnsw_m}, {self.ef_construction}, {self.ef_search})")
        if self.rerank < 0:
            raise ValueError(f"rerank must be >= 0 (0: off), got {self.rerank}")
        if self.train_size is not None and self.train_size < 1:
            raise ValueError(f"train_size must be >= 1, got {self.train_size}")


# ---------------------------------------------------------------------- GPU detection


def faiss_gpu_available() -> bool:
    """True when this faiss build has GPU support and sees at least one GPU."""
    return faiss_gpu_count() > 0


def faiss_gpu_count() -> int:
    """GPUs faiss can use (0 for a CPU-only faiss build or a machine without GPU)."""
    if not hasattr(faiss, "StandardGpuResources"):
        return 0
    try:
        return int(faiss.get_num_gpus())
    except Exception:  # noqa: BLE001 - a broken CUDA runtime means no GPU
        return 0


def _want_gpu(use_gpu: UseGpu) -> bool:
    if use_gpu == "auto":
        return faiss_gpu_available()
    if use_gpu is True:
        if not faiss_gpu_available():
            raise RuntimeError(
                "use_gpu=True but faiss has no GPU support here (install faiss-gpu and check that "
                "a CUDA GPU is visible), or use use_gpu='auto'/False"
            )
        return True
    if use_gpu is False:
        return False
    raise ValueError(f"use_gpu must be True, False or 'auto', got {use_gpu!r}")


def is_gpu_index(index: faiss.Index) -> bool:
    """True for an index that lives on a GPU (or is sharded over several)."""
    name = type(index).__name__
    if "Gpu" in name:
        return True
    if name.startswith("IndexShards") or name.startswith("IndexReplicas"):
        return any(is_gpu_index(faiss.downcast_index(index.at(i))) for i in range(index.count()))
    return False


def _resources(device: int) -> Any:
    while len(_gpu_resources) <= device:
        _gpu_resources.append(faiss.StandardGpuResources())
    return _gpu_resources[device]


def to_gpu(index: faiss.Index, *, all_gpus: bool = True) -> faiss.Index:
    """Copy a CPU flat or IVF-PQ index to GPU 0, or shard it over every GPU when there are
    several and ``all_gpus`` (``IndexShards``: each GPU holds 1/n of the database). IVF-PQ uses
    float16 lookup tables."""
    ngpu = faiss_gpu_count()
    if ngpu > 1 and all_gpus:
        options = faiss.GpuMultipleClonerOptions()
        options.shard = True
        options.useFloat16 = isinstance(index, faiss.IndexIVFPQ)
        return faiss.index_cpu_to_all_gpus(index, co=options, ngpu=ngpu)
    options = faiss.GpuClonerOptions()
    options.useFloat16 = isinstance(index, faiss.IndexIVFPQ)
    return faiss.index_cpu_to_gpu(_resources(0), 0, index, options)


def to_cpu(index: faiss.Index) -> faiss.Index:
    """A CPU copy of a GPU index (the index itself when already on CPU)."""
    return faiss.index_gpu_to_cpu(index) if is_gpu_index(index) else index


def index_kind(index: faiss.Index) -> str:
    """``"flat"``, ``"ivfpq"`` or ``"hnsw"`` for an index made here (CPU or GPU)."""
    cpu = faiss.downcast_index(to_cpu(index)) if is_gpu_index(index) else faiss.downcast_index(index)
    if isinstance(cpu, faiss.IndexHNSW):
        return "hnsw"
    if isinstance(cpu, faiss.IndexIVFPQ):
        return "ivfpq"
    if isinstance(cpu, faiss.IndexFlat):
        return "flat"
    return type(cpu).__name__


def _place(index: faiss.Index, use_gpu: UseGpu) -> faiss.Index:
    kind = index_kind(index)
    if kind not in GPU_KINDS:
        if use_gpu is True:
            raise RuntimeError(f"faiss has no GPU implementation of a {kind} index; use use_gpu='auto' or False")
        if use_gpu == "auto" and faiss_gpu_available():
            log.info("the %s index stays on CPU (faiss has no GPU %s)", kind, kind)
        return index
    if not _want_gpu(use_gpu):
        return index
    try:
        return to_gpu(index)
    except Exception as exc:  # noqa: BLE001 - e.g. an m the GPU kernels do not support
        if use_gpu is True:
            raise RuntimeError(f"could not move the faiss index to the GPU: {exc}") from exc
        log.warning("faiss index stays on CPU: moving it to the GPU failed (%s)", exc)
        return index


# ---------------------------------------------------------------------- defaults


def as_float32(x: np.ndarray, name: str) -> np.ndarray:
    """A C-contiguous float32 2-D copy/view of ``x`` (what faiss accepts)."""
    arr = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (N x dim), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def default_nlist(n: int) -> int:
    """IVF cells: about 4·sqrt(N), with at least 39 training vectors per cell."""
    return max(1, min(int(round(4 * math.sqrt(n))), n // 39))


def default_m(dim: int) -> int:
    """PQ sub-quantizers: the largest GPU-supported divisor of ``dim`` up to 64, sub-vectors >= 2 dims."""
    ok = [m for m in _GPU_PQ_M if dim % m == 0 and m <= max(1, dim // 2)]
    return max(m for m in ok if m <= 64) if ok else 1


def default_nprobe(nlist: int) -> int:
    """Cells visited per query: nlist/16, at least 8 (all of them for small nlist)."""
    return min(nlist, max(8, nlist // 16))


def default_train_size(config: IndexConfig, n: int, nlist: int | None = None) -> int:
    """Training vectors: IVF-PQ 40 per cell and per PQ centroid (whichever needs more), HNSW-SQ8
    20 000; never more than N."""
    if config.train_size is not None:
        return min(n, int(config.train_size))
    if config.kind == "ivfpq":
        return min(n, max(40 * (nlist or default_nlist(n)), 40 * 2 ** config.nbits))
    return min(n, 20_000)


def _config(kind: str | IndexConfig, params: dict[str, Any]) -> IndexConfig:
    if isinstance(kind, IndexConfig):
        return dataclasses.replace(kind, **params) if params else kind
    try:
        return IndexConfig(kind=kind, **params)
    except TypeError as exc:
        raise TypeError(f"unknown index setting: {exc}") from exc


# ---------------------------------------------------------------------- building


def _ivfpq(cfg: IndexConfig, n: int, dim: int) -> faiss.Index:
    nlist = default_nlist(n) if cfg.nlist is None else int(cfg.nlist)
    m = default_m(dim) if cfg.m is None else int(cfg.m)
    nbits = cfg.nbits
    if nlist < 1 or m < 1 or not 1 <= nbits <= 16:
        raise ValueError(f"ivfpq needs nlist >= 1, m >= 1 and 1 <= nbits <= 16 (got {nlist}, {m}, {nbits})")
    if dim % m:
        raise ValueError(f"ivfpq: m={m} sub-quantizers must divide the descriptor dimension {dim}")
    need = max(nlist, 2 ** nbits)
    if n < need:
        raise ValueError(
            f"ivfpq: too few vectors to train ({n}); nlist={nlist} and {2 ** nbits} PQ centroids "
            f"(nbits={nbits}) need at least {need}. Use kind='flat' for a database this small"
        )
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFPQ(quantizer, dim, nlist, m, nbits, faiss.METRIC_INNER_PRODUCT)
    index.own_fields = True
    quantizer.this.disown()  # the IVF index owns and frees its quantizer
    index.pq.cp.max_points_per_centroid = 64  # PQ codebooks: at most 64·2^nbits training vectors
    index.nprobe = default_nprobe(nlist) if cfg.nprobe is None else max(1, min(int(cfg.nprobe), nlist))
    return index


def _hnsw(cfg: IndexConfig, dim: int) -> faiss.Index:
    if cfg.hnsw_storage == "sq8":
        index = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_8bit, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    else:
        index = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = int(cfg.ef_construction)
    index.hnsw.efSearch = int(cfg.ef_search)
    return index


def new_index(config: IndexConfig, n: int, dim: int) -> faiss.Index:
    """An empty (possibly untrained) CPU index of ``config.kind`` for ``n`` vectors of ``dim``."""
    if config.kind == "flat":
        return faiss.IndexFlatIP(dim)
    if config.kind == "ivfpq":
        return _ivfpq(config, n, dim)
    return _hnsw(config, dim)


def _reserve_flat_storage(index: faiss.Index, n: int) -> None:
    """Reserve the flat codes of ``n`` vectors up front, so adding chunk by chunk never
    reallocates (a growing buffer would briefly hold the old and the new copy: 2x the memory)."""
    target = faiss.downcast_index(index)
    if isinstance(target, faiss.IndexHNSW):
        target = faiss.downcast_index(target.storage)
    if isinstance(target, (faiss.IndexFlatCodes,)) and target.ntotal == 0:
        try:
            target.codes.resize(n * target.code_size)
            target.codes.resize(0)  # the capacity stays
        except Exception:  # noqa: BLE001 - an optimisation only
            pass


def build_index(descriptors: Descriptors, kind: str | IndexConfig = "flat", *, use_gpu: UseGpu = "auto",
                chunk_rows: int | None = None, seed: int = 0, **settings: Any) -> faiss.Index:
    """An inner-product index of ``descriptors``: an ``N x dim`` array, or a
    :class:`~sfrs_core.retrieval.store.DescriptorStore`, read and added chunk by chunk
    (``chunk_rows`` rows at a time; default about 128 MiB), never as one matrix.

    ``kind`` is ``"flat"``, ``"ivfpq"`` or ``"hnsw"`` (or an :class:`IndexConfig`); ``settings``
    override :class:`IndexConfig` fields (``nlist``, ``m``, ``nbits``, ``nprobe``,
    ``train_size``, ``hnsw_m``, ``ef_construction``, ``ef_search``, ``hnsw_storage``); the module
    docstring says what each trades. IVF-PQ and HNSW-SQ8 train on ``train_size`` rows drawn with
    ``seed``. ``use_gpu``: ``"auto"`` moves flat and IVF-PQ indexes to the GPU(s) when faiss can,
    ``True`` requires that, ``False`` keeps the index on CPU.
    """
    cfg = _config(kind, settings)
    src = as_source(descriptors)
    n, dim = src.count, src.dim
    if n == 0:
        raise ValueError("cannot build an index of zero descriptors")
    index = new_index(cfg, n, dim)
    if not index.is_trained:
        nlist = index.nlist if cfg.kind == "ivfpq" else None
        size = default_train_size(cfg, n, nlist)
        if cfg.kind == "ivfpq" and size < max(nlist, 2 ** cfg.nbits):
            raise ValueError(f"ivfpq: train_size={size} is below the {max(nlist, 2 ** cfg.nbits)} vectors "
                             f"that nlist={nlist} and nbits={cfg.nbits} need")
        index.train(as_float32(src.sample(size, seed), "descriptors"))
    index = _place(index, use_gpu)
    if not is_gpu_index(index):
        _reserve_flat_storage(index, n)
    for _, block in prefetch(src.chunks(chunk_rows)):
        index.add(as_float32(block, "descriptors"))
    return index


def set_search_params(index: faiss.Index, *, nprobe: int | None = None, ef_search: int | None = None) -> faiss.Index:
    """Change the query-time recall/speed knobs of a built (or loaded) index, CPU or GPU:
    ``nprobe`` (IVF-PQ) or ``ef_search`` (HNSW). Returns ``index``."""
    space = faiss.GpuParameterSpace() if is_gpu_index(index) else faiss.ParameterSpace()
    if nprobe is not None:
        space.set_index_parameter(index, "nprobe", int(nprobe))
    if ef_search is not None:
        space.set_index_parameter(index, "efSearch", int(ef_search))
    return index


# ---------------------------------------------------------------------- searching


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
        return faiss.knn_gpu(_resources(0), queries, block, k, metric=faiss.METRIC_INNER_PRODUCT)
    return faiss.knn(queries, block, k, metric=faiss.METRIC_INNER_PRODUCT)


def search_exact(database: Descriptors, queries: Descriptors, k: int, *, use_gpu: UseGpu = "auto",
                 chunk_rows: int | None = None, query_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` by inner product without an index and without a Q×N matrix.

    The database (array or store) is read ``chunk_rows`` rows at a time (default about 128 MiB);
    each chunk's top-k of every query (``faiss.knn``, blocked BLAS; ``faiss.knn_gpu`` on a GPU)
    is merged into one running top-k per query (``faiss.ResultHeap``); the next chunk is read
    while the current one is searched (:func:`~.store.prefetch`). Queries are taken
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
    gpu = _want_gpu(use_gpu) and hasattr(faiss, "knn_gpu")
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


# ---------------------------------------------------------------------- files


def save_index(index: faiss.Index, path: str | os.PathLike) -> Path:
    """Write ``index`` (a GPU index as its CPU copy) atomically: temp file + ``os.replace``.
    IVF-PQ's ``nprobe`` and HNSW's ``efSearch`` are saved with it."""
    with atomic_path(path) as tmp:
        faiss.write_index(to_cpu(index), tmp)
    return Path(path)


def load_index(path: str | os.PathLike, *, use_gpu: UseGpu = False) -> faiss.Index:
    """Read an index written by :func:`save_index`; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"faiss index file not found: {path}")
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path}: not a readable faiss index (corrupt or truncated?): {first}") from exc
    return _place(index, use_gpu)
