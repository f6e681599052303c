"""Heatmaps for display: normalisation to [0, 1], matplotlib colormaps, blending over the image.

Display convention:
* unsigned maps (Grad-CAM, activation): negatives clipped at 0, then min-max scaled to [0, 1];
  default colormap ``"jet"``;
* signed maps (the similarity decomposition): scaled symmetrically about zero,
  ``0.5 + 0.5 * v / max|v|`` (0.5 = no contribution), shown with a diverging colormap,
  ``"RdBu_r"`` by default: red pixels raise the similarity, blue ones lower it. In
  :func:`overlay` a signed map's opacity also scales with ``sqrt(|v| / max|v|)``, so pixels that
  contribute nothing show the image unchanged instead of the colormap's (white) centre;
``signed=None`` decides from the map (any negative value -> signed); ``signed=False`` on a
signed map shows its positive part only (clipped at 0).
"""
from __future__ import annotations

import matplotlib
import numpy as np

from sfrs_core.explain.heatmap_core import upsample

UNSIGNED_COLORMAP = "jet"
SIGNED_COLORMAP = "RdBu_r"


def normalize_for_display(heatmap: np.ndarray, signed: bool | None = None) -> tuple[np.ndarray, bool]:
    """``heatmap`` scaled to [0, 1] (float32, NaNs as 0) and whether it was treated as signed."""
    h = np.nan_to_num(np.asarray(heatmap, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if signed is None:
        signed = bool((h < 0).any())
    if signed:
        peak = np.abs(h).max(initial=0.0)
        out = 0.5 + 0.5 * h / peak if peak > 0 else np.full_like(h, 0.5)
    else:
        h = np.maximum(h, 0.0)
        lo, hi = h.min(initial=0.0), h.max(initial=0.0)
        out = (h - lo) / (hi - lo) if hi > lo else np.zeros_like(h)
    return out.astype(np.float32), signed


def colorize(heatmap: np.ndarray, colormap: str | None = None, signed: bool | None = None) -> np.ndarray:
    """``H×W`` heatmap -> ``H×W×3`` uint8 RGB through a matplotlib colormap (see module doc)."""
    values, signed = normalize_for_display(heatmap, signed)
    return _apply_colormap(values, colormap or (SIGNED_COLORMAP if signed else UNSIGNED_COLORMAP))


def _apply_colormap(values: np.ndarray, name: str) -> np.ndarray:
    try:
        cmap = matplotlib.colormaps[name]
    except KeyError:
        raise ValueError(f"unknown matplotlib colormap {name!r}") from None
    return np.round(cmap(values)[..., :3] * 255.0).astype(np.uint8)


def overlay(
    image_rgb: np.ndarray, heatmap: np.ndarray, colormap: str | None = None, opacity: float = 0.5,
    signed: bool | None = None,
) -> np.ndarray:
    """Blend a colourised heatmap over an ``H×W×3`` uint8 image: ``(1-alpha)*image + alpha*colour``.

    ``alpha`` is ``opacity`` for unsigned maps and ``opacity * sqrt(|v| / max|v|)`` for signed ones (see
    the module doc). The heatmap is resized (bilinear) to the image when their sizes differ;
    ``opacity`` 0 returns the image unchanged.
    """
    image = np.asarray(image_rgb)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an H×W×3 uint8 RGB image, got {image.dtype} {image.shape}")
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must lie in [0, 1], got {opacity}")
    heat = np.asarray(heatmap)
    if heat.ndim != 2:
        raise ValueError(f"expected a 2-D heatmap, got shape {heat.shape}")
    if heat.shape != image.shape[:2]:
        heat = upsample(heat, image.shape[:2])
    values, signed = normalize_for_display(heat, signed)
    colour = _apply_colormap(values, colormap or (SIGNED_COLORMAP if signed else UNSIGNED_COLORMAP))
    alpha = opacity * np.sqrt(np.abs(2.0 * values - 1.0))[..., None] if signed else np.float32(opacity)
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colour.astype(np.float32)
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)
