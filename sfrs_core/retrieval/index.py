"""faiss inner-product indexes: flat (exact) or IVF-PQ (large databases), CPU or GPU; atomic I/O.

Descriptors are L2-normalised, so the inner product is the cosine similarity, larger is closer.
A GPU index is used when faiss has GPU support and sees a GPU (``use_gpu="auto"``).
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Literal

import faiss

from ..io import atomic_path
import numpy as np

log = logging.getLogger(__name__)

INDEX_KINDS = ("flat", "ivfpq")
# Sub-quantizer counts that faiss's GPU IVF-PQ supports (so a default m works on both).
_GPU_PQ_M = (1, 2, 3, 4, 8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 96)
UseGpu = bool | Literal["auto"]

_gpu_resources: Any = None


def faiss_gpu_available() -> bool:
    """True when this faiss build has GPU support and sees at least one GPU."""
    if not hasattr(faiss, "StandardGpuResources"):
        return False
    try:
        return faiss.get_num_gpus() > 0
    except Exception:  # noqa: BLE001 - a broken CUDA runtime means no GPU
        return False


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
    """True for an index that lives on a GPU."""
    return "Gpu" in type(index).__name__


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


def _ivfpq(x: np.ndarray, nlist: int | None, m: int | None, nbits: int, nprobe: int | None) -> faiss.Index:
    n, dim = x.shape
    nlist = default_nlist(n) if nlist is None else int(nlist)
    m = default_m(dim) if m is None else int(m)
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
    index.train(x)
    index.nprobe = default_nprobe(nlist) if nprobe is None else max(1, min(int(nprobe), nlist))
    return index


def to_gpu(index: faiss.Index) -> faiss.Index:
    """Copy a CPU index to GPU 0 (IVF-PQ with float16 lookup tables)."""
    global _gpu_resources
    if _gpu_resources is None:
        _gpu_resources = faiss.StandardGpuResources()
    options = faiss.GpuClonerOptions()
    options.useFloat16 = isinstance(index, faiss.IndexIVFPQ)
    return faiss.index_cpu_to_gpu(_gpu_resources, 0, index, options)


def to_cpu(index: faiss.Index) -> faiss.Index:
    """A CPU copy of a GPU index (the index itself when already on CPU)."""
    return faiss.index_gpu_to_cpu(index) if is_gpu_index(index) else index


def _place(index: faiss.Index, use_gpu: UseGpu) -> faiss.Index:
    if not _want_gpu(use_gpu):
        return index
    try:
        return to_gpu(index)
    except Exception as exc:  # noqa: BLE001 - e.g. an m the GPU kernels do not support
        if use_gpu is True:
            raise RuntimeError(f"could not move the faiss index to the GPU: {exc}") from exc
        log.warning("faiss index stays on CPU: moving it to the GPU failed (%s)", exc)
        return index


def build_index(
    descriptors: np.ndarray,
    kind: str = "flat",
    *,
    use_gpu: UseGpu = "auto",
    nlist: int | None = None,
    m: int | None = None,
    nbits: int = 8,
    nprobe: int | None = None,
) -> faiss.Index:
    """An inner-product index holding ``descriptors`` (N x dim).

    ``kind="flat"``: exact ``IndexFlatIP``. ``kind="ivfpq"``: ``IndexIVFPQ`` (inner product),
    trained on the descriptors; defaults ``nlist`` ≈ 4·sqrt(N), ``m`` = largest GPU-friendly
    divisor of dim up to 64, ``nbits`` 8, ``nprobe`` max(8, nlist/16). ``use_gpu``: ``"auto"``
    moves it to the GPU when faiss can, ``True`` requires that, ``False`` keeps it on CPU.
    """
    x = as_float32(descriptors, "descriptors")
    if x.shape[0] == 0:
        raise ValueError("cannot build an index of zero descriptors")
    if kind == "flat":
        index = faiss.IndexFlatIP(x.shape[1])
    elif kind == "ivfpq":
        index = _ivfpq(x, nlist, m, nbits, nprobe)
    else:
        raise ValueError(f"unknown index kind {kind!r}; choose one of {INDEX_KINDS}")
    index.add(x)
    return _place(index, use_gpu)


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` database entries per query: ``(sims float32 Q×k, ids int64 Q×k)``, best first.

    ``k`` is capped at the index size. With IVF-PQ, a list can come back short; its tail is
    filled by faiss with id -1 and similarity -inf.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    q = as_float32(queries, "queries")
    if q.shape[1] != index.d:
        raise ValueError(f"queries have dimension {q.shape[1]} but the index holds dimension {index.d}")
    if index.ntotal == 0:
        raise ValueError("the index is empty")
    k = min(int(k), int(index.ntotal))
    sims, ids = index.search(q, k)
    return sims.astype(np.float32, copy=False), ids.astype(np.int64, copy=False)


def save_index(index: faiss.Index, path: str | os.PathLike) -> Path:
    """Write ``index`` (a GPU index as its CPU copy) atomically: temp file + ``os.replace``."""
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

