"""Maps of a query and what two models retrieved for it (folium, shown in an ``st.iframe``).

**Offline by design.** folium's defaults fetch Leaflet, jQuery, Bootstrap and Font Awesome from
CDNs and map tiles from OpenStreetMap; none of that is reachable on an offline machine, and a
map that silently stays blank is worse than none. So every map built here:

* loads Leaflet 1.9.4 from the app itself: ``static/leaflet/`` (``leaflet.js``, ``leaflet.css``,
  ``images/``, BSD-2 ``LICENSE``, unpacked from the npm registry's ``leaflet-1.9.4.tgz``), served
  by Streamlit's static file serving (``server.enableStaticServing`` in
  ``.streamlit/config.toml``) at ``<server>/app/static/...``;
* drops folium's other CDN assets (jQuery, Bootstrap, Font Awesome, awesome-markers): markers
  are Leaflet ``CircleMarker``/``Circle`` vectors and ``DivIcon`` badges (plain HTML/CSS), so no
  icon font or plugin is needed;
* has no tile layer (``tiles=None``) but a plain light background with a scale bar. For SynthCity
  the background is the city itself, drawn from the generator's own model
  (:mod:`sfrs_core.data.synthcity.basemap`): streets, building footprints and shop names, each a
  layer of the layer switch; shop names appear from zoom :data:`NEAR_ZOOM` on.

**Online tiles are opt-in.** ``tiles="osm"`` (the Map page's sidebar switch, default from the
environment variable ``SFRS_MAP_TILES=osm``) adds one OpenStreetMap tile layer with its
attribution, for real datasets whose GPS is a real place; everything else stays local.

:func:`show_map` renders a map's whole HTML page once per set of inputs (a cache key the page
gives; building and rendering a map with its popups and layers costs about 0.1 s of held GIL,
paid on every rerun before) and shows it with ``st.iframe`` as a ``srcdoc`` frame. Such a frame
resolves relative URLs against the page that embeds it, ``<server>[/<baseUrlPath>]/<page>``, so
the Leaflet URLs (:data:`LEAFLET_JS`) are relative (``app/static/...``): they name the same
server's static folder also when the app runs under a ``server.baseUrlPath``.

**Where each camera looks.** Wherever an image's heading is known, it is drawn as a view cone: a
wedge from the camera position, ``fov`` wide (SynthCity's camera field of view; else
:data:`DEFAULT_FOV_DEG`) and a few metres long, pointing along the heading (compass degrees:
0 north, 90 east; SynthCity's are relative to its metre grid, i.e. UTM grid north, within a
degree of true north). The query's cone is the longest; each retrieved image's cone takes its
correctness colour; database images near the query (:data:`DATABASE_CONE_RADIUS_M`) get thin grey
cones, drawn from zoom :data:`CONES_ZOOM` on (one GeoJSON layer: a small page).

**Positives.** :func:`add_positives` draws a query's GPS positives (database images within 10 m)
with their cones, marking the easiest (ranked first by a model) and the difficult positives a
model's mining picked (see :mod:`sfrs_core.explain.positives`); :func:`positives_map` is that alone.

Pins: each model's top-K matches, grouped by database position (SynthCity has 8 headings per
place, so several ranks often share one spot), as badges labelled with their ranks, green within
25 m of the query and red farther (grey when the query's position is unknown); the baseline's
badges are circles left of the spot, the compared model's squares right of it. A badge's popup
shows the images (small JPEG data URIs) with rank, similarity and distance.
"""
from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import folium
import numpy as np
import streamlit as st
from branca.element import MacroElement
from folium.template import Template
from folium.utilities import JsCode
from PIL import Image

from sfrs_core.data.images import open_rgb
from sfrs_core.figures.style import CORRECT_RADIUS_M, QUERY_COLOR, correctness_color

if TYPE_CHECKING:
    from sfrs_core.data.synthcity.basemap import Basemap
    from sfrs_core.retrieval.localize import Localization
    from sfrs_core.retrieval.results import QueryResults

