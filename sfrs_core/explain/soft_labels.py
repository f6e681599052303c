"""Region soft labels across generations (docs/design.md §1 "Generations").

The teacher of generation g (the model of generation g−1) turns its similarities between a
query's global descriptor and the 9 regions of each of k difficult positives into a target
distribution ``softmax(s / τ_g)`` over the k×9 entries; the student (generation g) predicts
``softmax(s / τ0)``. Training saves, after each generation g, the distributions that model
gives as a teacher to generation g+1 on fixed validation queries (``soft_labels/gen{g}.npz``);
:func:`recompute` gives the same for any query on demand.
"""
from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.dataset import PlaceSplit
from ..data.transforms import ImageTransform
from ..io import atomic_write_json
from ..losses import TAU0, region_similarities
from ..models.model import NetVLADModel
from ..models.regions import REGION_NAMES, region_boxes


@dataclass
class SoftLabels:
    """Soft labels of one generation for some queries: arrays of shape (Q, k, 9)."""

    generation: int
    temperature: float
    queries: np.ndarray  # (Q,) query indices of ``split``
    positives: np.ndarray  # (Q, k) database indices
    similarities: np.ndarray  # (Q, k, 9)
    distributions: np.ndarray  # (Q, k, 9), each query's k×9 entries sum to 1
    split: str = "val"

    @property
    def entropy(self) -> np.ndarray:
        """Entropy (nats) of each query's k×9 distribution."""
        return entropy(self.distributions)

    @property
    def top_mass(self) -> np.ndarray:
        """Probability of the single most likely region of each query."""
        return top_mass(self.distributions)


def softmax(sims: np.ndarray, temperature: float) -> np.ndarray:
    """Softmax over each query's flattened k×9 similarities."""
    flat = np.asarray(sims, dtype=np.float64).reshape(len(sims), -1) / temperature
    flat = np.exp(flat - flat.max(axis=1, keepdims=True))
    return (flat / flat.sum(axis=1, keepdims=True)).reshape(np.shape(sims))


def entropy(dist: np.ndarray) -> np.ndarray:
    """Entropy in nats of each row's distribution (flattened per query)."""
    flat = np.asarray(dist, dtype=np.float64).reshape(len(dist), -1)
    return -(flat * np.log(np.clip(flat, 1e-300, None))).sum(axis=1)


def top_mass(dist: np.ndarray, m: int = 1) -> np.ndarray:
    """Summed probability of each query's ``m`` most likely entries."""
    flat = np.sort(np.asarray(dist).reshape(len(dist), -1), axis=1)
    return flat[:, -m:].sum(axis=1)


def load_snapshots(run_dir: str | Path) -> list[SoftLabels]:
    """The soft-label snapshots a training run saved, by generation."""
    out = []
    for path in sorted(Path(run_dir).glob("soft_labels/gen*.npz"), key=lambda p: int(p.stem[3:])):
        with np.load(path, allow_pickle=False) as z:
            out.append(SoftLabels(int(z["generation"]), float(z["temperature"]), z["queries"], z["positives"],
                                  z["similarities"], z["soft_labels"], str(z["split"])))
    return out


@torch.no_grad()
def region_similarity_matrix(model: NetVLADModel, query: torch.Tensor, positives: torch.Tensor) -> np.ndarray:
    """``sim(q_global, p_i^r)`` as a k×9 array for one query image and k positive images
    (normalised tensors), without PCA, as in training."""
    model.eval()
    q = model(query.unsqueeze(0), use_pca=False)
    regions = model.regions(positives, use_pca=False).unsqueeze(0)  # 1 × k × 9 × L
    return region_similarities(q, regions).view(len(positives), len(REGION_NAMES)).cpu().numpy()


def gps_positives(split: PlaceSplit, query: int, k: int, radius_m: float = 10.0) -> np.ndarray:
    """The ``k`` database images nearest the query within ``radius_m`` (repeated if fewer),
    the fixed positives the snapshots use so that generations are comparable."""
    pos = split.positives(radius_m)[query]
    if len(pos) == 0:
        raise ValueError(f"query {query} of split {split.name!r} has no database image within {radius_m} m")
    return np.resize(pos, k)


