"""What every heatmap shares: the :class:`Heatmap` result and the input/upsampling helpers.

Images may be given as a path, a PIL image, an ``H×W×3`` uint8 array (all normalised here with
``model.normalization``) or as an already normalised ``3×H×W`` / ``1×3×H×W`` tensor.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from sfrs_core.data.images import open_rgb
from sfrs_core.data.transforms import ImageTransform
from sfrs_core.models.model import NetVLADModel

ImageLike = str | os.PathLike | Image.Image | np.ndarray
ImageInput = ImageLike | torch.Tensor
DescriptorLike = torch.Tensor | np.ndarray


@dataclass
class Heatmap:
    """A heatmap at image and at feature-map resolution.

    ``image``: ``H×W`` float32, aligned with the model's input image; ``feature``: ``h×w``
    float32 on the trunk's feature grid; ``signed``: whether values may be negative (the
    decomposition); ``similarity``: the model's similarity to the target descriptor (None for
    the activation map); ``details``: method-specific numbers (e.g. the decomposition's bias term).
    """

    image: np.ndarray
    feature: np.ndarray
    method: str
    signed: bool = False
    similarity: float | None = None
    details: dict[str, float] = field(default_factory=dict)


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a parameter-less module)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def as_pil(image: ImageLike) -> Image.Image:
    """A path, PIL image or ``H×W×3`` uint8 array as an RGB PIL image."""
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an H×W×3 uint8 RGB array, got {image.dtype} {image.shape}")
        return Image.fromarray(image, "RGB")
    return open_rgb(image)


def load_rgb(image: ImageLike, size: tuple[int, int] | None = None) -> np.ndarray:
    """The image as ``H×W×3`` uint8, resized to ``size`` = (H, W) exactly as the models see it."""
    pil = as_pil(image)
    if size is not None and (pil.height, pil.width) != tuple(size):
        pil = pil.resize((size[1], size[0]), Image.BILINEAR)
    return np.asarray(pil, dtype=np.uint8).copy()


def prepare_image(model: NetVLADModel, image: ImageInput, size: tuple[int, int] | None = None) -> torch.Tensor:
    """A normalised ``1×3×H×W`` batch on the model's device (tensors are taken as normalised)."""
    if isinstance(image, torch.Tensor):
        batch = image.unsqueeze(0) if image.dim() == 3 else image
        if batch.dim() != 4 or batch.shape[:2] != (1, 3):
            raise ValueError(f"expected a 3×H×W or 1×3×H×W image tensor, got shape {tuple(image.shape)}")
        if size is not None and tuple(batch.shape[-2:]) != tuple(size):
            raise ValueError(f"image tensor is {tuple(batch.shape[-2:])}, not the requested size {tuple(size)}")
    else:
        batch = ImageTransform(size, model.normalization)(as_pil(image)).unsqueeze(0)
    return batch.to(model_device(model), torch.float32)


def as_descriptor(model: NetVLADModel, descriptor: DescriptorLike) -> torch.Tensor:
    """A target descriptor as a float32 vector on the model's device."""
    return torch.as_tensor(descriptor).detach().to(model_device(model), torch.float32).reshape(-1)


def output_dim(model: NetVLADModel, use_pca: bool | None = None) -> int:
    """Length of ``model(images, use_pca)``'s descriptors."""
    pca = model._pca_or_none(use_pca)
    return pca.out_dim if pca is not None else model.vlad_dim


def check_descriptor(descriptor: torch.Tensor, dim: int) -> None:
    """Raise a clear error when a target descriptor does not fit the model's output."""
    if descriptor.numel() != dim:
        raise ValueError(
            f"target descriptor has {descriptor.numel()} values but the model outputs {dim}: "
            "compute it with the same model (and the same use_pca)"
        )


def upsample(feature_map: torch.Tensor | np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear (half-pixel centres) upsampling of an ``h×w`` map to ``size`` = (H, W), float32."""
    t = torch.as_tensor(np.asarray(feature_map, dtype=np.float32) if isinstance(feature_map, np.ndarray)
                        else feature_map.detach().float().cpu())
    out = F.interpolate(t[None, None], size=tuple(size), mode="bilinear", align_corners=False)
    return out[0, 0].numpy().astype(np.float32)
