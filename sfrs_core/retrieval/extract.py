"""Batched descriptor extraction (global or 9 region descriptors per image): into RAM
(:func:`extract_descriptors`) or streamed, resumably, into an on-disk descriptor store
(:func:`extract_to_store`)."""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from sfrs_core.data.dataset import ImageSet
from sfrs_core.data.torch_data import ImageSetDataset
from sfrs_core.data.transforms import ImageTransform

from .device import pick_device
from .store import DEFAULT_CHUNK_ROWS, HEADER_NAME, DescriptorStore, writer_lock


def _model_device(model: nn.Module) -> torch.device | None:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return None


def resolve_device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    """``device`` if given; otherwise the model's own CUDA device, else :func:`pick_device`."""
    if device is None:
        own = _model_device(model)
        if own is not None and own.type == "cuda":
            return own
    return pick_device(device)


def amp_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 where the GPU supports it, else float16."""
    with torch.cuda.device(device):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _is_channels_last(model: nn.Module) -> bool:
    for p in model.parameters():
        if p.dim() == 4 and p.shape[2:] != (1, 1):
            return p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
    return False


@contextlib.contextmanager
def inference_state(model: nn.Module, device: torch.device, channels_last: bool) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode on ``device`` (channels_last if asked); restore all afterwards.

    Every submodule's own train/eval flag, the model's device and its memory format are put back,
    so that a training loop can call extraction in the middle of an epoch.
    """
    modes = [(m, m.training) for m in model.modules()]
    old_device = _model_device(model)
    channels_last = channels_last and not _is_channels_last(model)
    model.eval()
    try:
        if old_device is not None and old_device != device:
            model.to(device)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        yield model
    finally:
        if channels_last:
            model.to(memory_format=torch.contiguous_format)
        if old_device is not None and old_device != device:
            model.to(old_device)
        for module, mode in modes:
            module.training = mode


@dataclass
class ExtractStats:
    """Where extraction time went (filled in when passed as ``stats=``; accumulates over calls).

    ``loader_wait_s``: the model waited for the next decoded batch (decode + resize + normalise
    not hidden behind the forward pass; near 0 when the loader keeps up); ``compute_s``: host
    ``write_s``: descriptor store writes (flush
    included); ``wall_s``: everything, from the first batch request to the last write;
    ``precision``: what the forward passes ran in ("float32", or the autocast dtype: "bfloat16",
    "float16"; None before any extraction).
    """

    images: int = 0
    batches: int = 0
    loader_wait_s: float = 0.0
    compute_s: float = 0.0
    write_s: float = 0.0
    wall_s: float = 0.0
    precision: str | None = None

    @property
    def images_per_s(self) -> float:
        return self.images / self.wall_s if self.wall_s > 0 else float("nan")


def _batches(
    model: nn.Module, images: ImageSet, transform: ImageTransform, indices: Sequence[int] | None, *,
    batch_size: int, device: str | torch.device | None, num_workers: int, regions: bool, amp: bool | None,
    stats: ExtractStats | None, use_pca: bool | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(image indices, float32 descriptors)`` one batch at a time, in the order of ``indices``.

    Runs under ``torch.inference_mode`` with the model in eval mode; on CUDA with autocast
    (bf16/fp16; ``amp=False`` turns it off) and channels_last; restores the model afterwards.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = resolve_device(model, device)
    on_cuda = dev.type == "cuda"
    use_amp = on_cuda if amp is None else bool(amp)
    if use_amp and not on_cuda:
        raise ValueError("amp=True needs a CUDA device")
    dataset = ImageSetDataset(images, transform, indices)
    if len(dataset) == 0:
        return
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=on_cuda)
    dtype = amp_dtype(dev) if use_amp else None
    autocast = torch.autocast("cuda", dtype=dtype) if use_amp else contextlib.nullcontext()
    stats = stats if stats is not None else ExtractStats()
    stats.precision = "float32" if dtype is None else str(dtype).removeprefix("torch.")
    with inference_state(model, dev, channels_last=on_cuda) as net, torch.inference_mode(), autocast:
        batches = iter(loader)
        while True:
            t0 = time.perf_counter()
            try:
                batch, idx = next(batches)
            except StopIteration:
                return
            t1 = time.perf_counter()
            batch = batch.to(dev, non_blocking=True)
            if on_cuda:
                batch = batch.contiguous(memory_format=torch.channels_last)
            pca = {} if use_pca is None else {"use_pca": use_pca}  # None: the model's own default
            result = net.regions(batch, **pca) if regions else net(batch, **pca)
            result = result.float().cpu().numpy()
            t2 = time.perf_counter()
            stats.loader_wait_s += t1 - t0
            stats.compute_s += t2 - t1
            stats.images += len(result)
            stats.batches += 1
            yield np.asarray(idx, dtype=np.int64), result


