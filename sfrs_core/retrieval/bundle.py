"""A searchable database: a model checkpoint's descriptors of one split, in a faiss index.

Saved as a folder: ``index.faiss`` plus ``bundle.json`` (checkpoint, dataset, split, image
paths, UTM and lat/lon of every database image, and the (H, W) size the database images were
described at), so ``query`` needs nothing else. A photo is described at that same size
(:mod:`.localize`); for a bundle saved before the size was recorded, or indexed at the images'
own size, it is read from the header of a database image (:attr:`IndexBundle.image_size`).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np
import torch
from PIL import Image

from ..data.dataset import PlaceSplit
from ..io import atomic_write_bytes
from ..data.transforms import ImageTransform
from .extract import extract_descriptors, extract_to_store
from .index import IndexConfig, build_index, load_index, save_index, search


_ORIENTATION = 0x0112


def database_image_size(paths: list[str], tries: int = 3) -> tuple[int, int] | None:
    """(H, W) of the database images, upright, read from the header of the first of ``paths``
    that opens (nothing is decoded); None when none of the first ``tries`` can be read."""
    for path in paths[:tries]:
        try:
            with Image.open(path) as img:
                sideways = img.getexif().get(_ORIENTATION, 1) in (5, 6, 7, 8)
                return (img.width, img.height) if sideways else (img.height, img.width)
        except Exception:  # missing or unreadable: try the next one
            continue
    return None


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
    def build(cls, model: torch.nn.Module, split: PlaceSplit, *, image_size=None, kind: str | IndexConfig = "flat",
              batch_size: int = 32, progress: bool = True, meta: dict | None = None,
              store: str | os.PathLike | None = None, store_dtype: str = "float32") -> "IndexBundle":
        """Extract the database of ``split`` with ``model`` and index it.

        ``image_size`` (H, W) is the size the images are described at (None: their own size);
        the bundle records the size used either way (``meta["image_size"]``, from an image's
        header when None), so that a photo is described as its database was. ``kind``: "flat",
        "ivfpq" or "hnsw", or an :class:`~.index.IndexConfig` with its settings (:mod:`.index`).
        ``store`` (a folder): the descriptors go to an on-disk descriptor store there (resumed if
        interrupted) and the index is filled from it chunk by chunk, never holding the
        descriptor matrix besides the index."""
        transform = ImageTransform(image_size, model.normalization)
        if store is None:
            desc = extract_descriptors(model, split.database, transform, batch_size=batch_size, progress=progress,
                                       desc=f"{split.name} database")
        else:
            desc = extract_to_store(model, split.database, transform, store, dtype=store_dtype,
                                    batch_size=batch_size, progress=progress, desc=f"{split.name} database")
        db = split.database
        paths = [str(db.image_path(i)) for i in range(len(db))]
        size = tuple(image_size) if image_size else database_image_size(paths)
        return cls(build_index(desc, kind), paths, db.utm, db.latlon,
                   db.zone, {"split": split.name, "image_size": list(size) if size else None,
                             "image_size_from": "requested" if image_size else "database images",
                             "kind": kind if isinstance(kind, str) else kind.kind,
                             **({} if isinstance(kind, str) else {"index_config": asdict(kind)}),
                             "dim": int(desc.shape[1]), **(meta or {})})

    @property
    def image_size(self) -> tuple[int, int] | None:
        """(H, W) the database images were described at: recorded in the bundle, or (older
        bundles, indexed at the images' own size) read once from a database image's header."""
        size = self.meta.get("image_size")
        if not size:
            size = database_image_size(self.paths)
            if size is None:
                return None
            self.meta["image_size"], self.meta["image_size_from"] = list(size), "database images"
        return int(size[0]), int(size[1])

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
