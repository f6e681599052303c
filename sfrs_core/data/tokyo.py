"""Tokyo 24/7 (Torii et al., CVPR 2015) from the NetVLAD ``tokyo247.mat`` (TokyoTM files read too).

Usual layout: ``ROOT/datasets/tokyo247.mat``, database ``ROOT/<dbImageFns>`` (e.g.
``03814/381433427_...jpg``), queries ``ROOT/247query_v3/<qImageFns>``. UTM zone 54S. The
database tar files hold ``.png`` images while the .mat lists ``.jpg`` names; with
``check_files`` a missing ``.jpg`` whose ``.png`` twin exists is read as the ``.png``.

Query conditions (day / sunset / night) fill ``ImageSet.condition`` only when the struct says
so explicitly: a per-query text field (``qCondition``, ``qConditions``, ``qTimeOfDay``) or
``qTimeStamp`` entries that are the words themselves. The NetVLAD ``tokyo247.mat`` has neither
(and TokyoTM's numeric time stamps are capture dates, not times of day), so for it the
condition stays ``None``.

Database images are grouped into places by the folder their name is listed in (``03814/...``
-> place ``03814``), as OpenIBL groups Tokyo 24/7's database for its spatial NMS; the ids fill
``ImageSet.groups`` (first-listed folder = 0).
"""
from __future__ import annotations

import os
import posixpath
from dataclasses import replace
from pathlib import Path

import numpy as np

from ._matstruct import DbStruct, read_split
from .dataset import PlaceDataset
from .errors import DatasetError, short_repr
from .geo import UtmZone

TOKYO_ZONE: UtmZone = (54, "S")
QUERY_DIRS = ("247query_v3", "247query_subset_v2")
ALT_SUFFIXES = (".png",)
CONDITION_FIELDS = ("qCondition", "qConditions", "qTimeOfDay")
_CONDITION_WORDS = {
    "day": "day", "d": "day", "daytime": "day",
    "sunset": "sunset", "s": "sunset", "dusk": "sunset", "evening": "sunset",
    "night": "night", "n": "night", "nighttime": "night",
}


def _normalise(words: list[str]) -> list[str | None]:
    return [_CONDITION_WORDS.get(w.strip().lower()) for w in words]


def query_conditions(st: DbStruct, n_queries: int) -> list[str] | None:
    """Per-query 'day'/'sunset'/'night' from an explicit struct field, or None when unknown."""
    for field in CONDITION_FIELDS:
        if field in st.fields:
            words = st.strings(field)
            tags = _normalise(words)
            if len(tags) != n_queries:
                raise DatasetError(st.path, f"counts disagree: {n_queries} queries but {len(tags)} entries in {field}")
            for i, (word, tag) in enumerate(zip(words, tags)):
                if tag is None:
                    raise DatasetError(st.path, f"{field} entry {i + 1} {short_repr(word)} is not day, sunset or night")
            return tags  # type: ignore[return-value]
    stamps = st.fields.get("qTimeStamp")
    if stamps is not None and np.asarray(stamps).dtype.kind in "UO":
        try:
            tags = _normalise(st.strings("qTimeStamp"))
        except DatasetError:
            return None
        if len(tags) == n_queries and all(tags):
            return tags  # type: ignore[return-value]
    return None


def folder_groups(names: list[str]) -> np.ndarray:
    """Per-name integer id of the folder each (relative, POSIX) name lies in, numbered in order
    of first appearance; names directly under the root share the folder ``""``."""
    ids: dict[str, int] = {}
    return np.array([ids.setdefault(posixpath.dirname(n), len(ids)) for n in names], dtype=np.int64)


def read_tokyo247_mat(
    mat_path: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    query_root: str | os.PathLike | None = None,
    check_files: bool = True,
    utm_zone: UtmZone = TOKYO_ZONE,
) -> PlaceDataset:
    """Read ``tokyo247.mat`` (or a TokyoTM split file) into a one-split :class:`PlaceDataset`.

    ``image_root`` defaults to the .mat's folder (its parent when that is ``datasets/``);
    ``query_root`` to ``image_root/247query_v3`` (or ``247query_subset_v2``) when it exists.
    The database's ``groups`` are its folders (:func:`folder_groups`).
    """
    split, root = read_split(
        mat_path, utm_zone, image_root, query_root, QUERY_DIRS, check_files, ALT_SUFFIXES, query_conditions
    )
    split.database = replace(split.database, groups=folder_groups(split.database.paths))
    return PlaceDataset(name=Path(mat_path).stem, root=root, splits={split.name: split}, format="tokyo247")