ImageLike = str | os.PathLike | np.ndarray  # an image file, or an H×W×3 uint8 RGB array

#: Leaflet as served by the app (``static/leaflet``), relative to the app's pages (see the module doc).
LEAFLET_JS = "app/static/leaflet/leaflet.js"
LEAFLET_CSS = "app/static/leaflet/leaflet.css"
BACKGROUND = "#f4f6f8"
DATABASE_COLOR = "#9aa3ad"
MAX_DATABASE_POINTS = 5000  # more database places (distinct positions) than this are thinned evenly
THUMB_WIDTH = 160
MAX_ZOOM = 21  # a street scene needs more than Leaflet's usual 18 (OSM tiles are upscaled past 19)
NEAR_ZOOM = 19  # shop names from this zoom on (about 0.3 m per pixel)
CONES_ZOOM = 20  # database view cones from this zoom on
DEFAULT_FOV_DEG = 60.0  # a camera's field of view when the dataset does not say
QUERY_CONE_M = 12.0
PIN_CONE_M = 9.0
DATABASE_CONE_M = 6.0
DATABASE_CONE_RADIUS_M = 30.0  # database cones only around the query: the page stays small
MAX_DATABASE_CONES = 600
TILES_ENV = "SFRS_MAP_TILES"
TILE_CHOICES = ("none", "osm")
OSM_TILES = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
OSM_ATTRIBUTION = ('&copy; <a href="https://www.openstreetmap.org/copyright">OpenStreetMap</a> contributors')
STREET_STYLE = {"stroke": False, "fillColor": "#dcdfe3", "fillOpacity": 1.0, "interactive": False}
BUILDING_STYLE = {"color": "#b3aa9c", "weight": 0.6, "fillOpacity": 0.9}
DATABASE_CONE_STYLE = {"color": "#8a939c", "weight": 0.5, "opacity": 0.6, "fillColor": "#9aa3ad", "fillOpacity": 0.08}
PICKED_COLOR = "#CC79A7"  # a difficult positive the mining picked
NOT_PICKED_COLOR = "#7F7F7F"  # a GPS positive it left out
POSITIVE_COLOR = "#56B4E9"  # a GPS positive, mining unknown
EASIEST_RING = "#111111"

_BADGE = ("position:absolute;transform:translate({dx},-50%);white-space:nowrap;font:bold 11px/16px sans-serif;"
          "color:#fff;background:{fill};border:2px solid {ring};border-radius:{radius};padding:0 4px;"
          "min-width:8px;text-align:center;box-shadow:0 0 2px rgba(0,0,0,.5)")


@dataclass(frozen=True)
class Pin:
    """One retrieved database image: its rank, position, image (path or RGB array) and scores.
    ``distance_m``/``correct`` are None when the query's true position is unknown."""

    rank: int
    latlon: tuple[float, float]
    image: ImageLike
    similarity: float
    distance_m: float | None = None
    correct: bool | None = None
    db_index: int | None = None
    heading: float | None = None  # compass degrees; None when unknown (no view cone)


@dataclass(frozen=True)
class PinSet:
    """One model's pins: ``label`` names the model, ``color`` rings its badges; ``square`` badges
    (the compared model) sit right of their spot, round ones (the baseline) left of it."""

    label: str
    pins: Sequence[Pin]
    color: str
    square: bool = False


def thumbnail_uri(image: ImageLike, width: int = THUMB_WIDTH) -> str:
    """A small JPEG ``data:`` URI of an image file path or ``H×W×3`` uint8 array, ``width`` px wide."""
    if isinstance(image, np.ndarray):
        return _thumbnail(Image.fromarray(image), width)
    return _cached_thumbnail(str(image), width)


@lru_cache(maxsize=512)
def _cached_thumbnail(path: str, width: int) -> str:
    return _thumbnail(open_rgb(path), width)


