"""A user's own photos with EXIF GPS as a place dataset.

Database: every photo under ``folder`` (recursively; hidden files and folders skipped) except
those under the query folder. Queries: ``query_folder`` when given, else ``folder/queries``
when it exists; with neither the read fails, since a photo cannot be its own query. Positions
come from the EXIF GPS block (degrees/minutes/seconds + N/S/E/W refs), headings from
``GPSImgDirection`` when present; all photos are projected to one common UTM zone (that of
the median position). A position of exactly 0,0 (a camera's "no fix") counts as no GPS.
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np

from .dataset import SPLIT_NAMES, ImageSet, PlaceDataset, PlaceSplit
from .errors import DatasetError, short_repr
from .geo import UtmZone, check_latlon, latlon_to_utm
from .images import checked_image, is_image_name

log = logging.getLogger(__name__)

GPS_IFD = 0x8825
LAT_REF, LAT, LON_REF, LON, DIRECTION = 1, 2, 3, 4, 17  # GPS IFD tags
Fix = tuple[float, float, float]  # lat, lon, heading (NaN when unknown)


def list_photos(folder: Path, exclude: Path | None = None) -> list[str]:
    """Sorted relative POSIX paths of the images under ``folder``, skipping ``exclude`` and hidden entries."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and (exclude is None or (here / d).resolve() != exclude)
        )
        for name in filenames:
            if not name.startswith(".") and is_image_name(name):
                out.append((here / name).relative_to(folder).as_posix())
    return sorted(out)


def _text(value: object) -> str:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return str(value).strip("\x00 ").upper()


def _degrees(value: object, ref: object, axis: str, path: Path) -> float:
    refs = ("N", "S") if axis == "latitude" else ("E", "W")
    try:
        parts = [float(v) for v in (value if isinstance(value, (tuple, list)) else (value,))]
    except (TypeError, ValueError, ZeroDivisionError):
        raise DatasetError(path, f"bad GPS {axis}: {short_repr(value)} is not degrees/minutes/seconds") from None
    if not 1 <= len(parts) <= 3 or not all(math.isfinite(p) for p in parts):
        raise DatasetError(path, f"bad GPS {axis}: {short_repr(value)} (NaN or not degrees/minutes/seconds)")
    if any(p < 0 for p in parts) or any(p >= 60 for p in parts[1:]):
        raise DatasetError(path, f"bad GPS {axis}: {short_repr(value)} (negative, or minutes/seconds not below 60)")
    ref_text = _text(ref) if ref is not None else ""
    if ref_text not in refs:
        raise DatasetError(path, f"bad GPS {axis} reference {short_repr(ref)}; expected {' or '.join(refs)}")
    deg = sum(p / 60**i for i, p in enumerate(parts))
    limit = 90.0 if axis == "latitude" else 180.0
    if deg > limit:
        raise DatasetError(path, f"bad GPS {axis}: {deg:.6f} degrees is out of range (max {limit:g})")
    return -deg if ref_text == refs[1] else deg


def read_gps(path: str | os.PathLike, decode: bool = True) -> Fix | None:
    """(lat, lon, heading) of one photo from its EXIF GPS, or None when it has no GPS position.

    Unreadable images and bad GPS values raise :class:`DatasetError` naming the file. With
    ``decode`` the image data is decoded too (JPEGs at 1/8 scale), so truncated files fail here.
    """
    path = Path(path)
    with checked_image(path) as img:
        gps = dict(img.getexif().get_ifd(GPS_IFD))
        if decode:
            img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
            img.load()
    if LAT not in gps or LON not in gps:
        return None
    lat = _degrees(gps[LAT], gps.get(LAT_REF), "latitude", path)
    lon = _degrees(gps[LON], gps.get(LON_REF), "longitude", path)
    if lat == 0.0 and lon == 0.0:
        return None
    heading = math.nan
    if DIRECTION in gps:
        try:
            heading = float(gps[DIRECTION])
        except (TypeError, ValueError, ZeroDivisionError):
            heading = math.nan
        heading = heading % 360.0 if math.isfinite(heading) and 0 <= heading <= 360 else math.nan
    return lat, lon, heading


