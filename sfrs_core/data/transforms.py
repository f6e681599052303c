"""Image -> tensor for the models: upright RGB, resized, scaled to [0, 1], normalised."""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .images import open_rgb

RESIZE_MODES = ("exact", "shorter_edge")


def shorter_edge_shape(height: int, width: int, edge: int) -> tuple[int, int]:
    """(H, W) of an image scaled so that its shorter side is ``edge`` pixels, aspect kept.

    The same arithmetic as torchvision's ``Resize(int)``: the longer side becomes
    ``int(edge * long / short)`` (truncated); a square image becomes ``edge × edge``.
    """
    if height < 1 or width < 1 or edge < 1:
        raise ValueError(f"sizes must be positive, got image {height}x{width} and edge {edge}")
    if width <= height:
        return int(edge * height / width), edge
    return edge, int(edge * width / height)


@dataclass(frozen=True)
class ImageTransform:
    """Load an image file (or take a PIL image) as a normalised ``3×H×W`` float tensor.

    ``size`` is (height, width) or None to keep the image's own size; ``normalize`` is the
    trunk's normalisation (``model.normalization``), applied to values in [0, 1].

    ``resize`` says how ``size`` is met: ``"exact"`` (default) resizes to exactly (H, W);
    ``"shorter_edge"`` scales the image, aspect kept, so that its shorter side becomes
    ``max(H, W)`` — OpenIBL's Tokyo 24/7 query transform (``Resize(max(height, width))``), whose
    outputs differ in size from image to image (extract them one at a time). Both use Pillow's
    bilinear filter, which is what torchvision's ``Resize`` runs on PIL images (antialiased).
    """

    size: tuple[int, int] | None
    normalize: Callable[[torch.Tensor], torch.Tensor] | None = None
    resize: str = "exact"

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        if self.resize == "shorter_edge" and self.size is None:
            raise ValueError("resize='shorter_edge' needs a size (H, W); its max(H, W) is the shorter edge")

    def output_shape(self, height: int, width: int) -> tuple[int, int]:
        """(H, W) of the tensor made from an image of ``height × width`` pixels."""
        if self.size is None:
            return height, width
        if self.resize == "shorter_edge":
            return shorter_edge_shape(height, width, max(int(v) for v in self.size))
        return int(self.size[0]), int(self.size[1])

    def __call__(self, image: str | os.PathLike | Image.Image) -> torch.Tensor:
        img = image if isinstance(image, Image.Image) else open_rgb(image)
        if img.mode != "RGB":
            img = img.convert("RGB")
        out_h, out_w = self.output_shape(img.height, img.width)
        if (img.height, img.width) != (out_h, out_w):
            img = img.resize((out_w, out_h), Image.BILINEAR)
        x = torch.from_numpy(np.array(img, dtype=np.float32)).permute(2, 0, 1).div_(255.0)
        return self.normalize(x) if self.normalize is not None else x
