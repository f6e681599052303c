"""SynthCity's own city model as map layers: streets, building footprints and shop names.

A rendered SynthCity knows exactly what its cameras saw: :func:`~.city.build_city` regenerates the
districts from the config saved in ``synthcity.json`` (the same seed, the same numbers), and this
module turns one split's district into plain GeoJSON (WGS84 longitude/latitude, as GeoJSON wants)
for a map, so that a retrieved image 5 m away can be seen to face another street.

* **Streets**: one polygon per street, the paved width (``2 × road_half_width_m``) along the whole
  centre line, the outer ring of streets included.
* **Buildings**: one footprint per building lot. The city model has facades only (vertical
  planes), so a footprint is the lot's front wall (its setback included) extended
  :data:`BUILDING_DEPTH_M` metres into its block; at the block's corners the footprints of the two
  faces meet on the diagonal (mitred), so none overlaps another.
* **Shops**: each shop's name at the middle of its sign, just inside its facade.

District metres become UTM metres exactly as :func:`~.generate.plan_views` places the cameras
(anchor's UTM + district origin + x/y), then latitude/longitude, so the layers line up with the
images' GPS to the centimetre. Nothing here draws: the app's map turns the GeoJSON into layers.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ...io import atomic_write_bytes
from ..geo import latlon_to_utm, utm_to_latlon
from .city import SPLITS, District, build_city
from .config import META_FILE, SynthCityConfig

#: How far a building footprint reaches into its block from the building line (metres).
BUILDING_DEPTH_M = 9.0
_DIGITS = 6  # about 10 cm: a small GeoJSON, exact enough for a street map


@dataclass(frozen=True)
class ShopLabel:
    """A shop's name and where its sign is (degrees)."""

    name: str
    lat: float
    lon: float


@dataclass(frozen=True)
class Basemap:
    """One district as map layers: GeoJSON ``FeatureCollection`` dicts and shop labels (shared by
    every caller of :func:`load_basemap`: read them, do not change them)."""

    split: str
    roads: dict  # Polygon features, properties: {"street": "x=52" | "y=0"}
    buildings: dict  # Polygon features, properties: {"building": b, "shop": name | None, "fill": "#rrggbb"}
    shops: tuple[ShopLabel, ...]


