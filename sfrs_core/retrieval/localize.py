"""Localize one photo against a prepared database (:class:`~.bundle.IndexBundle`).

The photo is described by the model exactly as the database was (same image size, same
normalisation), its top-K database matches are looked up in the faiss index, and, when the
photo's own GPS position is known, each match's distance to it is measured in the database's
UTM zone. The CLI's ``query`` command and the app's Upload page both call :func:`localize`.

Whatever the photo's size, the model sees it at the database's image size
(:attr:`~.bundle.IndexBundle.image_size`): a photo file is decoded reduced for that size
(:func:`~sfrs_core.data.photo.open_photo`), so time and memory depend on the database image size,
not on the photo's. A photo far from the database images' aspect ratio (it is stretched) or much
smaller than them (it is enlarged) is localized all the same, with a warning in
``Localization.warnings`` (:func:`size_warnings`).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..data.geo import UtmZone, latlon_to_utm
from ..data.photo import Photo, open_photo
from ..data.transforms import ImageTransform
from .bundle import IndexBundle, Match

PhotoInput = str | os.PathLike | Image.Image | np.ndarray | Photo

#: A photo whose aspect ratio (width/height) differs from the database images' by more than this
#: factor is stretched visibly when resized to their size: it is localized with a warning.
ASPECT_TOLERANCE = 1.25
#: A photo smaller than this fraction of the database image size on a side is enlarged more than
#: 2× to be described (little detail left): it is localized with a warning.
TINY_FRACTION = 0.5


@dataclass(frozen=True)
class Localization:
    """The top-K matches of one photo; ``errors_m[j]`` is match j's distance (metres) to the
    photo's GPS position ``truth_utm`` (all None when the photo has no GPS)."""

    matches: list[Match]
    descriptor: np.ndarray
    truth_utm: tuple[float, float] | None = None
    warnings: tuple[str, ...] = ()  # why these matches may be less reliable (photo size, aspect ratio)

    @property
    def errors_m(self) -> list[float | None]:
        if self.truth_utm is None:
            return [None] * len(self.matches)
        e, n = self.truth_utm
        return [math.hypot(m.utm[0] - e, m.utm[1] - n) for m in self.matches]

    @property
    def top1_error_m(self) -> float | None:
        """Localization error: the distance from the photo's GPS to the top-1 match (None: unknown)."""
        return self.errors_m[0] if self.matches else None


def gps_to_utm(lat: float, lon: float, zone: UtmZone) -> tuple[float, float]:
    """A GPS position as (easting, northing) in metres, projected into ``zone`` (the database's)."""
    east, north, _ = latlon_to_utm(lat, lon, zone)
    return float(east[0]), float(north[0])


def size_warnings(photo_size: tuple[int, int], image_size: tuple[int, int] | None) -> tuple[str, ...]:
    """Why a photo of ``photo_size`` = (width, height) may localize less reliably against a
    database described at ``image_size`` = (H, W): a far aspect ratio, a tiny photo (or nothing)."""
    if not image_size:
        return ()
    w, h = (max(1, int(v)) for v in photo_size)
    H, W = (max(1, int(v)) for v in image_size)
    out = []
    ratio = (w / h) / (W / H)
    if max(ratio, 1 / ratio) > ASPECT_TOLERANCE:
        shape = "portrait" if h > w else "landscape" if w > h else "square"
        out.append(f"its shape ({w}×{h}, {shape}, aspect ratio {w / h:.2f}) is far from the database images' "
                   f"({W}×{H}, aspect ratio {W / H:.2f}): it was stretched to {W}×{H} to be described, "
                   "so its matches are less reliable (a photo cropped to that shape fares better)")
    if w < TINY_FRACTION * W or h < TINY_FRACTION * H:
        factor = max(W / w, H / h)
        out.append(f"it is tiny ({w}×{h} pixels) next to the database images ({W}×{H}): it was enlarged "
                   f"{factor:.1f}× to be described, so its matches are less reliable")
    return tuple(out)


def _as_pil(image: PhotoInput, image_size: tuple[int, int] | None) -> Image.Image:
    if isinstance(image, Photo):
        image = image.rgb
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an H×W×3 uint8 RGB array, got {image.dtype} {image.shape}")
        return Image.fromarray(image, "RGB")
    if isinstance(image, Image.Image):
        return image
    return Image.fromarray(open_photo(image, image_size).rgb, "RGB")  # a file: decoded reduced


def _photo_size(image: PhotoInput, pil: Image.Image) -> tuple[int, int]:
    """The photo's own (width, height): a :class:`Photo`'s original size, else the image's."""
    return image.original_size if isinstance(image, Photo) else pil.size


def describe_photo(model: torch.nn.Module, image: PhotoInput, image_size: tuple[int, int] | None) -> np.ndarray:
    """The model's descriptor (float32 vector) of one photo, resized to ``image_size`` = (H, W)
    as the database images were (None: the photo's own size). The photo is a file path (decoded
    reduced for ``image_size``), a :class:`~sfrs_core.data.photo.Photo`, a PIL image or an
    ``H×W×3`` uint8 array; only the resized photo becomes a float tensor."""
    size = tuple(image_size) if image_size else None
    return _describe(model, _as_pil(image, size), size)


def _describe(model: torch.nn.Module, pil: Image.Image, size: tuple[int, int] | None) -> np.ndarray:
    x = ImageTransform(size, model.normalization)(pil)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    with torch.inference_mode():
        return model(x.unsqueeze(0).to(device)).float().cpu().numpy()[0]


def localize(model: torch.nn.Module, bundle: IndexBundle, image: PhotoInput, k: int = 5,
             gps: tuple[float, float] | None = None) -> Localization:
    """Top-``k`` matches of a photo (path, :class:`~sfrs_core.data.photo.Photo`, PIL image or
    ``H×W×3`` uint8 array) in ``bundle``, described at the bundle's image size.

    ``gps`` is the photo's (lat, lon), if known: the matches' errors are then measured from it.
    A photo far from the database images' aspect ratio, or tiny next to them, is localized all
    the same; ``Localization.warnings`` says so.
    """
    size = bundle.image_size
    if isinstance(image, (str, os.PathLike)):
        image = open_photo(image, size)
    pil = _as_pil(image, size)
    desc = _describe(model, pil, size)
    matches = bundle.search(desc[None], k)[0]
    truth = gps_to_utm(gps[0], gps[1], bundle.zone) if gps is not None else None
    return Localization(matches, desc, truth, size_warnings(_photo_size(image, pil), size))
