"""The folium pieces the maps are made of: each model's pins, the query, its GPS positives,
database view cones, SynthCity's streets and buildings, opt-in online tiles, and the few
Leaflet elements folium lacks (raw-HTML popups, zoom-dependent visibility, text labels).
Nothing here loads anything from the internet but :func:`add_online_tiles`.

**Where each camera looks.** Wherever an image's heading is known, it is drawn as a view cone: a
wedge from the camera position, ``fov`` wide (SynthCity's camera field of view; else
:data:`DEFAULT_FOV_DEG`) and a few metres long, pointing along the heading (compass degrees:
0 north, 90 east; SynthCity's are relative to its metre grid, i.e. UTM grid north, within a
degree of true north). The query's cone is the longest; each retrieved image's cone takes its
correctness colour; database images near the query (:data:`DATABASE_CONE_RADIUS_M`) get thin grey
cones, drawn from zoom :data:`CONES_ZOOM` on (one GeoJSON layer: a small page).

**Positives.** :func:`add_positives` draws a query's GPS positives (database images within 10 m)
with their cones, marking the easiest (ranked first by a model) and the difficult positives a
model's mining picked (see :mod:`sfrs_core.explain.positives`); :func:`~viz_app.map_build.positives_map`
is that alone.

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
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

import folium
import numpy as np
from branca.element import MacroElement
from folium.template import Template
from folium.utilities import JsCode
from PIL import Image

from sfrs_core.data.geo import indices_within, view_cone
from sfrs_core.data.images import open_rgb
from sfrs_core.figures.style import QUERY_COLOR, correctness_color
from viz_app.map_marks import ImageLike, Pin, PinSet, PositiveMark, positive_color

if TYPE_CHECKING:
    from sfrs_core.data.synthcity.basemap import Basemap

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
EASIEST_RING = "#111111"

_BADGE = ("position:absolute;transform:translate({dx},-50%);white-space:nowrap;font:bold 11px/16px sans-serif;"
          "color:#fff;background:{fill};border:2px solid {ring};border-radius:{radius};padding:0 4px;"
          "min-width:8px;text-align:center;box-shadow:0 0 2px rgba(0,0,0,.5)")


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


def add_pins(m: folium.Map, pin_set: PinSet, fov_deg: float = DEFAULT_FOV_DEG) -> None:
    """One model's pins as one layer: their view cones, then a rank badge per spot (see the module doc)."""
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


def _geojson_polygon(points: Sequence[tuple[float, float]]) -> dict:
    ring = [[round(lon, 6), round(lat, 6)] for lat, lon in points]  # about 10 cm: plenty for a wedge
    return {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ring + ring[:1]]}}


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
    near = indices_within(np.asarray(database_latlon, dtype=np.float64).reshape(-1, 2), center,
                          DATABASE_CONE_RADIUS_M)
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


# --------------------------------------------------------------------------- positives and the query
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


def add_query(m: folium.Map, latlon: tuple[float, float], label: str, image: ImageLike | None,
              heading: float | None, fov_deg: float, radius_m: float) -> None:
    """The query's true position: its ``radius_m`` circle, its view cone (heading known) and a "Q"
    badge (with its thumbnail as popup when ``image`` is given), as one layer."""
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

