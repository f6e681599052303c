"""Batched descriptor extraction (global or 9 region descriptors per image)."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from sfrs_core.data.dataset import ImageSet
from sfrs_core.data.torch_data import ImageSetDataset
from sfrs_core.data.transforms import ImageTransform

from .device import pick_device


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
) -> np.ndarray:
    """Descriptors of ``images`` (all, or ``indices`` in that order) as float32 numpy.

    Returns ``N x dim`` (``model(x)``) or, with ``regions=True``, ``N x 9 x dim``
    (``model.regions(x)``). Runs under ``torch.inference_mode`` with the model in eval mode; on
    CUDA with autocast (bf16/fp16; ``amp=False`` turns it off) and channels_last. The model's
    train/eval modes, device and memory format are restored afterwards.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = resolve_device(model, device)
    on_cuda = dev.type == "cuda"
    use_amp = on_cuda if amp is None else bool(amp)
    if use_amp and not on_cuda:
        raise ValueError("amp=True needs a CUDA device")
    dataset = ImageSetDataset(images, transform, indices)
    n = len(dataset)
    what = "region descriptors" if regions else "descriptors"
    if n == 0:
        dim = getattr(model, "descriptor_dim", None)
        if dim is None:
            raise ValueError(f"no images to extract {what} from")
        return np.zeros((0, 9, dim) if regions else (0, dim), dtype=np.float32)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=on_cuda)
    out: np.ndarray | None = None
    offset = 0
    bar = tqdm(total=n, desc=desc or f"extract {what}", unit="img", disable=not progress, leave=False)
    autocast = torch.autocast("cuda", dtype=amp_dtype(dev)) if use_amp else contextlib.nullcontext()
    try:
        with inference_state(model, dev, channels_last=on_cuda) as net, torch.inference_mode(), autocast:
            for batch, _ in loader:
                batch = batch.to(dev, non_blocking=True)
                if on_cuda:
                    batch = batch.contiguous(memory_format=torch.channels_last)
                result = net.regions(batch) if regions else net(batch)
                result = result.float().cpu().numpy()
                if out is None:
                    out = np.empty((n, *result.shape[1:]), dtype=np.float32)
                out[offset:offset + len(result)] = result
                offset += len(result)
                bar.update(len(result))
    finally:
        bar.close()
    assert out is not None and offset == n
    return out