def recompute(models: list[NetVLADModel], temperatures: list[float], split: PlaceSplit, query: int,
              positives: np.ndarray | None = None, k: int = 10, image_size: tuple[int, int] | None = None) -> dict:
    """Teacher and student soft labels of every generation for one query, on demand.

    ``models[g]`` is generation g; ``temperatures[g]`` the teacher temperature of generation g.
    Returns ``{"positives", "similarities" (G, k, 9), "teacher" {g: (k, 9)} for g ≥ 1 (model g−1
    at τ_g), "student" {g: (k, 9)} (model g at τ0)}``.
    """
    positives = gps_positives(split, query, k) if positives is None else np.asarray(positives)
    sims = []
    for model in models:
        tf = ImageTransform(image_size, model.normalization)
        q = tf(split.queries.image_path(query))
        p = torch.stack([tf(split.database.image_path(int(i))) for i in positives])
        sims.append(region_similarity_matrix(model, q, p))
    sims = np.stack(sims)
    teacher = {g: softmax(sims[g - 1][None], temperatures[min(g, len(temperatures) - 1)])[0] for g in range(1, len(models))}
    student = {g: softmax(sims[g][None], TAU0)[0] for g in range(len(models))}
    return {"positives": positives, "similarities": sims, "teacher": teacher, "student": student}


@torch.no_grad()
def feature_size(model: NetVLADModel, image_hw: tuple[int, int]) -> tuple[int, int]:
    """Height and width of the trunk's feature map for an ``image_hw`` input (what the regions split)."""
    device = next(model.parameters()).device
    h, w = model.features(torch.zeros(1, 3, *image_hw, device=device)).shape[-2:]
    return int(h), int(w)


def cached_feature_size(run_path: str | Path, generation: int, image_hw: tuple[int, int],
                        get_model: Callable[[], NetVLADModel]) -> tuple[int, int]:
    """:func:`feature_size` of a run's generation, kept in ``<run>/cache/feature_size.json`` (a
    page that draws the regions then needs neither the checkpoint nor a forward pass); measured
    with ``get_model()`` (only called then) when the file has no entry newer than the checkpoint."""
    path = Path(run_path) / "cache" / "feature_size.json"
    checkpoint = Path(run_path) / f"gen{generation}.pt"
    key = f"gen{generation}_{image_hw[0]}x{image_hw[1]}"
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        entries = {}
    entry = entries.get(key) if isinstance(entries, dict) else None
    with contextlib.suppress(OSError, TypeError, ValueError, KeyError):
        if entry["checkpoint_mtime"] == checkpoint.stat().st_mtime:
            return int(entry["hw"][0]), int(entry["hw"][1])
    hw = feature_size(get_model(), image_hw)
    with contextlib.suppress(OSError):
        entries = entries if isinstance(entries, dict) else {}
        entries[key] = {"hw": list(hw), "checkpoint_mtime": checkpoint.stat().st_mtime}
        atomic_write_json(path, entries)
    return hw


def image_region_boxes(image_hw: tuple[int, int], feature_hw: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """The 9 regions as pixel boxes ``(x0, y0, x1, y1)`` of an image, in ``REGION_NAMES`` order.

    Regions split the feature map at ``h // 2`` and ``w // 2``; the split line is mapped to the
    image by the feature map's scale.
    """
    H, W = image_hw
    h, w = feature_hw
    sy, sx = H / h, W / w
    return [(round(c0 * sx), round(r0 * sy), round(c1 * sx), round(r1 * sy)) for r0, r1, c0, c1 in region_boxes(h, w)]


REGION_COLOURS = ((255, 255, 255), (230, 80, 60), (60, 120, 230), (240, 180, 30), (60, 180, 90),
                  (200, 90, 200), (90, 200, 220), (250, 140, 60), (140, 140, 255))


def draw_regions(image_rgb: np.ndarray, feature_hw: tuple[int, int], weights: np.ndarray | None = None,
                 regions: list[int] | None = None, line_px: int = 2) -> np.ndarray:
    """The image with the outlines of the 9 regions (or ``regions``) drawn on it.

    ``weights`` (9 values, e.g. one positive's soft labels) tint each region in proportion to
    its weight (the largest weight gets a 45 % tint); outlines use one colour per region.
    """
    from PIL import Image, ImageDraw

    img = Image.fromarray(np.asarray(image_rgb, dtype=np.uint8)).convert("RGBA")
    boxes = image_region_boxes((img.height, img.width), feature_hw)
    chosen = range(len(boxes)) if regions is None else regions
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    top = float(np.max(weights)) if weights is not None and np.max(weights) > 0 else 1.0
    for r in chosen:
        x0, y0, x1, y1 = boxes[r]
        colour = REGION_COLOURS[r]
        if weights is not None:
            draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=colour + (int(115 * float(weights[r]) / top),))
        inset = line_px * (0 if r == 0 else 1 if r <= 4 else 2)  # global, halves, quarters: nested outlines
        draw.rectangle([x0 + inset, y0 + inset, x1 - 1 - inset, y1 - 1 - inset], outline=colour + (255,), width=line_px)
    return np.asarray(Image.alpha_composite(img, layer).convert("RGB"))