def _thumbnail(img: Image.Image, width: int) -> str:
    height = max(1, round(img.height * width / img.width))
    buf = io.BytesIO()
    img.convert("RGB").resize((width, height), Image.BILINEAR).save(buf, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def known_heading(headings: np.ndarray | None, i: int) -> float | None:
    """Image ``i``'s heading from an array with NaN for unknown ones (or None: none known)."""
    if headings is None or not math.isfinite(float(headings[i])):
        return None
    return float(headings[i])


def pins_from_results(results: QueryResults, query: int, k: int, database_latlon: np.ndarray,
                      image_path: Callable[[int], ImageLike], database_heading: np.ndarray | None = None) -> list[Pin]:
    """The top-``k`` pins of ``query`` from per-query results (:class:`~sfrs_core.retrieval.QueryResults`);
    ``image_path(i)`` gives database image i's file, ``database_heading`` (NaN: unknown) its heading."""
    return [Pin(j + 1, tuple(map(float, database_latlon[i])), image_path(int(i)), float(results.similarities[query, j]),
                float(results.distances_m[query, j]), bool(results.correct[query, j]), int(i),
                known_heading(database_heading, int(i)))
            for j, i in enumerate(results.ids[query, :k])]


def pins_from_localization(loc: Localization, radius_m: float = CORRECT_RADIUS_M,
                           database_heading: np.ndarray | None = None) -> list[Pin]:
    """Pins of an uploaded photo's matches (:class:`~sfrs_core.retrieval.localize.Localization`);
    ``database_heading`` (NaN: unknown) gives each match its view cone."""
    return [Pin(m.rank, tuple(map(float, m.latlon)), m.path, m.similarity, err,
                None if err is None else err <= radius_m, m.db_index,
                None if m.db_index is None else known_heading(database_heading, m.db_index))
            for m, err in zip(loc.matches, loc.errors_m)]


def _groups(pins: Sequence[Pin]) -> list[list[Pin]]:
    """Pins at the same place (to about 10 cm), in rank order of their best pin."""
    spots: dict[tuple[float, float], list[Pin]] = {}
    for pin in sorted(pins, key=lambda p: p.rank):
        spots.setdefault((round(pin.latlon[0], 6), round(pin.latlon[1], 6)), []).append(pin)
    return list(spots.values())


def _distance_text(pin: Pin) -> str:
    return "distance unknown" if pin.distance_m is None else f"{pin.distance_m:.1f} m from the query"


class HtmlPopup(MacroElement):
    """A popup of raw HTML bound with Leaflet's own ``bindPopup`` (``folium.Popup`` needs jQuery)."""

    _template = Template("""{% macro script(this, kwargs) %}
        {{ this._parent.get_name() }}.bindPopup({{ this.html|tojson }}, {{ this.options|tojson }});
    {% endmacro %}""")

    def __init__(self, html_text: str, max_width: int = THUMB_WIDTH + 30):
        super().__init__()
        self._name = "HtmlPopup"
        self.html = html_text
        self.options = {"maxWidth": max_width}


def _popup(label: str, group: Sequence[Pin]) -> HtmlPopup:
    items = "".join(
        f'<div style="margin:4px 0"><img src="{thumbnail_uri(p.image)}" width="{THUMB_WIDTH}"><br>'
        f"<b>rank {p.rank}</b> &middot; similarity {p.similarity:.3f}<br>{_distance_text(p)}"
        + (f" &middot; db {p.db_index}" if p.db_index is not None else "") + "</div>"
        for p in group)
    return HtmlPopup(f'<div style="font:12px sans-serif"><b>{html.escape(label)}</b>{items}</div>')


def _badge(text: str, fill: str, ring: str, square: bool | None) -> folium.DivIcon:
    """A label at its spot: right of it (square), left of it (round) or centred (None)."""
    dx = {True: "4px", False: "calc(-100% - 4px)", None: "-50%"}[square]
    style = _BADGE.format(dx=dx, fill=fill, ring=ring, radius="3px" if square else "9px")
    return folium.DivIcon(html=f'<div class="sfrs-pin" style="{style}">{html.escape(text)}</div>',
                          icon_size=(0, 0), icon_anchor=(0, 0), class_name="sfrs-badge")


def _add_pins(m: folium.Map, pin_set: PinSet, fov_deg: float = DEFAULT_FOV_DEG) -> None:
    layer = folium.FeatureGroup(name=html.escape(pin_set.label)).add_to(m)
    for pin in pin_set.pins:  # cones first: the badges stay on top
        if pin.heading is not None:
            color = correctness_color(pin.correct)
            folium.Polygon(view_cone(pin.latlon, pin.heading, fov_deg, PIN_CONE_M), color=pin_set.color, weight=1.5,
                           fill=True, fill_color=color, fill_opacity=0.35, interactive=False).add_to(layer)
    for group in _groups(pin_set.pins):
        first = group[0]
        ranks = ",".join(str(p.rank) for p in group)
        tooltip = f"{pin_set.label}: rank {ranks}, {_distance_text(first)}"
        folium.CircleMarker(first.latlon, radius=2, color=QUERY_COLOR, weight=1, fill=True, fill_opacity=1,
                            interactive=False).add_to(layer)
        marker = folium.Marker(first.latlon, tooltip=html.escape(tooltip),
                               icon=_badge(ranks, correctness_color(first.correct), pin_set.color, pin_set.square))
        marker.add_child(_popup(pin_set.label, group)).add_to(layer)


def _bounds(points: list[tuple[float, float]], pad_m: float) -> list[list[float]]:
    lat = np.array([p[0] for p in points])
    lon = np.array([p[1] for p in points])
    m_lat, m_lon = metres_per_degree(float(lat.mean()))
    dlat, dlon = pad_m / m_lat, pad_m / m_lon
    return [[float(lat.min() - dlat), float(lon.min() - dlon)], [float(lat.max() + dlat), float(lon.max() + dlon)]]


# --------------------------------------------------------------------------- view cones
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


def _geojson_polygon(points: Sequence[tuple[float, float]]) -> dict:
    ring = [[round(lon, 6), round(lat, 6)] for lat, lon in points]  # about 10 cm: plenty for a wedge
    return {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ring + ring[:1]]}}


