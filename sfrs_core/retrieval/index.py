"""faiss inner-product indexes: flat (exact), IVF-PQ or HNSW; CPU or GPU(s); built in RAM or chunk
by chunk from a descriptor store; atomic I/O.

Descriptors are L2-normalised, so the inner product is the cosine similarity, larger is closer.

This module is the one place to import the index API from, and saves and loads indexes
(:func:`save_index`, :func:`load_index`). The rest lives in:

* :mod:`~sfrs_core.retrieval.index_config` — the kinds (:data:`INDEX_KINDS`), :class:`IndexConfig`
  and the defaults computed from N and dim; its docstring says what each setting trades;
* :mod:`~sfrs_core.retrieval.index_device` — whether faiss sees GPUs, moving an index there
  (``use_gpu``) and back;
* :mod:`~sfrs_core.retrieval.index_build` — :func:`build_index` from an array or a store;
* :mod:`~sfrs_core.retrieval.index_search` — :func:`search`, :func:`search_exact`,
  :func:`rerank_exact`, :func:`set_search_params`.
"""
from __future__ import annotations

import os
from pathlib import Path

import faiss

from ..io import atomic_path
from .index_build import build_index, new_index
from .index_config import (
    HNSW_STORAGES,
    INDEX_KINDS,
    IndexConfig,
    default_m,
    default_nlist,
    default_nprobe,
    default_train_size,
)
from .index_device import (
    GPU_KINDS,
    UseGpu,
    faiss_gpu_available,
    faiss_gpu_count,
    index_kind,
    is_gpu_index,
    place_index,
    to_cpu,
    to_gpu,
)
from .index_search import DEFAULT_QUERY_BYTES, rerank_exact, search, search_exact, set_search_params
from .sources import ArraySource, as_float32, prefetch
from .store import DescriptorStore, Descriptors, as_source

__all__ = [
    "DEFAULT_QUERY_BYTES", "GPU_KINDS", "HNSW_STORAGES", "INDEX_KINDS", "ArraySource", "DescriptorStore",
    "Descriptors", "IndexConfig", "UseGpu", "as_float32", "as_source", "build_index", "default_m", "default_nlist",
    "default_nprobe", "default_train_size", "faiss_gpu_available", "faiss_gpu_count", "index_kind",
    "is_gpu_index", "load_index", "new_index", "prefetch", "rerank_exact", "save_index", "search",
    "search_exact", "set_search_params", "to_cpu", "to_gpu",
]


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
    return place_index(index, use_gpu)