def _read_fixes(folder: Path, names: list[str], skip_missing_gps: bool) -> tuple[list[str], np.ndarray]:
    kept, fixes, missing = [], [], []
    for name in names:
        fix = read_gps(folder / name)
        if fix is None:
            if not skip_missing_gps:
                raise DatasetError(
                    folder / name, "photo has no EXIF GPS position (pass skip_missing_gps=True to skip such photos)"
                )
            missing.append(name)
        else:
            check_latlon(fix[0], fix[1], folder / name)
            if fix[0] < -80.0:  # check_latlon lets -84..-80 through, but UTM stops at 80 S
                raise DatasetError(folder / name, f"latitude {fix[0]:.6f} is out of range of UTM (80 S..84 N)")
            kept.append(name)
            fixes.append(fix)
    if missing:
        log.warning("%s: skipped %d photo(s) without EXIF GPS, e.g. %s", folder, len(missing), ", ".join(missing[:3]))
    return kept, np.asarray(fixes, dtype=np.float64).reshape(-1, 3)


def _image_set(folder: Path, names: list[str], fixes: np.ndarray, zone: UtmZone) -> ImageSet:
    east, north, zone = latlon_to_utm(fixes[:, 0], fixes[:, 1], zone)
    far = ~((east >= 100_000) & (east <= 1_000_000) & (north >= 0) & (north <= 10_000_000))
    if far.any():
        i = int(np.flatnonzero(far)[0])
        raise DatasetError(
            folder / names[i],
            f"position {fixes[i, 0]:.6f},{fixes[i, 1]:.6f} is out of range of UTM zone {zone[0]}{zone[1]} used for "
            "all photos (too far from the others, or across the equator); move it out of the dataset",
        )
    heading = fixes[:, 2]
    return ImageSet(
        root=folder, paths=names, utm=np.stack([east, north], axis=1), zone=zone, latlon=fixes[:, :2],
        heading=None if np.isnan(heading).all() else heading, source=str(folder),
    )


def read_exif_folder(
    folder: str | os.PathLike,
    query_folder: str | os.PathLike | None = None,
    split: str = "test",
    skip_missing_gps: bool = False,
) -> PlaceDataset:
    """Read a folder of geotagged photos (database) and a query folder into a one-split dataset.

    ``query_folder`` defaults to ``folder/queries``; photos under it are not database images.
    A photo without GPS raises :class:`DatasetError` unless ``skip_missing_gps`` (then it is
    skipped with a logged warning).
    """
    if split not in SPLIT_NAMES:
        raise ValueError(f"split must be one of {SPLIT_NAMES}, not {split!r}")
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(folder, "photo folder not found")
    if query_folder is None:
        if not (folder / "queries").is_dir():
            raise DatasetError(folder, "no query photos: pass query_folder or put the queries in a 'queries' subfolder")
        query_folder = folder / "queries"
    query_folder = Path(query_folder)
    if not query_folder.is_dir():
        raise DatasetError(query_folder, "query folder not found")
    if query_folder.resolve() == folder.resolve():
        raise DatasetError(query_folder, "query folder is the database folder; queries must be other photos")
    db_names = list_photos(folder, exclude=query_folder.resolve())
    q_names = list_photos(query_folder)
    for where, names, role in ((folder, db_names, "database"), (query_folder, q_names, "query")):
        if not names:
            raise DatasetError(where, f"folder holds no {role} photos (image files such as .jpg or .png)")
    db_names, db_fix = _read_fixes(folder, db_names, skip_missing_gps)
    q_names, q_fix = _read_fixes(query_folder, q_names, skip_missing_gps)
    for where, fixes, role in ((folder, db_fix, "database"), (query_folder, q_fix, "query")):
        if len(fixes) == 0:
            raise DatasetError(where, f"no {role} photo has an EXIF GPS position")
    both = np.vstack([db_fix, q_fix])
    _, _, zone = latlon_to_utm(np.median(both[:, 0]), np.median(both[:, 1]))
    db = _image_set(folder, db_names, db_fix, zone)
    queries = _image_set(query_folder, q_names, q_fix, zone)
    place_split = PlaceSplit(split, db, queries, source=str(folder))
    return PlaceDataset(name=folder.name, root=folder, splits={split: place_split}, format="exif")