def _near(latlon: np.ndarray, center: tuple[float, float], radius_m: float) -> np.ndarray:
    """Indices of the points of ``latlon`` (N×2) within ``radius_m`` of ``center`` (local metres)."""
    m_lat, m_lon = metres_per_degree(center[0])
    d = np.hypot((latlon[:, 0] - center[0]) * m_lat, (latlon[:, 1] - center[1]) * m_lon)
    return np.flatnonzero(d <= radius_m)


class ZoomVisibility(MacroElement):
    """Shows things only from ``min_zoom`` on: the map container gets the CSS class ``css_class``
    (labels styled to hide without it), and each vector layer of ``layers`` its ``style`` (below:
    transparent). The layer switch still shows or hides the layers themselves."""

    _template = Template("""{% macro script(this, kwargs) %}
    (function (map) {
        var layers = [{% for layer, style in this.layers %}[{{ layer.get_name() }}, {{ style|tojson }}],{% endfor %}];
        function update() {
            var near = map.getZoom() >= {{ this.min_zoom }};
            {%- if this.css_class %}
            map.getContainer().classList.toggle({{ this.css_class|tojson }}, near);
            {%- endif %}
            layers.forEach(function (l) { l[0].setStyle(near ? l[1] : {opacity: 0, fillOpacity: 0}); });
        }
        map.on("zoomend", update);
        update();
    })({{ this._parent.get_name() }});
    {% endmacro %}""")

    def __init__(self, min_zoom: float, layers: Sequence[tuple[folium.map.Layer, dict]] = (),
                 css_class: str | None = None):
        super().__init__()
        self._name = "ZoomVisibility"
        self.min_zoom = min_zoom
        self.layers = list(layers)
        self.css_class = css_class


