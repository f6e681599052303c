"""Plain-image helpers for the figure grids: any picture in, uint8 RGB out."""
from __future__ import annotations

import os

import numpy as np
from matplotlib import colormaps
from PIL import Image

ImageLike = Image.Image | np.ndarray | str | os.PathLike


def as_rgb(image: ImageLike) -> np.ndarray:
    """An H×W×3 uint8 array from an image file path, a PIL image or an array (H×W grey,
    H×W×3 RGB, H×W×4 RGBA; uint8, or floats in [0, 1])."""
    if isinstance(image, (str, os.PathLike)):
        from ..data.images import open_rgb

        return np.asarray(open_rgb(image))
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"expected an H×W, H×W×3 or H×W×4 image, got shape {arr.shape}")
    arr = arr[..., :3]
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.bool_):
        return (np.clip(arr.astype(np.float64), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return np.clip(arr, 0, 255).astype(np.uint8)


def is_raw_map(array: ImageLike) -> bool:
    """True for a 2-D float array (a relevance map still to be coloured), False for a picture."""
    return not isinstance(array, Image.Image) and np.ndim(array) == 2 and np.asarray(array).dtype != np.uint8


def crop_to_aspect(image: np.ndarray, aspect: float) -> np.ndarray:
    """Centre crop of ``image`` with width/height = ``aspect`` (no distortion, no padding)."""
    h, w = image.shape[:2]
    if w / h > aspect:  # too wide
        new_w = max(1, round(h * aspect))
        x0 = (w - new_w) // 2
        return image[:, x0 : x0 + new_w]
    new_h = max(1, round(w / aspect))
    y0 = (h - new_h) // 2
    return image[y0 : y0 + new_h]


def fit_tile(image: np.ndarray, aspect: float, width_in: float, max_dpi: float = 300.0) -> np.ndarray:
    """Centre-crop ``image`` to ``aspect`` and, if it has more pixels than a ``width_in`` tile needs
    at ``max_dpi``, shrink it (Lanczos): keeps vector files small and the raster free of aliasing."""
    tile = crop_to_aspect(image, aspect)
    max_w = max(8, round(width_in * max_dpi))
    if tile.shape[1] <= max_w:
        return tile
    max_h = max(1, round(max_w / aspect))
    return np.asarray(Image.fromarray(tile).resize((max_w, max_h), Image.LANCZOS))


def normalize_map(heat: np.ndarray) -> np.ndarray:
    """Min–max scale a map to [0, 1] (a constant map becomes all zeros; NaNs become 0)."""
    heat = np.nan_to_num(np.asarray(heat, dtype=np.float64))
    lo, hi = float(heat.min()), float(heat.max())
    return (heat - lo) / (hi - lo) if hi > lo else np.zeros_like(heat)


def overlay_heatmap(
    image: ImageLike,
    heat: np.ndarray,
    *,
    cmap: str = "jet",
    alpha: float = 0.5,
    normalize: bool = True,
) -> np.ndarray:
    """Blend a colour-mapped H×W ``heat`` over ``image`` (resized to the image if needed).

    ``alpha`` is the opacity of the heatmap (0 = image only, 1 = heatmap only). With
    ``normalize`` the map is min–max scaled first, otherwise it must already lie in [0, 1].
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    rgb = as_rgb(image)
    heat = normalize_map(heat) if normalize else np.clip(np.asarray(heat, dtype=np.float64), 0.0, 1.0)
    if heat.shape != rgb.shape[:2]:
        resized = Image.fromarray(heat.astype(np.float32)).resize((rgb.shape[1], rgb.shape[0]), Image.BILINEAR)
        heat = np.clip(np.asarray(resized, dtype=np.float64), 0.0, 1.0)
    colored = colormaps[cmap](heat)[..., :3]
    out = (1.0 - alpha) * rgb.astype(np.float64) / 255.0 + alpha * colored
    return (np.clip(out, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
