"""Pittsburgh 30k / 250k (Torii et al.; NetVLAD split files ``pitts{30k,250k}_{train,val,test}.mat``).

Usual layout: ``ROOT/datasets/pitts30k_test.mat``, database images ``ROOT/000/000000_pitch1_yaw1.jpg``,
queries ``ROOT/queries_real/000/...``. The files carry UTM metres but no zone: Pittsburgh is 17T.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from ._matstruct import read_split
from .dataset import SPLIT_NAMES, PlaceDataset, PlaceSplit
from .errors import DatasetError
from .geo import UtmZone

log = logging.getLogger(__name__)

PITTSBURGH_ZONE: UtmZone = (17, "T")
QUERY_DIRS = ("queries_real",)
_MAT_NAME = re.compile(r"^pitts(?P<variant>[0-9a-z]*)_(?P<split>train|val|test)\.mat$", re.IGNORECASE)


def read_pittsburgh_mat(
    mat_path: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    query_root: str | os.PathLike | None = None,
    check_files: bool = True,
    utm_zone: UtmZone = PITTSBURGH_ZONE,
) -> PlaceDataset:
    """Read one Pittsburgh split file into a one-split :class:`PlaceDataset`.

    ``image_root`` defaults to the .mat's folder (its parent when that is ``datasets/``);
    ``query_root`` to ``image_root/queries_real`` when it exists, else ``image_root``. With
    ``check_files`` every listed image must exist.
    """
    split, root = read_split(mat_path, utm_zone, image_root, query_root, QUERY_DIRS, check_files)
    return PlaceDataset(name=_dataset_name(Path(mat_path)), root=root, splits={split.name: split}, format="pittsburgh")


def _dataset_name(mat_path: Path) -> str:
    match = _MAT_NAME.match(mat_path.name)
    return f"pitts{match['variant'].lower()}" if match else mat_path.stem


def find_pittsburgh_mats(folder: str | os.PathLike) -> dict[str, dict[str, Path]]:
    """``{variant: {split: path}}`` of the ``pitts*_{split}.mat`` files in ``folder`` or ``folder/datasets``."""
    folder = Path(folder)
    found: dict[str, dict[str, Path]] = {}
    for place in (folder, folder / "datasets"):
        if not place.is_dir():
            continue
        for path in sorted(place.iterdir()):
            match = _MAT_NAME.match(path.name)
            if match and path.is_file():
                found.setdefault(match["variant"].lower(), {}).setdefault(match["split"].lower(), path)
    return found


def read_pittsburgh(
    root_or_mat: str | os.PathLike,
    splits: tuple[str, ...] | list[str] | None = None,
    variant: str | None = None,
    image_root: str | os.PathLike | None = None,
    query_root: str | os.PathLike | None = None,
    check_files: bool = True,
    utm_zone: UtmZone = PITTSBURGH_ZONE,
) -> PlaceDataset:
    """Read Pittsburgh from one .mat file or from a folder of ``pitts*_{split}.mat`` files.

    In a folder (or its ``datasets/`` subfolder), ``splits`` defaults to every split found and
    ``variant`` ("30k", "250k") to the only one present, or "30k" when both are (the NetVLAD
    ``datasets`` archive ships both). The splits are merged into one :class:`PlaceDataset`.
    """
    path = Path(root_or_mat)
    if path.is_file() or path.suffix.lower() == ".mat":
        ds = read_pittsburgh_mat(path, image_root, query_root, check_files, utm_zone)
        if splits is not None and set(splits) != set(ds.splits):
            raise DatasetError(path, f"file holds split(s) {sorted(ds.splits)}, not the requested {list(splits)}")
        return ds
    if not path.is_dir():
        raise DatasetError(path, "folder not found")
    found = find_pittsburgh_mats(path)
    if not found:
        raise DatasetError(path, "no pitts*_{train,val,test}.mat files here or in its datasets/ folder")
    if variant is None:
        variant = next(iter(found)) if len(found) == 1 else ("30k" if "30k" in found else sorted(found)[0])
        if len(found) > 1:
            log.info("%s: found Pittsburgh variants %s; reading pitts%s", path, sorted(found), variant)
    variant = variant.lower().removeprefix("pitts")
    if variant not in found:
        raise DatasetError(path, f"no pitts{variant}_*.mat files; found variants {sorted(found)}")
    files = found[variant]
    wanted = list(splits) if splits is not None else [s for s in SPLIT_NAMES if s in files]
    merged: dict[str, PlaceSplit] = {}
    root = None
    for split in wanted:
        if split not in files:
            raise DatasetError(path, f"split file pitts{variant}_{split}.mat not found here or in datasets/")
        ds = read_pittsburgh_mat(files[split], image_root, query_root, check_files, utm_zone)
        if split not in ds.splits:
            raise DatasetError(files[split], f"whichSet is {sorted(ds.splits)[0]!r} but the file name says {split!r}")
        merged[split] = ds.splits[split]
        root = root or ds.root
    return PlaceDataset(name=f"pitts{variant}", root=root, splits=merged, format="pittsburgh")
