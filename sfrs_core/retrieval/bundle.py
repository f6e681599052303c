"""A searchable database: a model checkpoint's descriptors of one split, in a faiss index.

Saved as a folder: ``index.faiss`` plus ``bundle.json`` (checkpoint, dataset, split, image
paths, UTM and lat/lon of every database image), so ``query`` needs nothing else.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import torch

from ..data.dataset import PlaceSplit
from ..io import atomic_write_bytes
from ..data.transforms import ImageTransform
from .extract import extract_descriptors
from .index import build_index, load_index, save_index, search


@dataclass
class Match:
    """One retrieved database image."""

    rank: int
    db_index: int
    path: str
    similarity: float
    utm: tuple[float, float]
    latlon: tuple[float, float]


@dataclass
class IndexBundle:
    index: faiss.Index
    paths: list[str]
    utm: np.ndarray
    latlon: np.ndarray
    zone: tuple[int, str]
    meta: dict

    @classmethod
    def build(cls, model: torch.nn.Module, split: PlaceSplit, *, image_size=None, kind: str = "flat",
              batch_size: int = 32, progress: bool = True, meta: dict | None = None) -> "IndexBundle":
        """Extract the database of ``split`` with ``model`` and index it."""
        transform = ImageTransform(image_size, model.normalization)
        desc = extract_descriptors(model, split.database, transform, batch_size=batch_size, progress=progress,
                                   desc=f"{split.name} database")
        db = split.database
        return cls(build_index(desc, kind), [str(db.image_path(i)) for i in range(len(db))], db.utm, db.latlon,
                   db.zone, {"split": split.name, "image_size": list(image_size) if image_size else None,
                             "kind": kind, "dim": int(desc.shape[1]), **(meta or {})})

    def save(self, folder: str | os.PathLike) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_index(self.index, folder / "index.faiss")
        data = {"meta": self.meta, "zone": list(self.zone), "paths": self.paths,
                "utm": self.utm.tolist(), "latlon": self.latlon.tolist()}
        atomic_write_bytes(folder / "bundle.json", json.dumps(data).encode())
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "IndexBundle":
        folder = Path(folder)
        if not (folder / "bundle.json").is_file():
            raise FileNotFoundError(f"{folder}: no bundle.json; build one with `python -m sfrs_core index`")
        data = json.loads((folder / "bundle.json").read_text())
        return cls(load_index(folder / "index.faiss"), data["paths"], np.asarray(data["utm"]), np.asarray(data["latlon"]),
                   (int(data["zone"][0]), str(data["zone"][1])), data["meta"])

    def search(self, descriptors: np.ndarray, k: int = 5) -> list[list[Match]]:
        """Top-``k`` matches of each descriptor row."""
        sims, ids = search(self.index, np.atleast_2d(descriptors), k)
        return [[Match(r + 1, int(i), self.paths[i], float(s), tuple(self.utm[i]), tuple(self.latlon[i]))
                 for r, (s, i) in enumerate(zip(srow, irow)) if i >= 0] for srow, irow in zip(sims, ids)]