def extract_descriptors(
    model: nn.Module,
    images: ImageSet,
    transform: ImageTransform,
    *,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    progress: bool = True,
    regions: bool = False,
    indices: Sequence[int] | None = None,
    amp: bool | None = None,
    desc: str | None = None,
    stats: ExtractStats | None = None,
    use_pca: bool | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Descriptors of ``images`` (all, or ``indices`` in that order) as float32 numpy, in RAM.

    Returns ``N x dim`` (``model(x)``) or, with ``regions=True``, ``N x 9 x dim``
    (``model.regions(x)``). Runs under ``torch.inference_mode`` with the model in eval mode; on
    CUDA with autocast (bf16/fp16; ``amp=False`` turns it off) and channels_last. The model's
    train/eval modes, device and memory format are restored afterwards. ``use_pca=False`` gives
    the descriptors before PCA-whitening (as mining sees them); ``on_batch(n)`` is told after each
    batch of ``n`` images (e.g. to move an app's progress bar). For a database too large for RAM
    use :func:`extract_to_store`.
    """
    n = len(images) if indices is None else len(indices)
    what = "region descriptors" if regions else "descriptors"
    if n == 0:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        dim = getattr(model, "descriptor_dim", None)
        if dim is None:
            raise ValueError(f"no images to extract {what} from")
        return np.zeros((0, 9, dim) if regions else (0, dim), dtype=np.float32)
    out: np.ndarray | None = None
    offset = 0
    stats = stats if stats is not None else ExtractStats()
    start = time.perf_counter()
    bar = tqdm(total=n, desc=desc or f"extract {what}", unit="img", disable=not progress, leave=False)
    gen = _batches(model, images, transform, indices, batch_size=batch_size, device=device,
                   num_workers=num_workers, regions=regions, amp=amp, stats=stats, use_pca=use_pca)
    try:
        with contextlib.closing(gen):
            for _, result in gen:
                if out is None:
                    out = np.empty((n, *result.shape[1:]), dtype=np.float32)
                out[offset:offset + len(result)] = result
                offset += len(result)
                bar.update(len(result))
                if on_batch is not None:
                    on_batch(len(result))
    finally:
        bar.close()
        stats.wall_s += time.perf_counter() - start
    assert out is not None and offset == n
    return out


# ---------------------------------------------------------------------- descriptor stores


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 (hex) of the model's class and state dict: names, shapes, dtypes and values."""
    digest = hashlib.sha256(type(model).__qualname__.encode())
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        if t.dtype == torch.bfloat16:
            t = t.float()
        digest.update(np.ascontiguousarray(t.numpy()).reshape(-1).view(np.uint8).data)
    return digest.hexdigest()


def _normalization_identity(normalize: Any) -> Any:
    if normalize is None:
        return None
    if dataclasses.is_dataclass(normalize):
        return dataclasses.asdict(normalize)
    return type(normalize).__qualname__


def descriptor_identity(model: nn.Module, images: ImageSet, transform: ImageTransform) -> dict[str, Any]:
    """What a store of ``images`` described by ``model`` through ``transform`` holds: the model's
    weights fingerprint, the image set (root, count, digest of the names) and the transform. A
    store is only reopened for the same identity."""
    names = hashlib.sha256("\n".join(images.paths).encode()).hexdigest()
    return {
        "model": model_fingerprint(model),
        "images_root": str(images.root),
        "images_count": len(images),
        "images_names_sha256": names,
        "image_size": list(transform.size) if transform.size is not None else None,
        "resize": transform.resize,
        "normalization": _normalization_identity(transform.normalize),
    }


def extract_to_store(
    model: nn.Module,
    images: ImageSet,
    transform: ImageTransform,
    store: str | os.PathLike,
    *,
    dtype: str = "float32",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    progress: bool = True,
    amp: bool | None = None,
    desc: str | None = None,
    identity: dict[str, Any] | None = None,
    stats: ExtractStats | None = None,
) -> DescriptorStore:
    """Global descriptors of every image of ``images``, streamed into the descriptor store in the
    folder ``store`` (see :mod:`sfrs_core.retrieval.store`) ``chunk_rows`` rows at a time; returns
    the complete store. Only one chunk is held in RAM.

    Resumable: when the folder already holds a store for the same ``identity`` (default
    :func:`descriptor_identity`: same model weights, images and transform), only the chunks not
    yet recorded as done are computed; a complete store is returned without running the model.
    A store made for anything else, or with another dtype, is refused
    (:class:`~sfrs_core.retrieval.store.StoreMismatchError`). ``dtype="float16"`` halves the
    file (descriptor values in [-1, 1] keep about 3 significant digits: max abs error 2^-12).
    Other arguments as :func:`extract_descriptors`.
    """
    folder = Path(store)
    identity = descriptor_identity(model, images, transform) if identity is None else identity
    with writer_lock(folder):  # one writer per store: a second extraction is refused at once
        return _fill_store(model, images, transform, folder, identity=identity, dtype=dtype, chunk_rows=chunk_rows,
                           batch_size=batch_size, device=device, num_workers=num_workers, progress=progress, amp=amp,
                           desc=desc, stats=stats)


def _fill_store(model: nn.Module, images: ImageSet, transform: ImageTransform, folder: Path, *,
                identity: dict[str, Any], dtype: str, chunk_rows: int, batch_size: int,
                device: str | torch.device | None, num_workers: int, progress: bool, amp: bool | None,
                desc: str | None, stats: ExtractStats | None) -> DescriptorStore:
    """:func:`extract_to_store`'s work, once it holds the store's writer lock."""
    n = len(images)
    opened: DescriptorStore | None = None
    if (folder / HEADER_NAME).is_file():
        opened = DescriptorStore.open(folder, identity=identity)
        opened.check_shape(n, getattr(model, "descriptor_dim", None), dtype)
        ranges = opened.missing()
    else:
        if n == 0:
            raise ValueError(f"no images to extract descriptors from into {folder}")
        ranges = [(a, min(a + chunk_rows, n)) for a in range(0, n, chunk_rows)]
    if not ranges:
        assert opened is not None
        return opened
    indices = np.concatenate([np.arange(a, b) for a, b in ranges])
    stats = stats if stats is not None else ExtractStats()
    start = time.perf_counter()
    bar = tqdm(total=n, initial=n - len(indices), desc=desc or "extract descriptors", unit="img",
               disable=not progress, leave=False)
    gen = _batches(model, images, transform, indices, batch_size=batch_size, device=device,
                   num_workers=num_workers, regions=False, amp=amp, stats=stats)
    buf: np.ndarray | None = None
    r, filled = 0, 0
    try:
        with contextlib.closing(gen):
            for idx, result in gen:
                pos = 0
                while pos < len(result):
                    a, b = ranges[r]
                    if buf is None:
                        buf = np.empty((max(hi - lo for lo, hi in ranges), result.shape[1]), dtype=np.float32)
                    take = min(len(result) - pos, (b - a) - filled)
                    assert idx[pos] == a + filled  # the loader keeps the order of ``indices``
                    buf[filled:filled + take] = result[pos:pos + take]
                    filled, pos = filled + take, pos + take
                    if filled == b - a:
                        t0 = time.perf_counter()
                        if opened is None:
                            opened = DescriptorStore.create(folder, n, result.shape[1], dtype=dtype,
                                                            identity=identity, chunk_rows=chunk_rows)
                        opened.write(a, buf[:b - a])
                        stats.write_s += time.perf_counter() - t0
                        r, filled = r + 1, 0
                bar.update(len(result))
    finally:
        bar.close()
        stats.wall_s += time.perf_counter() - start
    assert opened is not None and opened.complete, "extraction ended before every chunk was written"
    return opened
