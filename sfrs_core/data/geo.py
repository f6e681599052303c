"""Geodesy helpers: WGS84 latitude/longitude <-> UTM metres, with validation; and local geometry
in metres around a point (metres per degree, a camera's view cone, padded bounds, points within
a radius), as the app's maps draw it."""
from __future__ import annotations

import math
import os
from collections.abc import Sequence

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


# --------------------------------------------------------------------------- local metres
def metres_per_degree(lat: float) -> tuple[float, float]:
    """Metres per degree of latitude and of longitude at latitude ``lat`` (WGS84 ellipsoid)."""
    phi = math.radians(lat)
    m_lat = 111_132.92 - 559.82 * math.cos(2 * phi) + 1.175 * math.cos(4 * phi)
    m_lon = 111_412.84 * math.cos(phi) - 93.5 * math.cos(3 * phi)
    return m_lat, max(m_lon, 1.0)


def view_cone(latlon: tuple[float, float], heading_deg: float, fov_deg: float, length_m: float,
              arc_points: int = 7) -> list[tuple[float, float]]:
    """A camera's view cone as a polygon of (lat, lon) points: the camera (apex), then
    ``arc_points`` points ``length_m`` away, from ``heading_deg − fov_deg/2`` to
    ``heading_deg + fov_deg/2`` (compass degrees: 0 north, 90 east; the middle point of an odd
    count lies straight ahead). Metres to degrees by the local scale of the ellipsoid (exact to
    millimetres over a few metres)."""
    lat, lon = float(latlon[0]), float(latlon[1])
    m_lat, m_lon = metres_per_degree(lat)
    angles = np.radians(heading_deg + np.linspace(-fov_deg / 2, fov_deg / 2, arc_points))
    east, north = length_m * np.sin(angles), length_m * np.cos(angles)
    return [(lat, lon)] + [(lat + float(n) / m_lat, lon + float(e) / m_lon) for e, n in zip(east, north)]


def padded_bounds(points: Sequence[tuple[float, float]], pad_m: float) -> list[list[float]]:
    """``[[south, west], [north, east]]`` of the (lat, lon) ``points``, widened by ``pad_m``
    metres on every side (at the points' mean latitude)."""
    lat = np.array([p[0] for p in points])
    lon = np.array([p[1] for p in points])
    m_lat, m_lon = metres_per_degree(float(lat.mean()))
    dlat, dlon = pad_m / m_lat, pad_m / m_lon
    return [[float(lat.min() - dlat), float(lon.min() - dlon)], [float(lat.max() + dlat), float(lon.max() + dlon)]]


def indices_within(latlon: np.ndarray, center: tuple[float, float], radius_m: float) -> np.ndarray:
    """Indices of the points of ``latlon`` (N×2) within ``radius_m`` of ``center`` (local metres)."""
    m_lat, m_lon = metres_per_degree(center[0])
    d = np.hypot((latlon[:, 0] - center[0]) * m_lat, (latlon[:, 1] - center[1]) * m_lon)
    return np.flatnonzero(d <= radius_m)