class LabelLayer(folium.map.Layer):
    """Text labels as one Leaflet layer group of HTML ``DivIcon`` markers (no icon font, no images),
    centred on their points, styled by the CSS class ``class_name``."""

    _template = Template("""{% macro script(this, kwargs) %}
    var {{ this.get_name() }} = L.layerGroup({{ this.labels|tojson }}.map(function (d) {
        return L.marker([d[0], d[1]], {interactive: false, keyboard: false,
            icon: L.divIcon({className: {{ this.class_name|tojson }}, html: d[2], iconSize: [0, 0]})});
    }));
    {% endmacro %}""")

    def __init__(self, labels: Sequence[tuple[float, float, str]], name: str, class_name: str, show: bool = True):
        super().__init__(name=name, overlay=True, control=True, show=show)
        self._name = "LabelLayer"
        self.labels = [[round(float(lat), 7), round(float(lon), 7), f"<div>{html.escape(text)}</div>"]
                       for lat, lon, text in labels]
        self.class_name = class_name


# --------------------------------------------------------------------------- base layers
def tiles_from_env() -> str:
    """The default tile choice: ``osm`` when ``SFRS_MAP_TILES=osm``, else ``none`` (offline)."""
    value = os.environ.get(TILES_ENV, "none").strip().lower()
    return value if value in TILE_CHOICES else "none"


def add_online_tiles(m: folium.Map, tiles: str = "osm") -> None:
    """One online tile layer (OpenStreetMap, with its attribution): opt-in, it fetches from the internet."""
    if tiles != "osm":
        raise ValueError(f"unknown tiles {tiles!r}; choose one of {TILE_CHOICES}")
    folium.TileLayer(OSM_TILES, attr=OSM_ATTRIBUTION, name="OpenStreetMap", max_zoom=MAX_ZOOM,
                     max_native_zoom=19).add_to(m)


def add_basemap(m: folium.Map, basemap: Basemap) -> list[folium.map.Layer]:
    """SynthCity's streets, building footprints (tinted by facade colour; a shop's name on hover)
    and shop names (from :data:`NEAR_ZOOM` on) as three layers; returns them."""
    streets = {"type": "FeatureCollection", "features": [
        {**f, "properties": {"street": f["properties"]["street"]}} for f in basemap.roads["features"]]}
    buildings = {"type": "FeatureCollection", "features": [
        {**f, "properties": {**({"shop": html.escape(f["properties"]["shop"])} if f["properties"]["shop"] else {}),
                             "style": {"fillColor": f["properties"]["fill"]}}} for f in basemap.buildings["features"]]}
    roads = folium.GeoJson(streets, name="Streets", style=STREET_STYLE, interactive=False).add_to(m)
    houses = folium.GeoJson(buildings, name="Buildings", style=BUILDING_STYLE, on_each_feature=JsCode(
        "function (f, layer) { if (f.properties.shop) { layer.bindTooltip(f.properties.shop); } }")).add_to(m)
    shops = LabelLayer([(s.lat, s.lon, s.name) for s in basemap.shops], "Shop names", "sfrs-shop").add_to(m)
    return [roads, houses, shops]


