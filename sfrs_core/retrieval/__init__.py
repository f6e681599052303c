"""Retrieval: descriptor extraction (in RAM or into on-disk descriptor stores), faiss
inner-product indexes (flat / IVF-PQ / HNSW, GPU when present), recall@N, per-query results."""
from sfrs_core.retrieval.device import cuda_available, pick_device
from sfrs_core.retrieval.evaluate import evaluate, rank
from sfrs_core.retrieval.extract import ExtractStats, descriptor_identity, extract_descriptors, extract_to_store
from sfrs_core.retrieval.index import (
    INDEX_KINDS,
    IndexConfig,
    build_index,
    faiss_gpu_available,
    load_index,
    rerank_exact,
    save_index,
    search,
    search_exact,
    set_search_params,
)
from sfrs_core.retrieval.metrics import RECALL_NS, dedupe_places, recall_at_n, recall_from_hits
from sfrs_core.retrieval.results import QueryResults
from sfrs_core.retrieval.store import DescriptorStore, StoreError, StoreMismatchError

__all__ = [
    "INDEX_KINDS", "RECALL_NS", "DescriptorStore", "ExtractStats", "IndexConfig", "QueryResults", "StoreError",
    "StoreMismatchError", "build_index", "cuda_available", "dedupe_places", "descriptor_identity", "evaluate",
    "extract_descriptors", "extract_to_store", "faiss_gpu_available", "load_index", "pick_device", "rank",
    "recall_at_n", "rerank_exact", "recall_from_hits", "save_index", "search", "search_exact", "set_search_params",
]
