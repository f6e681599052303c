"""The in-memory model of a place-recognition dataset.

A :class:`PlaceDataset` has splits (train/val/test); each :class:`PlaceSplit` has a database
and a query :class:`ImageSet` with UTM metres in one common zone. Positives are found with a
KD-tree (10 m for training, 25 m for evaluation, as in docs/design.md §1).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath

import numpy as np
from scipy.spatial import cKDTree

from .errors import DatasetError
from .geo import UtmZone, check_latlon, check_utm

TRAIN_POS_RADIUS_M = 10.0
EVAL_POS_RADIUS_M = 25.0
#: Two cameras a few metres apart whose headings differ by more than a field of view (about 65°
#: for Pittsburgh's and SynthCity's images) share next to nothing of their views.
FACING_AWAY_DEG = 65.0


def facing_away(split: "PlaceSplit", radius_m: float = TRAIN_POS_RADIUS_M, away_deg: float = FACING_AWAY_DEG) -> dict | None:
    """How many of the queries' positives within ``radius_m`` (by their GPS tags) look at another
    scene (headings more than ``away_deg`` apart): the paper's first challenge, that a GPS
    positive need not show the query's place. None when headings are unknown."""
    hq, hd = split.queries.heading, split.database.heading
    if hq is None or hd is None or np.isnan(hq).any() or np.isnan(hd).any():
        return None
    pairs = away = all_away = with_pos = 0
    for q, pos in enumerate(split.positives(radius_m)):
        if len(pos) == 0:
            continue
        diff = np.abs((hd[pos] - hq[q] + 180.0) % 360.0 - 180.0) > away_deg
        pairs, away = pairs + len(pos), away + int(diff.sum())
        with_pos += 1
        all_away += bool(diff.all())
    return {"radius_m": radius_m, "away_deg": away_deg, "pairs": pairs,
            "share_away": round(away / pairs, 4) if pairs else None,
            "queries_all_away": round(all_away / with_pos, 4) if with_pos else None}
SPLIT_NAMES = ("train", "val", "test")


def safe_relpath(name: str, source: str | os.PathLike) -> str:
    """Return ``name`` as a normalised relative POSIX path, refusing ones that leave the root.

    Absolute paths, drive letters and ``..`` components that climb out of the dataset root
    raise :class:`DatasetError` naming ``source``.
    """
    text = str(name).strip().replace("\\", "/")
    if not text:
        raise DatasetError(source, "empty image file name")
    posix = PurePosixPath(text)
    if posix.is_absolute() or re.match(r"^[A-Za-z]:/", text):
        raise DatasetError(source, f"image name {name!r} is an absolute path; names must be relative to the dataset root")
    parts: list[str] = []
    for part in posix.parts:
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise DatasetError(source, f"image name {name!r} escapes the dataset root")
            parts.pop()
        else:
            parts.append(part)
    if not parts:
        raise DatasetError(source, f"image name {name!r} names no file")
    return "/".join(parts)


@dataclass(eq=False)
class ImageSet:
    """Images of one role (database or queries) of one split.

    ``paths`` are relative to ``root``; ``utm`` is (N, 2) easting/northing in metres of
    ``zone``; ``latlon`` (N, 2) degrees; ``heading`` (N,) degrees, NaN when unknown;
    ``condition`` an optional per-image tag (day/dusk/night...); ``label_root`` where
    per-pixel semantic label PNGs with the same relative names live, if any. ``groups`` an
    optional (N,) integer id of the place each image shows, for spatial NMS at evaluation
    (images with one id are views of one place; Tokyo 24/7: the folder its name is listed in);
    None means "group by identical position" (``sfrs_core.retrieval.metrics.nms_groups``).
    """

    root: Path
    paths: list[str]
    utm: np.ndarray
    zone: UtmZone
    latlon: np.ndarray
    heading: np.ndarray | None = None
    condition: list[str] | None = None
    label_root: Path | None = None
    source: str = ""
    groups: np.ndarray | None = None

    def __post_init__(self) -> None:
        source = self.source or str(self.root)
        self.root = Path(self.root)
        self.utm = np.asarray(self.utm, dtype=np.float64).reshape(-1, 2)
        self.latlon = np.asarray(self.latlon, dtype=np.float64).reshape(-1, 2)
        n = len(self.paths)
        if self.utm.shape[0] != n or self.latlon.shape[0] != n:
            raise DatasetError(
                source,
                f"counts disagree: {n} image names, {self.utm.shape[0]} UTM positions, "
                f"{self.latlon.shape[0]} lat/lon positions",
            )
        if self.heading is not None:
            self.heading = np.asarray(self.heading, dtype=np.float64).reshape(-1)
            if self.heading.shape[0] != n:
                raise DatasetError(source, f"counts disagree: {n} images but {self.heading.shape[0]} headings")
        if self.condition is not None and len(self.condition) != n:
            raise DatasetError(source, f"counts disagree: {n} images but {len(self.condition)} conditions")
        if self.groups is not None:
            groups = np.asarray(self.groups)
            if groups.ndim != 1 or groups.shape[0] != n:
                raise DatasetError(source, f"counts disagree: {n} images but {groups.size} place groups")
            if n and (groups.dtype.kind not in "iu" or groups.min() < 0):
                raise DatasetError(source, "place groups must be non-negative integers")
            self.groups = groups.astype(np.int64, copy=False)
        if n:
            check_utm(self.utm[:, 0], self.utm[:, 1], source)
            check_latlon(self.latlon[:, 0], self.latlon[:, 1], source)

    def __len__(self) -> int:
        return len(self.paths)

    def image_path(self, i: int) -> Path:
        """Absolute path of image ``i``."""
        return self.root / self.paths[i]

    def label_path(self, i: int) -> Path | None:
        """Path of the semantic label PNG of image ``i``, or None when the dataset has none."""
        if self.label_root is None:
            return None
        return (self.label_root / self.paths[i]).with_suffix(".png")


