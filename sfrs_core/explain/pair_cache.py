"""A disk cache of a run's heatmap pairs: a query and its own top-1 under one generation.

Computing a pair costs a Grad-CAM (or decomposition) pass over both images, about a second on 2
CPU cores; the maps depend only on the checkpoint, the two images and the method, so they are kept
in ``<run>/cache/heatmaps/<split>_gen<g>_<method>_q<q>_m<match>.npz`` (maps at image and feature
resolution, similarities, details) and reused across server restarts. Images and overlays are not stored:
they are re-read and redrawn (overlays follow the page's colormap and opacity). A cache file older
than its checkpoint is ignored; writes are atomic.
"""
from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..io import atomic_path
from ..models.model import NetVLADModel
from .heatmap_core import Heatmap, ImageLike, load_rgb
from .heatmaps import PairHeatmaps, compare_heatmaps
from .overlay import overlay


def pair_file(run_path: str | os.PathLike, generation: int, split: str, query: int, match: int, method: str) -> Path:
    """Where the pair of ``query`` and database image ``match`` under ``generation`` is cached."""
    return Path(run_path) / "cache" / "heatmaps" / f"{split}_gen{generation}_{method}_q{query}_m{match}.npz"


def pair_heatmaps(run_path: str | os.PathLike, generation: int, split: str, query: int, match: int, method: str,
                  query_image: ImageLike, match_image: ImageLike, image_size: tuple[int, int] | None,
                  get_model: Callable[[], NetVLADModel]) -> PairHeatmaps:
    """The heatmaps of ``query`` and database image ``match`` under a run's generation (see
    :func:`~sfrs_core.explain.heatmaps.compare_heatmaps`): from the cache when it has them, else
    computed with ``get_model()`` (only called then) and cached. A run folder that cannot be
    written to is simply not cached."""
    query_rgb, match_rgb = load_rgb(query_image, image_size), load_rgb(match_image, image_size)
    path = pair_file(run_path, generation, split, query, match, method)
    cached = load_pair(path, Path(run_path) / f"gen{generation}.pt", query_rgb, match_rgb)
    if cached is not None:
        return cached
    pair = compare_heatmaps({"model": get_model()}, query_rgb, match_rgb, method)["model"]
    with contextlib.suppress(OSError):
        save_pair(path, pair)
    return pair


def load_pair(path: Path, checkpoint: Path, query_rgb: np.ndarray, match_rgb: np.ndarray) -> PairHeatmaps | None:
    """The cached pair with the given images (as the models saw them), or None when there is no
    usable cache file (missing, unreadable, older than ``checkpoint`` or made for other image sizes)."""
    try:
        if path.stat().st_mtime < checkpoint.stat().st_mtime:
            return None
        with np.load(path) as z:
            maps = [Heatmap(z[f"{w}_image"], z[f"{w}_feature"], str(z["method"]), bool(z["signed"]),
                            float(z[f"{w}_similarity"]) if np.isfinite(z[f"{w}_similarity"]) else None,
                            json.loads(str(z[f"{w}_details"])))
                    for w in ("query", "match")]
            similarity = float(z["similarity"])
    except (OSError, ValueError, KeyError):
        return None
    if maps[0].image.shape != query_rgb.shape[:2] or maps[1].image.shape != match_rgb.shape[:2]:
        return None
    return PairHeatmaps(query=maps[0], match=maps[1], similarity=similarity, query_rgb=query_rgb,
                        match_rgb=match_rgb,
                        query_overlay=overlay(query_rgb, maps[0].image, None, 0.5, signed=maps[0].signed),
                        match_overlay=overlay(match_rgb, maps[1].image, None, 0.5, signed=maps[1].signed))


def save_pair(path: Path, pair: PairHeatmaps) -> None:
    """Write a pair's maps and similarities (atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"method": np.array(pair.query.method), "signed": np.array(pair.query.signed),
              "similarity": np.array(pair.similarity)}
    for which, heat in (("query", pair.query), ("match", pair.match)):
        arrays[f"{which}_image"] = heat.image.astype(np.float32)
        arrays[f"{which}_feature"] = heat.feature.astype(np.float32)
        arrays[f"{which}_similarity"] = np.array(np.nan if heat.similarity is None else heat.similarity)
        arrays[f"{which}_details"] = np.array(json.dumps({k: float(v) for k, v in heat.details.items()}))
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