def district_latlon(cfg: SynthCityConfig, district: District, xy: np.ndarray) -> np.ndarray:
    """Latitude/longitude (N×2 degrees) of district points ``xy`` (N×2 metres east/north of the
    district's origin), as the generator tags the images."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    e0, n0, zone = latlon_to_utm(cfg.anchor_lat, cfg.anchor_lon)
    lat, lon = utm_to_latlon(e0[0] + district.origin[0] + xy[:, 0], n0[0] + district.origin[1] + xy[:, 1], zone)
    return np.stack([lat, lon], axis=1)


def _rings(cfg: SynthCityConfig, district: District, shapes: list[np.ndarray]) -> list[list[list[float]]]:
    """Closed GeoJSON rings ([lon, lat] pairs) of polygons given by their corners (district
    metres), converted in one go."""
    if not shapes:
        return []
    latlon = np.round(district_latlon(cfg, district, np.concatenate(shapes)), _DIGITS)
    rings, start = [], 0
    for shape in shapes:
        ring = [[float(lon), float(lat)] for lat, lon in latlon[start:start + len(shape)]]
        rings.append(ring + ring[:1])
        start += len(shape)
    return rings


def _polygon(ring: list[list[float]], properties: dict) -> dict:
    return {"type": "Feature", "properties": properties, "geometry": {"type": "Polygon", "coordinates": [ring]}}


def street_polygons(cfg: SynthCityConfig, district: District) -> list[tuple[str, np.ndarray]]:
    """Each street's name (``x=52``: the north-south street at x = 52 m) and paved surface as 4
    corners (district metres): north-south streets first, then east-west ones."""
    hw = cfg.road_half_width_m
    ys = district.street_y.min() - hw, district.street_y.max() + hw
    xs = district.street_x.min() - hw, district.street_x.max() + hw
    ns = [(f"x={x:g}", np.array([[x - hw, ys[0]], [x + hw, ys[0]], [x + hw, ys[1]], [x - hw, ys[1]]]))
          for x in district.street_x]
    ew = [(f"y={y:g}", np.array([[xs[0], y - hw], [xs[1], y - hw], [xs[1], y + hw], [xs[0], y + hw]]))
          for y in district.street_y]
    return ns + ew


def building_footprints(cfg: SynthCityConfig, district: District,
                        depth_m: float = BUILDING_DEPTH_M) -> list[np.ndarray]:
    """Each building's footprint as 4 corners (district metres), in building order: its front
    wall's two ends (``wall_p0``, ``wall_p1``), then the back corners ``depth_m`` into the block,
    mitred at the block's corners (see the module doc)."""
    B = cfg.block_m
    line = cfg.road_half_width_m + cfg.sidewalk_m
    front = np.flatnonzero(~district.wall_side)
    order = np.argsort(district.wall_building[front], kind="stable")
    out = []
    for w in front[order]:
        p0, p1 = district.wall_p0[w], district.wall_p1[w]
        along = (p1 - p0) / np.linalg.norm(p1 - p0)
        inward = np.array([-along[1], along[0]])  # faces are walked with the block on their left
        bx, by = np.floor((0.5 * (p0 + p1) + inward) / B)
        x0, x1, y0, y1 = bx * B + line, (bx + 1) * B - line, by * B + line, (by + 1) * B - line
        # the face's start corner (where its walk begins) and length, from its direction
        start, length = {(1, 0): ((x0, y0), x1 - x0), (0, 1): ((x1, y0), y1 - y0),
                         (-1, 0): ((x1, y1), x1 - x0), (0, -1): ((x0, y1), y1 - y0)}[
            (int(round(along[0])), int(round(along[1])))]
        start = np.array(start)
        a0, a1 = float((p0 - start) @ along), float((p1 - start) @ along)
        lo, hi = depth_m, max(depth_m, length - depth_m)
        back0 = start + along * np.clip(a0, lo, hi) + inward * depth_m
        back1 = start + along * np.clip(a1, lo, hi) + inward * depth_m
        out.append(np.array([p0, p1, back1, back0]))
    return out


def shop_positions(district: District, inset_m: float = 1.5) -> list[tuple[str, np.ndarray]]:
    """(name, district metres) of each shop: the middle of its sign, ``inset_m`` inside the facade."""
    out = []
    front = np.flatnonzero(~district.wall_side)
    for w in front[np.argsort(district.wall_building[front], kind="stable")]:
        shop = int(district.b_shop[district.wall_building[w]])
        if shop < 0:
            continue
        p0, p1 = district.wall_p0[w], district.wall_p1[w]
        along = (p1 - p0) / np.linalg.norm(p1 - p0)
        inward = np.array([-along[1], along[0]])
        mid = 0.5 * (district.shop_sign_a0[shop] + district.shop_sign_a1[shop])
        out.append((district.shop_names[shop], p0 + along * mid + inward * inset_m))
    return out


def _hex(rgb: np.ndarray) -> str:
    """A facade colour lightened halfway to white (a map reads better pale)."""
    light = np.clip(0.5 * np.asarray(rgb, dtype=np.float64) + 127.5, 0, 255).round().astype(int)
    return "#" + "".join(f"{v:02x}" for v in light)


def district_basemap(cfg: SynthCityConfig, split: str, city: dict[str, District] | None = None) -> Basemap:
    """The map layers of ``split``'s district of the city ``cfg`` generates (``city``: already built)."""
    district = (city or build_city(cfg))[split]
    streets = street_polygons(cfg, district)
    rings = _rings(cfg, district, [corners for _, corners in streets])
    roads = [_polygon(ring, {"street": name}) for (name, _), ring in zip(streets, rings)]
    buildings = []
    for b, ring in enumerate(_rings(cfg, district, building_footprints(cfg, district))):
        shop = int(district.b_shop[b])
        buildings.append(_polygon(ring, {"building": b, "shop": district.shop_names[shop] if shop >= 0 else None,
                                         "fill": _hex(district.b_colour[b])}))
    shops = shop_positions(district)
    latlon = np.round(district_latlon(cfg, district, np.array([xy for _, xy in shops]).reshape(-1, 2)), _DIGITS)
    labels = tuple(ShopLabel(name, float(lat), float(lon)) for (name, _), (lat, lon) in zip(shops, latlon))
    return Basemap(split, {"type": "FeatureCollection", "features": roads},
                   {"type": "FeatureCollection", "features": buildings}, labels)


