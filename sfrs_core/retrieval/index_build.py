"""Building a faiss inner-product index (flat, IVF-PQ or HNSW) from an array, or chunk by chunk
from a descriptor store, trained on a sample and placed on the GPU(s) when asked.

What each kind and setting trades is :mod:`sfrs_core.retrieval.index_config`'s docstring.
"""
from __future__ import annotations

from typing import Any

import faiss

from .index_config import IndexConfig, default_m, default_nlist, default_nprobe, default_train_size, resolve_config
from .index_device import UseGpu, is_gpu_index, place_index
from .sources import as_float32, prefetch
from .store import Descriptors, as_source


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
    ``train_size``, ``hnsw_m``, ``ef_construction``, ``ef_search``, ``hnsw_storage``); the
    :mod:`~sfrs_core.retrieval.index_config` docstring says what each trades. IVF-PQ and
    HNSW-SQ8 train on ``train_size`` rows drawn with ``seed``. ``use_gpu``: ``"auto"`` moves flat
    and IVF-PQ indexes to the GPU(s) when faiss can, ``True`` requires that, ``False`` keeps the
    index on CPU.
    """
    cfg = resolve_config(kind, settings)
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
    index = place_index(index, use_gpu)
    if not is_gpu_index(index):
        _reserve_flat_storage(index, n)
    for _, block in prefetch(src.chunks(chunk_rows)):
        index.add(as_float32(block, "descriptors"))
    return index
