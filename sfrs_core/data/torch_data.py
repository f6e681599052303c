"""torch ``Dataset`` views of an :class:`~sfrs_core.data.dataset.ImageSet`."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from .dataset import ImageSet
from .transforms import ImageTransform


class ImageSetDataset(Dataset):
    """Images of an :class:`ImageSet` (all, or the given indices) as ``(tensor, index)``."""

    def __init__(self, images: ImageSet, transform: ImageTransform, indices: Sequence[int] | None = None):
        self.images = images
        self.transform = transform
        self.indices = list(range(len(images))) if indices is None else [int(i) for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, int]:
        i = self.indices[k]
        return self.transform(self.images.image_path(i)), i
