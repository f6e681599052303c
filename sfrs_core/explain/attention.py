"""Where a heatmap's mass falls, by semantic class (SynthCity label maps).

This is where the claim "SFRS looks at shop signs, SARE at trees" gets a number: the share of
a (non-negative) heatmap's mass on each class, and the pointing game on signs — the heatmap's
maximum falls on (or within ``tolerance_px`` of) a sign pixel.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image
from scipy.ndimage import distance_transform_edt

from ..data.synthcity.labels import CLASS_ID, CLASSES


def _aligned(heatmap: np.ndarray, label: np.ndarray) -> np.ndarray:
    heat = np.asarray(heatmap, dtype=np.float64)
    if heat.shape != label.shape:
        heat = np.asarray(Image.fromarray(heat.astype(np.float32)).resize(label.shape[::-1], Image.BILINEAR), np.float64)
    return np.clip(heat, 0.0, None)


def class_shares(heatmap: np.ndarray, label: np.ndarray, classes: Sequence[str] = CLASSES) -> dict[str, float]:
    """Share of the heatmap's (clipped at 0) mass on each class of the H×W class-id ``label``.

    The shares sum to 1 (all zeros if the heatmap has no positive mass). A heatmap of another
    size is resized bilinearly to the label map's size.
    """
    label = np.asarray(label)
    heat = _aligned(heatmap, label)
    total = heat.sum()
    mass = np.bincount(label.ravel(), weights=heat.ravel(), minlength=len(classes))[: len(classes)]
    shares = mass / total if total > 0 else np.zeros(len(classes))
    return {name: float(s) for name, s in zip(classes, shares)}


def pointing_hit(heatmap: np.ndarray, label: np.ndarray, class_name: str = "sign", tolerance_px: float = 0.0) -> bool | None:
    """Pointing game: does the heatmap's maximum lie within ``tolerance_px`` of ``class_name``?

    None when the image has no pixel of that class (such images are left out of the rate).
    """
    label = np.asarray(label)
    target = label == CLASS_ID[class_name]
    if not target.any():
        return None
    heat = _aligned(heatmap, label)
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    if tolerance_px <= 0:
        return bool(target[y, x])
    return bool(distance_transform_edt(~target)[y, x] <= tolerance_px)


def summarise(shares: Sequence[dict[str, float]], hits: Sequence[bool | None]) -> dict:
    """Mean share per class over images, and the pointing-game hit rate (images with the class)."""
    classes = list(shares[0]) if shares else list(CLASSES)
    mean = {c: float(np.mean([s[c] for s in shares])) if shares else 0.0 for c in classes}
    counted = [h for h in hits if h is not None]
    return {"shares": mean, "pointing_hits": int(sum(counted)), "pointing_images": len(counted),
            "pointing_rate": float(np.mean(counted)) if counted else float("nan"), "images": len(shares)}


def attention_by_class(model, split, results, method: str = "decomp", queries: Sequence[int] | None = None,
                       image_size: tuple[int, int] | None = None, progress: bool = False,
                       on_progress: Callable[[int, int], None] | None = None) -> dict:
    """Mean class shares and sign pointing rate of ``model``'s heatmaps over a split's queries,
    with each class's mean share of the image area (``"area"``) as the chance level.

    Each query's heatmap targets its top-1 match under ``results`` (the model's own
    :class:`~sfrs_core.retrieval.results.QueryResults`); shares use the query's label map.
    ``on_progress(done, total)`` is called after each query (e.g. to move a progress bar).
    """
    shares, hits, areas = per_query_attention(model, split, results, method, queries, image_size, progress, on_progress)
    return {**summarise(shares, hits), "area": summarise(areas, [])["shares"]}


def per_query_attention(model, split, results, method: str = "decomp", queries: Sequence[int] | None = None,
                        image_size: tuple[int, int] | None = None, progress: bool = False,
                        on_progress: Callable[[int, int], None] | None = None
                        ) -> tuple[list[dict[str, float]], list[bool | None], list[dict[str, float]]]:
    """Per query (in the order of ``queries``): the heatmap's class shares, its sign pointing hit
    (None without a sign in view) and the classes' shares of the image area."""
    from tqdm import tqdm

    from .heatmaps import compute_heatmap, describe

    if split.queries.label_root is None:
        raise ValueError(f"split {split.name!r} has no semantic label maps (only SynthCity has them)")
    queries = list(range(len(split.queries)) if queries is None else queries)
    shares, hits, areas = [], [], []
    for done, q in enumerate(tqdm(queries, desc=f"attention ({method})", disable=not progress, leave=False), 1):
        match = split.database.image_path(int(results.ids[q, 0]))
        target = describe(model, match, size=image_size)
        heat = compute_heatmap(model, split.queries.image_path(q), method, target, size=image_size).image
        label = np.asarray(Image.open(split.queries.label_path(q)))
        shares.append(class_shares(heat, label))
        hits.append(pointing_hit(heat, label))
        areas.append(class_shares(np.ones(label.shape), label))
        if on_progress is not None:
            on_progress(done, len(queries))
    return shares, hits, areas