@lru_cache(maxsize=2)
def _cached_city(config_json: str) -> dict[str, District]:
    return build_city(SynthCityConfig.from_dict(json.loads(config_json)))


@lru_cache(maxsize=1)
def _code_version() -> str:
    """A hash of the code that turns a config into layers (this module and the city model)."""
    here = Path(__file__).parent
    return hashlib.sha256(b"".join((here / name).read_bytes() for name in ("basemap.py", "city.py"))).hexdigest()[:16]


def basemap_file(root: str | os.PathLike, split: str) -> Path:
    """Where a SynthCity dataset keeps ``split``'s layers, beside its ``synthcity.json``."""
    return Path(root) / f"basemap_{split}.json"


def _read_file(path: Path, stamp: str, split: str) -> Basemap | None:
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        data = json.loads(path.read_text())
        if data["stamp"] == stamp:
            return Basemap(split, data["roads"], data["buildings"], tuple(ShopLabel(**s) for s in data["shops"]))
    return None


def _stamp(config_json: str) -> str:
    return hashlib.sha256(f"{_code_version()}|{config_json}".encode()).hexdigest()[:16]


def _write_file(path: Path, stamp: str, basemap: Basemap) -> None:
    atomic_write_bytes(path, json.dumps({"stamp": stamp, "roads": basemap.roads, "buildings": basemap.buildings,
                                         "shops": [asdict(s) for s in basemap.shops]}, separators=(",", ":")).encode())


def write_basemaps(root: str | os.PathLike, cfg: SynthCityConfig, city: dict[str, District] | None = None) -> None:
    """Write every split's layers beside a SynthCity dataset being rendered at ``root`` (the
    generator calls this; the same bytes as :func:`load_basemap` would write later)."""
    city = city or build_city(cfg)
    stamp = _stamp(json.dumps(cfg.to_dict(), sort_keys=True))
    for split in SPLITS:
        _write_file(basemap_file(root, split), stamp, district_basemap(cfg, split, city))


@lru_cache(maxsize=8)
def _cached_basemap(root: str, config_json: str, split: str) -> Basemap:
    """The layers from ``basemap_<split>.json`` when it was written for this config and code, else
    built (building the city takes about 0.2 s on 2 cores) and written there for the next process."""
    stamp, path = _stamp(config_json), basemap_file(root, split)
    found = _read_file(path, stamp, split)
    if found is not None:
        return found
    basemap = district_basemap(SynthCityConfig.from_dict(json.loads(config_json)), split, _cached_city(config_json))
    with contextlib.suppress(OSError):  # a read-only dataset is rebuilt by each process instead
        _write_file(path, stamp, basemap)
    return basemap


def load_basemap(root: str | os.PathLike, split: str) -> Basemap | None:
    """The map layers of ``split`` of the SynthCity dataset at ``root`` (None when ``root`` is not a
    finished SynthCity or has no such split). Built once per config and split, kept beside the
    dataset (:func:`basemap_file`, rebuilt when the config or the layer code changes) and in memory."""
    cfg = load_config(root)
    if cfg is None or split not in SPLITS:
        return None
    return _cached_basemap(str(Path(root).resolve()), json.dumps(cfg.to_dict(), sort_keys=True), split)


def load_config(root: str | os.PathLike) -> SynthCityConfig | None:
    """The :class:`SynthCityConfig` a SynthCity dataset at ``root`` was generated with (None when it is not one)."""
    try:
        return SynthCityConfig.from_dict(json.loads((Path(root) / META_FILE).read_text())["config"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
