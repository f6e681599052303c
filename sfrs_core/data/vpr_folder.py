"""The VPR benchmark folder format (Berton et al., CVPR 2022).

``ROOT/images/{train,val,test}/{database,queries}/@east@north@zone@band@lat@lon@pano_id@tile_num
@heading@pitch@roll@height@timestamp@note@.jpg``; only the UTM fields are required. SynthCity
writes it too, with the query condition in ``note`` and label maps under ``ROOT/labels``.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .dataset import SPLIT_NAMES, ImageSet, PlaceDataset, PlaceSplit
from .errors import DatasetError, short_repr
from .geo import check_latlon, check_utm, latlon_to_utm, utm_to_latlon
from .images import is_image_name

FIELDS = (
    "east", "north", "zone", "band", "lat", "lon", "pano_id", "tile_num",
    "heading", "pitch", "roll", "height", "timestamp", "note",
)


@dataclass(frozen=True)
class VprName:
    """The fields of one folder-format file name."""

    east: float
    north: float
    zone: int
    band: str
    lat: float = math.nan
    lon: float = math.nan
    pano_id: str = ""
    tile_num: str = ""
    heading: float = math.nan
    pitch: float = math.nan
    roll: float = math.nan
    height: float = math.nan
    timestamp: str = ""
    note: str = ""


def _fmt_float(value: float, digits: int) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def format_vpr_name(meta: VprName, ext: str = "jpg") -> str:
    """Build a folder-format file name; ``@`` is not allowed inside free-text fields."""
    for text in (meta.pano_id, meta.tile_num, meta.timestamp, meta.note, meta.band):
        if "@" in text or "/" in text:
            raise ValueError(f"field {text!r} may not contain '@' or '/'")
    parts = [
        f"{meta.east:.2f}", f"{meta.north:.2f}", str(int(meta.zone)), meta.band,
        _fmt_float(meta.lat, 7), _fmt_float(meta.lon, 7), meta.pano_id, meta.tile_num,
        _fmt_float(meta.heading, 1), _fmt_float(meta.pitch, 1), _fmt_float(meta.roll, 1),
        _fmt_float(meta.height, 2), meta.timestamp, meta.note,
    ]
    return "@" + "@".join(parts) + "@." + ext.lstrip(".")


def _float(text: str, what: str, source: str | os.PathLike, required: bool) -> float:
    """A number field; empty (or ``nan``) means unknown when not ``required``; infinities are refused."""
    if text == "":
        if required:
            raise DatasetError(source, f"file name has an empty {what} field")
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise DatasetError(source, f"file name field {what}={short_repr(text)} is not a number") from None
    if math.isinf(value):
        raise DatasetError(source, f"file name field {what}={short_repr(text)} is not a finite number")
    return value


def parse_vpr_name(name: str, source: str | os.PathLike | None = None) -> VprName:
    """Parse the fields of a folder-format file name (``source`` names the file in errors)."""
    source = source if source is not None else name
    base = os.path.basename(name)
    parts = base.split("@")
    if len(parts) < 6 or parts[0] != "":
        raise DatasetError(
            source, "file name is not in the VPR format '@east@north@zone@band@lat@lon@...@.jpg'"
        )
    fields = (parts[1:-1] + [""] * len(FIELDS))[: len(FIELDS)]
    east = _float(fields[0], "UTM east", source, True)
    north = _float(fields[1], "UTM north", source, True)
    try:
        zone = int(fields[2])
    except ValueError:
        raise DatasetError(source, f"file name field UTM zone={short_repr(fields[2])} is not an integer") from None
    if not 1 <= zone <= 60:
        raise DatasetError(source, f"UTM zone {zone} is outside 1..60")
    band = fields[3].upper()
    if len(band) != 1 or band not in "CDEFGHJKLMNPQRSTUVWX":
        raise DatasetError(source, f"UTM band {short_repr(fields[3])} is not a latitude band letter C..X")
    check_utm(east, north, source)
    lat = _float(fields[4], "latitude", source, False)
    lon = _float(fields[5], "longitude", source, False)
    if fields[4] or fields[5]:
        check_latlon(lat, lon, source)
    return VprName(
        east=east, north=north, zone=zone, band=band, lat=lat, lon=lon,
        pano_id=fields[6], tile_num=fields[7],
        heading=_float(fields[8], "heading", source, False),
        pitch=_float(fields[9], "pitch", source, False),
        roll=_float(fields[10], "roll", source, False),
        height=_float(fields[11], "height", source, False),
        timestamp=fields[12], note=fields[13],
    )


def _read_image_set(folder: Path, label_folder: Path | None) -> ImageSet:
    if not folder.is_dir():
        raise DatasetError(folder, "folder not found")
    names = sorted(n for n in os.listdir(folder) if is_image_name(n))
    metas = [parse_vpr_name(n, folder / n) for n in names]
    if not metas:
        return ImageSet(folder, [], np.zeros((0, 2)), (1, "N"), np.zeros((0, 2)), source=str(folder))
    zones = {(m.zone, m.band) for m in metas}
    east = np.array([m.east for m in metas])
    north = np.array([m.north for m in metas])
    lat = np.array([m.lat for m in metas])
    lon = np.array([m.lon for m in metas])
    have_latlon = np.isfinite(lat) & np.isfinite(lon)
    zone = (metas[0].zone, metas[0].band)
    if len(zones) > 1:
        # Mixed zones: re-project every image to the first zone through its lat/lon.
        if not have_latlon.all():
            raise DatasetError(folder, f"images span UTM zones {sorted(zones)} and some lack lat/lon to re-project them")
        check_latlon(lat, lon, folder)
        east, north, zone = latlon_to_utm(lat, lon, zone)
    elif not have_latlon.all():
        lat2, lon2 = utm_to_latlon(east, north, zone)
        lat = np.where(have_latlon, lat, lat2)
        lon = np.where(have_latlon, lon, lon2)
    heading = np.array([m.heading for m in metas])
    notes = [m.note for m in metas]
    return ImageSet(
        root=folder,
        paths=names,
        utm=np.stack([east, north], axis=1),
        zone=zone,
        latlon=np.stack([lat, lon], axis=1),
        heading=None if np.isnan(heading).all() else heading,
        condition=notes if any(notes) else None,
        label_root=label_folder if label_folder is not None and label_folder.is_dir() else None,
        source=str(folder),
    )


def read_vpr_folder(root: str | os.PathLike, splits: tuple[str, ...] | None = None) -> PlaceDataset:
    """Read a dataset in the VPR folder format; ``splits`` defaults to every split present."""
    root = Path(root)
    images = root / "images"
    if not images.is_dir():
        raise DatasetError(root, "no 'images' folder: not a VPR folder-format dataset")
    present = [s for s in SPLIT_NAMES if (images / s).is_dir()]
    wanted = list(splits) if splits is not None else present
    if not wanted:
        raise DatasetError(images, f"no split folders; expected some of {list(SPLIT_NAMES)}")
    result = {}
    for split in wanted:
        if split not in present:
            raise DatasetError(images / split, "split folder not found")
        labels = root / "labels" / split
        db = _read_image_set(images / split / "database", labels / "database")
        q = _read_image_set(images / split / "queries", labels / "queries")
        result[split] = PlaceSplit(split, db, q, source=str(images / split))
    return PlaceDataset(name=root.name, root=root, splits=result, format="vpr_folder")
