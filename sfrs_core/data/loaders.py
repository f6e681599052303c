"""One entry point for every dataset format, with auto-detection."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .dataset import PlaceDataset
from .errors import DatasetError
from .exif_folder import read_exif_folder
from .images import is_image_name
from .pittsburgh import find_pittsburgh_mats, read_pittsburgh
from .tokyo import read_tokyo247_mat
from .vpr_folder import read_vpr_folder

FORMATS = ("vpr_folder", "pittsburgh", "tokyo247", "exif")
#: Folders and files looked at, at most, while searching a folder for a first photo (format
#: detection): a path such as a home folder or a disk's root gives an error in a second or so,
#: not a walk of every file on the machine.
DETECT_WALK_LIMIT = 200_000


def _find_tokyo_mat(folder: Path) -> Path | None:
    for place in (folder, folder / "datasets"):
        candidates = sorted(place.glob("tokyo*.mat")) if place.is_dir() else []
        preferred = [p for p in candidates if p.name.lower() == "tokyo247.mat"]
        if preferred or candidates:
            return (preferred or candidates)[0]
    return None


def _has_photos(folder: Path, limit: int | None = None) -> bool:
    limit, seen = DETECT_WALK_LIMIT if limit is None else limit, 0
    for _, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if any(is_image_name(n) and not n.startswith(".") for n in filenames):
            return True
        seen += len(dirnames) + len(filenames)
        if seen > limit:
            raise DatasetError(folder, f"unknown dataset format: no images/ folder, no .mat file, and no photo "
                                       f"among the first {limit:,} entries searched; is this the dataset's folder?")
    return False


def detect_format(path: str | os.PathLike) -> str:
    """Name of the format of ``path`` (one of :data:`FORMATS`); unknown raises :class:`DatasetError`.

    A folder with ``images/`` is the VPR folder format; ``tokyo*.mat`` is Tokyo 24/7; any other
    .mat, or a folder with ``pitts*.mat`` (directly or in ``datasets/``), is Pittsburgh; a folder
    with ``tokyo*.mat`` (directly or in ``datasets/``) is Tokyo 24/7; any other folder holding
    photos is read for EXIF GPS.
    """
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() != ".mat":
            raise DatasetError(path, "unknown dataset format: not a folder and not a .mat file")
        return "tokyo247" if path.name.lower().startswith("tokyo") else "pittsburgh"
    if not path.is_dir():
        raise DatasetError(path, "dataset path not found")
    if (path / "images").is_dir():
        return "vpr_folder"
    if find_pittsburgh_mats(path):
        return "pittsburgh"
    if _find_tokyo_mat(path) is not None:
        return "tokyo247"
    if _has_photos(path):
        return "exif"
    raise DatasetError(
        path, "unknown dataset format: no images/ folder, no pitts*.mat or tokyo*.mat, no photos"
    )


def load_dataset(path: str | os.PathLike, format: str | None = None, **kwargs) -> PlaceDataset:
    """Read the dataset at ``path``; ``format`` (one of :data:`FORMATS`) skips detection.

    ``kwargs`` go to the format's reader (e.g. ``splits``, ``check_files``, ``query_folder``).
    """
    path = Path(path)
    fmt = format if format is not None else detect_format(path)
    readers: dict[str, Callable[..., PlaceDataset]] = {
        "vpr_folder": read_vpr_folder,
        "pittsburgh": read_pittsburgh,
        "tokyo247": _read_tokyo,
        "exif": read_exif_folder,
    }
    if fmt not in readers:
        raise DatasetError(path, f"unknown dataset format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return readers[fmt](path, **kwargs)


def _read_tokyo(path: Path, **kwargs) -> PlaceDataset:
    if path.is_dir():
        mat = _find_tokyo_mat(path)
        if mat is None:
            raise DatasetError(path, "no tokyo*.mat file here or in its datasets/ folder")
        path = mat
    return read_tokyo247_mat(path, **kwargs)