@dataclass(eq=False)
class PlaceSplit:
    """One split: a database and queries over the same area."""

    name: str
    database: ImageSet
    queries: ImageSet
    source: str = ""
    _positives: dict[float, list[np.ndarray]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        source = self.source or str(self.database.root)
        if len(self.database) == 0:
            raise DatasetError(source, f"split {self.name!r} has no database images")
        if len(self.queries) == 0:
            raise DatasetError(source, f"split {self.name!r} has no query images")
        if self.database.zone != self.queries.zone:
            raise DatasetError(
                source,
                f"split {self.name!r}: database in UTM zone {self.database.zone}, queries in {self.queries.zone}",
            )

    @cached_property
    def _db_tree(self) -> cKDTree:
        return cKDTree(self.database.utm)

    def positives(self, radius_m: float) -> list[np.ndarray]:
        """Database indices within ``radius_m`` metres of each query, nearest first."""
        key = float(radius_m)
        if key not in self._positives:
            found = self._db_tree.query_ball_point(self.queries.utm, r=key)
            result = []
            for q, idx in enumerate(found):
                idx = np.asarray(idx, dtype=np.int64)
                d = np.linalg.norm(self.database.utm[idx] - self.queries.utm[q], axis=1)
                result.append(idx[np.lexsort((idx, d))])
            self._positives[key] = result
        return self._positives[key]

    @property
    def train_positives(self) -> list[np.ndarray]:
        """Positives for training: database images within 10 m."""
        return self.positives(TRAIN_POS_RADIUS_M)

    @property
    def eval_positives(self) -> list[np.ndarray]:
        """Positives for evaluation: database images within 25 m."""
        return self.positives(EVAL_POS_RADIUS_M)

    def distances_m(self, query: int, db_indices: np.ndarray) -> np.ndarray:
        """Metres between query ``query`` and the given database images."""
        return np.linalg.norm(self.database.utm[np.asarray(db_indices)] - self.queries.utm[query], axis=-1)


@dataclass(eq=False)
class PlaceDataset:
    """A named dataset with its splits, as read by one of the format readers."""

    name: str
    root: Path
    splits: dict[str, PlaceSplit]
    format: str

    def __getitem__(self, split: str) -> PlaceSplit:
        if split not in self.splits:
            raise KeyError(f"dataset {self.name!r} has no split {split!r}; it has {sorted(self.splits)}")
        return self.splits[split]

    def summary(self) -> dict:
        """Counts per split, area covered (metres, km²) and positives per query."""
        out: dict = {"name": self.name, "root": str(self.root), "format": self.format, "splits": {}}
        for name, split in self.splits.items():
            xy = np.vstack([split.database.utm, split.queries.utm])
            extent = xy.max(axis=0) - xy.min(axis=0)
            pos = np.array([len(p) for p in split.eval_positives])
            entry = {
                "database": len(split.database),
                "queries": len(split.queries),
                "utm_zone": f"{split.database.zone[0]}{split.database.zone[1]}",
                "extent_m": [round(float(extent[0]), 1), round(float(extent[1]), 1)],
                "area_km2": round(float(extent[0] * extent[1]) / 1e6, 4),
                "center_latlon": [round(float(v), 6) for v in split.database.latlon.mean(axis=0)],
                "positives_25m": {
                    "mean": round(float(pos.mean()), 2),
                    "min": int(pos.min()),
                    "max": int(pos.max()),
                    "queries_without": int((pos == 0).sum()),
                },
            }
            away = facing_away(split)
            if away is not None:
                entry["positives_10m_facing_away"] = away
            if split.queries.condition is not None:
                tags, counts = np.unique(np.asarray(split.queries.condition), return_counts=True)
                entry["query_conditions"] = {str(t): int(c) for t, c in zip(tags, counts)}
            out["splits"][name] = entry
        return out
