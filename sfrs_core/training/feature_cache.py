"""Trunk features for training: the frozen prefix of the trunk, computed once when it fits.

Layers below ``train_from`` are frozen (no gradient, BatchNorm statistics fixed), so their
output for an un-augmented image never changes during a run. When the outputs of all images of
a split fit in ``budget_gb`` they are computed once and kept in memory; extraction and training
then run only the trainable suffix of the trunk (exactly the same numbers as running the whole
trunk). Otherwise images are loaded and the prefix runs every time. Augmented training images
(``get(..., augment=...)``) always go through the whole trunk: a cache cannot hold them.

Under torchrun every rank builds its own cache (no collective here: a rank may need a split's
features while the others do not); what the ranks share is the descriptor extraction on top of
it, which the trainer shards.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data.dataset import ImageSet
from ..data.images import open_rgb
from ..data.torch_data import ImageSetDataset
from ..data.transforms import ImageTransform
from ..models.model import NetVLADModel

log = logging.getLogger(__name__)


def trunk_prefix(model: NetVLADModel) -> nn.Sequential:
    """The frozen modules at the start of the trunk (possibly none)."""
    return model.trunk.body[: model.trunk.frozen_upto]


def trunk_suffix(model: NetVLADModel) -> nn.Sequential:
    """The trainable rest of the trunk."""
    return model.trunk.body[model.trunk.frozen_upto:]


class PrefixFeatures:
    """Frozen-prefix outputs for the images of one :class:`ImageSet`, cached when they fit."""

    def __init__(self, model: NetVLADModel, images: ImageSet, transform: ImageTransform, device: torch.device,
                 budget_gb: float = 4.0, batch_size: int = 32, num_workers: int = 0, progress: bool = True,
                 name: str = "images", channels_last: bool = False):
        self.model = model
        self.images = images
        self.transform = transform
        self.device = device
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.channels_last = channels_last
        self.cache: torch.Tensor | None = None
        probe = self._run_prefix(torch.stack([transform(images.image_path(0))]))
        need_gb = probe[0].numel() * 4 * len(images) / 1e9
        if need_gb <= budget_gb:
            self.cache = self._compute_all(progress, name)
        else:
            log.info("frozen trunk features of %s need %.1f GB > budget %.1f GB: computed on the fly", name, need_gb, budget_gb)

    @torch.no_grad()
    def _run_prefix(self, images: torch.Tensor) -> torch.Tensor:
        prefix = trunk_prefix(self.model)
        prefix.eval()
        images = images.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return prefix(images).float()

    def _compute_all(self, progress: bool, name: str) -> torch.Tensor:
        loader = DataLoader(ImageSetDataset(self.images, self.transform), batch_size=self.batch_size,
                            num_workers=self.num_workers, pin_memory=self.device.type == "cuda")
        parts = [self._run_prefix(x).cpu() for x, _ in tqdm(loader, desc=f"frozen features: {name}", disable=not progress, leave=False)]
        return torch.cat(parts)

    def __len__(self) -> int:
        return len(self.images)

    def get(self, indices, augment: Callable[[Image.Image], Image.Image] | None = None) -> torch.Tensor:
        """Prefix outputs ``len(indices) × C × h × w`` on the training device.

        ``augment`` (a PIL image -> PIL image transform, e.g. ColorJitter) is applied to each
        loaded image before resizing and normalisation; it bypasses the cache.
        """
        idx = torch.as_tensor(indices, dtype=torch.long)
        if augment is None and self.cache is not None:
            batch = self.cache[idx]
            if self.device.type == "cuda":  # pinned (torch's caching host allocator): a truly asynchronous copy
                batch = batch.pin_memory()
            return batch.to(self.device, non_blocking=True)
        return self._run_prefix(self.load(idx, augment))

    def needs_images(self, augment: bool) -> bool:
        """Whether :meth:`get` reads image files (no cache, or augmented images)."""
        return augment or self.cache is None

    def load(self, indices, augment: Callable[[Image.Image], Image.Image] | None = None) -> torch.Tensor:
        """The transformed (and augmented) images ``len(indices) × 3 × H × W`` on CPU, before the
        prefix: what a DataLoader worker prepares; :meth:`from_images` finishes :meth:`get`'s work."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        if augment is None:
            return torch.stack([self.transform(self.images.image_path(int(i))) for i in idx])
        return torch.stack([self.transform(augment(open_rgb(self.images.image_path(int(i))))) for i in idx])

    def from_images(self, images: torch.Tensor) -> torch.Tensor:
        """Prefix outputs of images :meth:`load` prepared, on the training device."""
        return self._run_prefix(images)


def local_features(model: NetVLADModel, prefix_out: torch.Tensor) -> torch.Tensor:
    """Local descriptors ``N × D × h × w`` from the frozen prefix's output."""
    return trunk_suffix(model)(prefix_out)


@torch.no_grad()
def descriptors(model: NetVLADModel, source: PrefixFeatures, batch_size: int = 64, use_pca: bool | None = False,
                progress: bool = False, desc: str = "descriptors",
                autocast: Callable[[], contextlib.AbstractContextManager] | None = None) -> torch.Tensor:
    """Global descriptors of every image of ``source`` (eval mode, no gradient), float32 on CPU.

    ``autocast`` (e.g. ``Precision.autocast``) wraps each batch's forward (mixed precision)."""
    was_training = model.training
    model.eval()
    out = []
    for start in tqdm(range(0, len(source), batch_size), desc=desc, disable=not progress, leave=False):
        idx = range(start, min(start + batch_size, len(source)))
        with autocast() if autocast is not None else contextlib.nullcontext():
            out.append(model.aggregate(local_features(model, source.get(list(idx))), use_pca).float().cpu())
    model.train(was_training)
    return torch.cat(out)