def add_database_cones(m: folium.Map, database_latlon: np.ndarray, database_heading: np.ndarray | None,
                       center: tuple[float, float], fov_deg: float,
                       exclude: Sequence[int] = ()) -> folium.GeoJson | None:
    """Thin grey view cones of the database images within :data:`DATABASE_CONE_RADIUS_M` of
    ``center`` whose heading is known (but those in ``exclude``), as one GeoJSON layer drawn from
    :data:`CONES_ZOOM` on; None when there are none."""
    if database_heading is None:
        return None
    near = _near(np.asarray(database_latlon, dtype=np.float64).reshape(-1, 2), center, DATABASE_CONE_RADIUS_M)
    near = [int(i) for i in near if math.isfinite(float(database_heading[i])) and int(i) not in set(exclude)]
    near = near[:MAX_DATABASE_CONES]
    if not near:
        return None
    features = [_geojson_polygon(view_cone(tuple(database_latlon[i]), float(database_heading[i]), fov_deg,
                                           DATABASE_CONE_M, arc_points=3)) for i in near]
    layer = folium.GeoJson({"type": "FeatureCollection", "features": features}, style=DATABASE_CONE_STYLE,
                           interactive=False,
                           name=f"Database view cones (within {DATABASE_CONE_RADIUS_M:g} m; zoom in to see)")
    return layer.add_to(m)


# --------------------------------------------------------------------------- positives
@dataclass(frozen=True)
class PositiveMark:
    """One GPS positive of a query, for the map: ``label`` (as in the page's image grid), position,
    heading (None: unknown), metres from the query, database index, whether it is the easiest
    positive (ranked first by the model) and whether the mining picked it (None: not mined)."""

    label: str
    latlon: tuple[float, float]
    heading: float | None
    distance_m: float
    db_index: int
    easiest: bool = False
    picked: bool | None = None
    note: str = ""


def positive_color(mark: PositiveMark) -> str:
    """Picked: :data:`PICKED_COLOR`; left out: :data:`NOT_PICKED_COLOR`; not mined: :data:`POSITIVE_COLOR`."""
    return POSITIVE_COLOR if mark.picked is None else PICKED_COLOR if mark.picked else NOT_PICKED_COLOR


def _label_icon(text: str, fill: str, ring: str) -> folium.DivIcon:
    style = (f"transform:translate(-50%,-50%);white-space:nowrap;font:bold 10px/13px sans-serif;color:#fff;"
             f"background:{fill};border:1.5px solid {ring};border-radius:7px;padding:0 3px")
    return folium.DivIcon(html=f'<div class="sfrs-pos" style="{style}">{html.escape(text)}</div>',
                          icon_size=(0, 0), icon_anchor=(0, 0), class_name="sfrs-badge")


