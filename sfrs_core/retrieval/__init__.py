"""Retrieval: descriptor extraction, faiss inner-product indexes, recall@N, per-query results."""
from sfrs_core.retrieval.device import cuda_available, pick_device
from sfrs_core.retrieval.evaluate import evaluate, rank
from sfrs_core.retrieval.extract import extract_descriptors
from sfrs_core.retrieval.index import (
    INDEX_KINDS,
    build_index,
    faiss_gpu_available,
    load_index,
    save_index,
    search,
)
from sfrs_core.retrieval.metrics import RECALL_NS, dedupe_places, recall_at_n, recall_from_hits
from sfrs_core.retrieval.results import QueryResults

__all__ = [
    "INDEX_KINDS", "RECALL_NS", "QueryResults", "build_index", "cuda_available", "dedupe_places",
    "evaluate", "extract_descriptors", "faiss_gpu_available", "load_index", "pick_device", "rank",
    "recall_at_n", "recall_from_hits", "save_index", "search",
]
