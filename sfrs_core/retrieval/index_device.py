"""Where a faiss index lives: whether faiss sees GPUs, and moving an index to them and back.

(The torch device of the models is :mod:`sfrs_core.retrieval.device`'s job; this module is
faiss's, so that picking a torch device never imports faiss.)

GPU: with ``use_gpu="auto"`` (default) a flat or IVF-PQ index is moved to the GPU when faiss has
GPU support and sees one (``faiss.index_cpu_to_gpu``), sharded over all of them when there are
several (``faiss.index_cpu_to_all_gpus`` -> ``IndexShards``); otherwise, and on CPU-only
machines, everything runs on CPU. ``use_gpu=True`` requires a GPU, ``False`` never uses one.
"""
from __future__ import annotations

import logging
from typing import Any, Literal

import faiss

# The name these messages had before the index module was split, so logging set-ups keep matching.
log = logging.getLogger("sfrs_core.retrieval.index")

GPU_KINDS = ("flat", "ivfpq")
UseGpu = bool | Literal["auto"]

_gpu_resources: list[Any] = []


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


def want_gpu(use_gpu: UseGpu) -> bool:
    """Whether ``use_gpu`` (``True``, ``False`` or ``"auto"``) means the GPU here; ``True``
    without a GPU raises ``RuntimeError``."""
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


def gpu_resources(device: int) -> Any:
    """The ``StandardGpuResources`` of GPU ``device``, made once per process and reused."""
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
    return faiss.index_cpu_to_gpu(gpu_resources(0), 0, index, options)


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


def place_index(index: faiss.Index, use_gpu: UseGpu) -> faiss.Index:
    """``index`` on the GPU(s) when ``use_gpu`` asks for it and faiss can (flat and IVF-PQ only),
    else as it is; with ``"auto"`` a failed move leaves it on CPU with a warning."""
    kind = index_kind(index)
    if kind not in GPU_KINDS:
        if use_gpu is True:
            raise RuntimeError(f"faiss has no GPU implementation of a {kind} index; use use_gpu='auto' or False")
        if use_gpu == "auto" and faiss_gpu_available():
            log.info("the %s index stays on CPU (faiss has no GPU %s)", kind, kind)
        return index
    if not want_gpu(use_gpu):
        return index
    try:
        return to_gpu(index)
    except Exception as exc:  # noqa: BLE001 - e.g. an m the GPU kernels do not support
        if use_gpu is True:
            raise RuntimeError(f"could not move the faiss index to the GPU: {exc}") from exc
        log.warning("faiss index stays on CPU: moving it to the GPU failed (%s)", exc)
        return index