def add_positives(m: folium.Map, marks: Sequence[PositiveMark], fov_deg: float, name: str) -> folium.FeatureGroup:
    """Each positive's view cone (picked: filled; left out: dashed and pale; the easiest: black
    outline) with its label at the cone's tip (at the spot when its heading is unknown)."""
    layer = folium.FeatureGroup(name=html.escape(name)).add_to(m)
    for mark in marks:
        color = positive_color(mark)
        ring = EASIEST_RING if mark.easiest else color
        tip = mark.latlon
        if mark.heading is not None:
            cone = view_cone(mark.latlon, mark.heading, fov_deg, PIN_CONE_M)
            folium.Polygon(cone, color=ring, weight=2.5 if mark.easiest else 1.2,
                           dash_array="4 3" if mark.picked is False else None,
                           fill=True, fill_color=color, fill_opacity=0.1 if mark.picked is False else 0.3,
                           interactive=False).add_to(layer)
            tip = cone[len(cone) // 2 + 1]  # the middle of the arc: straight ahead
        heading = "heading unknown" if mark.heading is None else f"heading {mark.heading:.0f}°"
        tooltip = f"{mark.label}: db {mark.db_index}, {mark.distance_m:.1f} m from the query, {heading}" + (
            f"; {mark.note}" if mark.note else "")
        folium.Marker(tip, icon=_label_icon(mark.label + (" ★" if mark.easiest else ""), color, ring),
                      tooltip=html.escape(tooltip)).add_to(layer)
    return layer


def _add_query(m: folium.Map, latlon: tuple[float, float], label: str, image: ImageLike | None,
               heading: float | None, fov_deg: float, radius_m: float) -> None:
    layer = folium.FeatureGroup(name=f"{html.escape(label)} and {radius_m:g} m circle").add_to(m)
    folium.Circle(list(latlon), radius=radius_m, color=QUERY_COLOR, weight=1.5, dash_array="5 4",
                  fill=True, fill_opacity=0.06, interactive=False).add_to(layer)
    if heading is not None:
        folium.Polygon(view_cone(latlon, heading, fov_deg, QUERY_CONE_M), color=QUERY_COLOR, weight=2, fill=True,
                       fill_color=QUERY_COLOR, fill_opacity=0.18, interactive=False).add_to(layer)
    where = "true position" + ("" if heading is None else f", heading {heading:.0f}°")
    marker = folium.Marker(list(latlon), icon=_badge("Q", QUERY_COLOR, "#ffffff", None), z_index_offset=1000,
                           tooltip=html.escape(f"{label} ({where})")).add_to(layer)
    if image is not None:
        marker.add_child(HtmlPopup(f'<div style="font:12px sans-serif"><b>{html.escape(label)}</b><br>'
                                   f'<img src="{thumbnail_uri(image)}" width="{THUMB_WIDTH}"></div>'))


# --------------------------------------------------------------------------- maps
_CSS = (f"<style>.leaflet-container{{background:{BACKGROUND}}} .sfrs-badge{{background:none;border:none}}"
        ".leaflet-control-layers,.leaflet-tooltip{font-size:12px}"
        ".sfrs-shop div{position:absolute;transform:translate(-50%,-50%);white-space:nowrap;"
        "font:600 9px/11px sans-serif;color:#4a3b2a;background:rgba(255,255,255,.75);padding:0 2px;border-radius:2px}"
        ".leaflet-container:not(.sfrs-near) .sfrs-shop{display:none}</style>")


def offline_map(center: tuple[float, float], tiles: str = "none") -> folium.Map:
    """An empty folium map that needs nothing from the internet (see the module doc); ``tiles="osm"``
    adds the one online layer, OpenStreetMap's tiles."""
    m = folium.Map(location=list(center), zoom_start=17, tiles=None, control_scale=True, prefer_canvas=True,
                   zoom_snap=0.25)
    m.options["max_zoom"] = MAX_ZOOM
    m.default_js = [("leaflet", LEAFLET_JS)]
    m.default_css = [("leaflet_css", LEAFLET_CSS)]
    m.get_root().header.add_child(folium.Element(_CSS))
    if tiles != "none":
        add_online_tiles(m, tiles)
    return m


def _finish(m: folium.Map, cones: folium.map.Layer | None, bounds: list[list[float]],
            collapsed: bool = False) -> folium.Map:
    ZoomVisibility(NEAR_ZOOM, css_class="sfrs-near").add_to(m)
    if cones is not None:
        ZoomVisibility(CONES_ZOOM, [(cones, DATABASE_CONE_STYLE)]).add_to(m)
    folium.LayerControl(collapsed=collapsed).add_to(m)
    m.fit_bounds(bounds, max_zoom=MAX_ZOOM)
    return m


def retrieval_map(
    database_latlon: np.ndarray,
    pin_sets: Sequence[PinSet],
    query_latlon: tuple[float, float] | None = None,
    query_image: ImageLike | None = None,
    query_label: str = "Query",
    radius_m: float = CORRECT_RADIUS_M,
    *,
    query_heading: float | None = None,
    database_heading: np.ndarray | None = None,
    fov_deg: float = DEFAULT_FOV_DEG,
    basemap: Basemap | None = None,
    tiles: str = "none",
    positives: Sequence[PositiveMark] = (),
    positives_label: str = "GPS positives",
) -> folium.Map:
    """The database positions (grey dots), the query's true position with its ``radius_m``
    circle and view cone (when known), each model's pins with their view cones, and optionally
    SynthCity's streets and buildings (``basemap``), the database images' cones near the query
    (``database_heading``, NaN: unknown) and the query's GPS ``positives``; zoomed to the query
    and the pins, with a layer switch to show or hide each layer."""
    points = [p.latlon for s in pin_sets for p in s.pins] + ([tuple(query_latlon)] if query_latlon is not None else [])
    if not points:
        points = [tuple(map(float, np.asarray(database_latlon).mean(axis=0)))]
    center = tuple(map(float, np.mean(points, axis=0)))
    m = offline_map(center, tiles)
    if basemap is not None:
        add_basemap(m, basemap)
    db = np.asarray(database_latlon, dtype=np.float64).reshape(-1, 2)
    places = np.unique(np.round(db, 6), axis=0)  # views of one place share a dot
    shown = places if len(places) <= MAX_DATABASE_POINTS else places[
        np.linspace(0, len(places) - 1, MAX_DATABASE_POINTS).astype(int)]
    name = f"Database ({len(db)} images" + (f" at {len(places)} places" if len(places) < len(db) else "") + (
        f", {len(shown)} shown)" if len(shown) < len(places) else ")")
    points_json = {"type": "MultiPoint", "coordinates": [[float(lon), float(lat)] for lat, lon in shown]}
    folium.GeoJson(points_json, name=name, control=True, marker=folium.CircleMarker(
        radius=2, color=DATABASE_COLOR, weight=0, fill=True, fill_opacity=0.7, interactive=False)).add_to(m)
    cones = add_database_cones(m, db, database_heading, tuple(query_latlon) if query_latlon is not None else center,
                               fov_deg, exclude=[p.db_index for p in positives])
    if positives:
        add_positives(m, positives, fov_deg, positives_label)
    if query_latlon is not None:
        _add_query(m, tuple(query_latlon), query_label, query_image, query_heading, fov_deg, radius_m)
    for pin_set in pin_sets:
        _add_pins(m, pin_set, fov_deg)
    return _finish(m, cones, _bounds(points, radius_m + 5.0))


def positives_map(
    query_latlon: tuple[float, float],
    positives: Sequence[PositiveMark],
    *,
    query_heading: float | None = None,
    query_image: ImageLike | None = None,
    query_label: str = "Query",
    fov_deg: float = DEFAULT_FOV_DEG,
    radius_m: float = 10.0,
    basemap: Basemap | None = None,
    tiles: str = "none",
    positives_label: str = "GPS positives",
) -> folium.Map:
    """A query (position, ``radius_m`` circle, view cone) and its GPS ``positives`` with their view
    cones on SynthCity's streets (``basemap``), zoomed to the circle and most of the cones; the
    layer switch collapsed (a small map)."""
    m = offline_map(tuple(query_latlon), tiles)
    if basemap is not None:
        add_basemap(m, basemap)
    add_positives(m, positives, fov_deg, positives_label)
    _add_query(m, tuple(query_latlon), query_label, query_image, query_heading, fov_deg, radius_m)
    pad = max(radius_m, 0.8 * max(QUERY_CONE_M, radius_m + PIN_CONE_M))  # the circle and most of the cones
    return _finish(m, None, _bounds([tuple(query_latlon)], pad), collapsed=True)


@st.cache_resource(show_spinner=False, max_entries=64)
def map_html(key: tuple, _build: Callable[[], folium.Map], persist: bool = True) -> str:
    """The HTML page of the map ``_build()`` makes, rendered once per ``key`` (shared by visitors)
    and, with ``persist``, kept on disk for the next server (:mod:`viz_app.figure_cache`)."""
    from viz_app.figure_cache import cached_bytes

    def render() -> bytes:
        return _build().get_root().render().encode()

    return (cached_bytes(("map", *key), render) if persist else render()).decode()


def show_map(build: Callable[[], folium.Map], key: tuple, height: int = 520, persist: bool = True) -> None:
    """Show the map ``build()`` makes: ``key`` names it and every input it depends on (a rerun with
    the same key builds and renders nothing; ``persist``: not for a visitor's own photo, kept on
    disk). Nothing is read back from the map."""
    st.iframe(map_html(key, build, persist), height=height, alt="Map")
