"""Which faiss index to build and its recall-versus-speed settings: :class:`IndexConfig` and the
defaults computed from N and dim.

Kinds (:data:`INDEX_KINDS`) and their recall-versus-speed settings (:class:`IndexConfig`):

* ``"flat"`` — ``IndexFlatIP``: exact, ``N x dim x 4`` bytes, query time linear in N. No
  settings. Over a :class:`~sfrs_core.retrieval.store.DescriptorStore` an evaluation does not
  even build it: :func:`~sfrs_core.retrieval.index.search_exact` streams the store chunk by
  chunk and merges the top-k.
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
  (:func:`~sfrs_core.retrieval.index.rerank_exact`; from a store: R random row reads a query),
  which restores exact top-k agreement whenever the exact neighbour is among the R.
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
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

INDEX_KINDS = ("flat", "ivfpq", "hnsw")
HNSW_STORAGES = ("flat", "sq8")
# Sub-quantizer counts that faiss's GPU IVF-PQ supports (so a default m works on both).
_GPU_PQ_M = (1, 2, 3, 4, 8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 96)


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


def resolve_config(kind: str | IndexConfig, params: dict[str, Any]) -> IndexConfig:
    """``kind`` (a kind name or an :class:`IndexConfig`) with the settings ``params`` applied."""
    if isinstance(kind, IndexConfig):
        return dataclasses.replace(kind, **params) if params else kind
    try:
        return IndexConfig(kind=kind, **params)
    except TypeError as exc:
        raise TypeError(f"unknown index setting: {exc}") from exc
