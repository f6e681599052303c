"""Localize one photo against a prepared database (:class:`~.bundle.IndexBundle`).

The photo is described by the model exactly as the database was (same image size, same
normalisation), its top-K database matches are looked up in the faiss index, and, when the
photo's own GPS position is known, each match's distance to it is measured in the database's
UTM zone. The CLI's ``query`` command and the app's Upload page both call :func:`localize`.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..data.geo import UtmZone, latlon_to_utm
from ..data.transforms import ImageTransform
from .bundle import IndexBundle, Match

PhotoInput = str | os.PathLike | Image.Image | np.ndarray


@dataclass(frozen=True)
class Localization:
    """The top-K matches of one photo; ``errors_m[j]`` is match j's distance (metres) to the
    photo's GPS position ``truth_utm`` (all None when the photo has no GPS)."""

    matches: list[Match]
    descriptor: np.ndarray
    truth_utm: tuple[float, float] | None = None

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


def _as_pil(image: PhotoInput) -> Image.Image | str | os.PathLike:
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an H×W×3 uint8 RGB array, got {image.dtype} {image.shape}")
        return Image.fromarray(image, "RGB")
    return image


def describe_photo(model: torch.nn.Module, image: PhotoInput, image_size: tuple[int, int] | None) -> np.ndarray:
    """The model's descriptor (float32 vector) of one photo, resized to ``image_size`` = (H, W)
    as the database images were (None: the photo's own size)."""
    x = ImageTransform(tuple(image_size) if image_size else None, model.normalization)(_as_pil(image))
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    with torch.inference_mode():
        return model(x.unsqueeze(0).to(device)).float().cpu().numpy()[0]


def localize(model: torch.nn.Module, bundle: IndexBundle, image: PhotoInput, k: int = 5,
             gps: tuple[float, float] | None = None) -> Localization:
    """Top-``k`` matches of a photo (path, PIL image or ``H×W×3`` uint8 array) in ``bundle``.

    ``gps`` is the photo's (lat, lon), if known: the matches' errors are then measured from it.
    """
    size = bundle.meta.get("image_size")
    desc = describe_photo(model, image, tuple(size) if size else None)
    matches = bundle.search(desc[None], k)[0]
    truth = gps_to_utm(gps[0], gps[1], bundle.zone) if gps is not None else None
    return Localization(matches, desc, truth)
