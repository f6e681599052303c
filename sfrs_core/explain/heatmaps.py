"""Heatmaps of why a model matches a (query, database image) pair, for several models side by side.

Three methods (``METHODS``), each giving a :class:`Heatmap` aligned with the image:
``"gradcam"`` (:mod:`.gradcam`), ``"decomp"`` (exact similarity decomposition,
:mod:`.decomposition`) and ``"activation"`` (norm of the trunk's local features, below).
:func:`compare_heatmaps` computes one method for a pair under every given model (e.g. SARE and
SFRS): the query's map targets the match's descriptor and the match's map the query's
(symmetric), with overlays (:mod:`.overlay`) ready to show; :func:`comparison_grid` tiles them.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

from sfrs_core.explain.decomposition import decomposition_heatmap
from sfrs_core.explain.gradcam import gradcam_heatmap
from sfrs_core.explain.heatmap_core import (
    DescriptorLike,
    Heatmap,
    ImageInput,
    ImageLike,
    load_rgb,
    prepare_image,
    upsample,
)
from sfrs_core.explain.overlay import overlay
from sfrs_core.models.model import NetVLADModel

METHODS = ("gradcam", "decomp", "activation")


@torch.no_grad()
def activation_heatmap(model: NetVLADModel, image: ImageInput, *, size: tuple[int, int] | None = None) -> Heatmap:
    """L2 norm over channels of the trunk's feature map (before NetVLAD's input normalisation)."""
    batch = prepare_image(model, image, size)
    norms = model.features(batch)[0].float().norm(dim=0).cpu()
    return Heatmap(image=upsample(norms, tuple(batch.shape[-2:])), feature=norms.numpy(), method="activation")


def activation_map(model: NetVLADModel, image: ImageInput, *, size: tuple[int, int] | None = None) -> np.ndarray:
    """``H×W`` float32 activation map (bilinear upsampling of :func:`activation_heatmap`'s)."""
    return activation_heatmap(model, image, size=size).image


@torch.no_grad()
def describe(model: NetVLADModel, image: ImageInput, *, use_pca: bool | None = None,
             size: tuple[int, int] | None = None) -> torch.Tensor:
    """The model's L2-normalised descriptor of one image (a vector)."""
    return model(prepare_image(model, image, size), use_pca=use_pca)[0]


def compute_heatmap(
    model: NetVLADModel, image: ImageInput, method: str, other_descriptor: DescriptorLike | None = None, *,
    use_pca: bool | None = None, size: tuple[int, int] | None = None,
) -> Heatmap:
    """Any of ``METHODS`` for one image; ``other_descriptor`` is required except for ``"activation"``."""
    if method not in METHODS:
        raise ValueError(f"unknown heatmap method {method!r}; choose one of {list(METHODS)}")
    if method == "activation":
        return activation_heatmap(model, image, size=size)
    if other_descriptor is None:
        raise ValueError(f"method {method!r} needs the other image's descriptor")
    fn = gradcam_heatmap if method == "gradcam" else decomposition_heatmap
    return fn(model, image, other_descriptor, use_pca=use_pca, size=size)


@dataclass
class PairHeatmaps:
    """One model's heatmaps for a (query, match) pair, with the images and overlays as shown."""

    query: Heatmap
    match: Heatmap
    similarity: float
    query_rgb: np.ndarray
    match_rgb: np.ndarray
    query_overlay: np.ndarray
    match_overlay: np.ndarray


def _pair(model: NetVLADModel, query_rgb: np.ndarray, match_rgb: np.ndarray, method: str,
          use_pca: bool | None, colormap: str | None, opacity: float) -> PairHeatmaps:
    f_q, f_m = describe(model, query_rgb, use_pca=use_pca), describe(model, match_rgb, use_pca=use_pca)
    q_map = compute_heatmap(model, query_rgb, method, f_m, use_pca=use_pca)
    m_map = compute_heatmap(model, match_rgb, method, f_q, use_pca=use_pca)
    return PairHeatmaps(
        query=q_map, match=m_map, similarity=float(f_q @ f_m),
        query_rgb=query_rgb, match_rgb=match_rgb,
        query_overlay=overlay(query_rgb, q_map.image, colormap, opacity, signed=q_map.signed),
        match_overlay=overlay(match_rgb, m_map.image, colormap, opacity, signed=m_map.signed),
    )


def compare_heatmaps(
    models: Mapping[str, NetVLADModel], query_image: ImageLike, match_image: ImageLike,
    method: str = "gradcam", image_size: tuple[int, int] | None = None, *,
    colormap: str | None = None, opacity: float = 0.5, use_pca: bool | None = None,
) -> dict[str, PairHeatmaps]:
    """Heatmaps of a (query, match) pair under each model, keyed like ``models``.

    Images are paths, PIL images or ``H×W×3`` uint8 arrays, resized to ``image_size`` = (H, W)
    (None: their own sizes) and normalised per model. The query's map targets the match's
    descriptor and vice versa. Overlays use ``colormap``/``opacity`` (see :mod:`.overlay`).
    """
    if method not in METHODS:
        raise ValueError(f"unknown heatmap method {method!r}; choose one of {list(METHODS)}")
    query_rgb, match_rgb = load_rgb(query_image, image_size), load_rgb(match_image, image_size)
    return {name: _pair(model, query_rgb, match_rgb, method, use_pca, colormap, opacity)
            for name, model in models.items()}


def comparison_grid(results: Mapping[str, PairHeatmaps], *, pad: int = 4, label_height: int = 14) -> np.ndarray:
    """A quick ``uint8`` RGB montage: one row per model (query overlay | match overlay), labelled."""
    rows = [(f"{name}  sim={pair.similarity:.3f}", [pair.query_overlay, pair.match_overlay])
            for name, pair in results.items()]
    width = max(sum(t.shape[1] for t in tiles) + pad * (len(tiles) + 1) for _, tiles in rows)
    heights = [max(t.shape[0] for t in tiles) + label_height + pad for _, tiles in rows]
    canvas = Image.new("RGB", (width, sum(heights) + pad), "white")
    draw, y = ImageDraw.Draw(canvas), pad
    for (text, tiles), height in zip(rows, heights):
        draw.text((pad, y), text, fill="black")
        x = pad
        for tile in tiles:
            canvas.paste(Image.fromarray(tile), (x, y + label_height))
            x += tile.shape[1] + pad
        y += height
    return np.asarray(canvas, dtype=np.uint8).copy()
