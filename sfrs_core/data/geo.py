"""Geodesy helpers: WGS84 latitude/longitude <-> UTM metres, with validation."""
from __future__ import annotations

import os

import numpy as np
import utm

from .errors import DatasetError

UtmZone = tuple[int, str]


def check_latlon(lat: np.ndarray, lon: np.ndarray, source: str | os.PathLike) -> None:
    """Raise :class:`DatasetError` naming ``source`` if any coordinate is NaN or out of range."""
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    bad = ~np.isfinite(lat) | ~np.isfinite(lon) | (lat < -80.0) | (lat > 84.0) | (np.abs(lon) > 180.0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DatasetError(
            source,
            f"{int(bad.sum())} coordinate(s) NaN or out of range (UTM covers latitude -80..84, "
            f"longitude -180..180); first: lat={float(lat.flat[i])}, lon={float(lon.flat[i])}",
        )


def check_utm(east: np.ndarray, north: np.ndarray, source: str | os.PathLike) -> None:
    """Raise :class:`DatasetError` if UTM coordinates are NaN or outside a zone's valid range."""
    east = np.asarray(east, dtype=np.float64)
    north = np.asarray(north, dtype=np.float64)
    bad = ~np.isfinite(east) | ~np.isfinite(north) | (east < 100_000) | (east > 1_000_000)
    bad |= (north < 0) | (north > 10_000_000)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DatasetError(
            source,
            f"{int(bad.sum())} UTM coordinate(s) NaN or out of range (easting 100 km..1000 km, "
            f"northing 0..10000 km); first: east={float(east.flat[i])}, north={float(north.flat[i])}",
        )


def latlon_to_utm(
    lat: np.ndarray, lon: np.ndarray, zone: UtmZone | None = None
) -> tuple[np.ndarray, np.ndarray, UtmZone]:
    """Project lat/lon (degrees) to UTM easting/northing (metres) in one common zone.

    All points go to the same zone (``zone``, or that of the first point) so that distances
    between them are plain Euclidean metres, as a place dataset needs. A dataset that
    straddles the equator is not supported (its southern points would get negative northings).
    """
    lat = np.atleast_1d(np.asarray(lat, dtype=np.float64))
    lon = np.atleast_1d(np.asarray(lon, dtype=np.float64))
    if zone is None:
        zone = (utm.latlon_to_zone_number(lat[0], lon[0]), utm.latitude_to_zone_letter(lat[0]))
    number, letter = zone
    east, north, _, _ = utm.from_latlon(
        lat, lon, force_zone_number=number, force_zone_letter=letter
    )
    return np.asarray(east, np.float64), np.asarray(north, np.float64), (int(number), letter)


def utm_to_latlon(east: np.ndarray, north: np.ndarray, zone: UtmZone) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`latlon_to_utm` for points of one zone."""
    east = np.atleast_1d(np.asarray(east, dtype=np.float64))
    north = np.atleast_1d(np.asarray(north, dtype=np.float64))
    lat, lon = utm.to_latlon(east, north, zone[0], zone[1], strict=False)
    return np.asarray(lat, np.float64), np.asarray(lon, np.float64)
