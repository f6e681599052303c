"""Image -> tensor for the models: upright RGB, resized, scaled to [0, 1], normalised."""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .images import open_rgb


@dataclass(frozen=True)
class ImageTransform:
    """Load an image file (or take a PIL image) as a normalised ``3×H×W`` float tensor.

    ``size`` is (height, width) or None to keep the image's own size; ``normalize`` is the
    trunk's normalisation (``model.normalization``), applied to values in [0, 1].
    """

    size: tuple[int, int] | None
    normalize: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __call__(self, image: str | os.PathLike | Image.Image) -> torch.Tensor:
        img = image if isinstance(image, Image.Image) else open_rgb(image)
        if img.mode != "RGB":
            img = img.convert("RGB")
        if self.size is not None and (img.height, img.width) != tuple(self.size):
            img = img.resize((self.size[1], self.size[0]), Image.BILINEAR)
        x = torch.from_numpy(np.array(img, dtype=np.float32)).permute(2, 0, 1).div_(255.0)
        return self.normalize(x) if self.normalize is not None else x
