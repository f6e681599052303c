"""Maps of a query and what two models retrieved for it (folium, shown through streamlit-folium).

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
* has no tile layer (``tiles=None``) but a plain light background with a scale bar: SynthCity's
  coordinates are synthetic, and the relative positions (metres) are what matters.

streamlit-folium (``st_folium``) renders the map in a component iframe served by the Streamlit
server itself (``<server>/component/streamlit_folium.st_folium/index.html``); the iframe loads
the map's ``default_js``/``default_css`` URLs one by one. They are given relative to that page
(:data:`LEAFLET_JS`), so they resolve to the same server's ``/app/static/`` also when the app
runs under a ``server.baseUrlPath``.

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
from branca.element import MacroElement
from folium.template import Template
from PIL import Image

from sfrs_core.data.images import open_rgb
from sfrs_core.figures.style import CORRECT_RADIUS_M, QUERY_COLOR, correctness_color

if TYPE_CHECKING:
    from sfrs_core.retrieval.localize import Localization
    from sfrs_core.retrieval.results import QueryResults

ImageLike = str | os.PathLike | np.ndarray  # an image file, or an H×W×3 uint8 RGB array

#: Leaflet as served by the app (``static/leaflet``), relative to streamlit-folium's component page.
LEAFLET_JS = "../../app/static/leaflet/leaflet.js"
LEAFLET_CSS = "../../app/static/leaflet/leaflet.css"
BACKGROUND = "#f4f6f8"
DATABASE_COLOR = "#9aa3ad"
MAX_DATABASE_POINTS = 5000  # more database positions than this are thinned evenly
THUMB_WIDTH = 160

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


def pins_from_results(results: QueryResults, query: int, k: int, database_latlon: np.ndarray,
                      image_path: Callable[[int], ImageLike]) -> list[Pin]:
    """The top-``k`` pins of ``query`` from per-query results (:class:`~sfrs_core.retrieval.QueryResults`);
    ``image_path(i)`` gives database image i's file."""
    return [Pin(j + 1, tuple(map(float, database_latlon[i])), image_path(int(i)), float(results.similarities[query, j]),
                float(results.distances_m[query, j]), bool(results.correct[query, j]), int(i))
            for j, i in enumerate(results.ids[query, :k])]


def pins_from_localization(loc: Localization, radius_m: float = CORRECT_RADIUS_M) -> list[Pin]:
    """Pins of an uploaded photo's matches (:class:`~sfrs_core.retrieval.localize.Localization`)."""
    return [Pin(m.rank, tuple(map(float, m.latlon)), m.path, m.similarity, err,
                None if err is None else err <= radius_m, m.db_index)
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


def _add_pins(m: folium.Map, pin_set: PinSet) -> None:
    layer = folium.FeatureGroup(name=html.escape(pin_set.label)).add_to(m)
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
    dlat = pad_m / 111_320.0
    dlon = pad_m / (111_320.0 * max(0.01, math.cos(math.radians(float(lat.mean())))))
    return [[float(lat.min() - dlat), float(lon.min() - dlon)], [float(lat.max() + dlat), float(lon.max() + dlon)]]


def offline_map(center: tuple[float, float]) -> folium.Map:
    """An empty folium map that needs nothing from the internet (see the module doc)."""
    m = folium.Map(location=list(center), zoom_start=17, tiles=None, control_scale=True, prefer_canvas=True,
                   zoom_snap=0.25)
    m.default_js = [("leaflet", LEAFLET_JS)]
    m.default_css = [("leaflet_css", LEAFLET_CSS)]
    m.get_root().header.add_child(folium.Element(
        f"<style>.leaflet-container{{background:{BACKGROUND}}} .sfrs-badge{{background:none;border:none}}"
        ".leaflet-control-layers,.leaflet-tooltip{font-size:12px}</style>"))
    return m


def retrieval_map(
    database_latlon: np.ndarray,
    pin_sets: Sequence[PinSet],
    query_latlon: tuple[float, float] | None = None,
    query_image: ImageLike | None = None,
    query_label: str = "Query",
    radius_m: float = CORRECT_RADIUS_M,
) -> folium.Map:
    """The database positions (grey dots), the query's true position with its ``radius_m``
    circle (when known) and each model's pins; zoomed to the query and the pins, with a layer
    switch to show or hide each model."""
    points = [p.latlon for s in pin_sets for p in s.pins] + ([tuple(query_latlon)] if query_latlon is not None else [])
    if not points:
        points = [tuple(map(float, np.asarray(database_latlon).mean(axis=0)))]
    m = offline_map(tuple(np.mean(points, axis=0)))
    db = np.asarray(database_latlon, dtype=np.float64).reshape(-1, 2)
    shown = db if len(db) <= MAX_DATABASE_POINTS else db[np.linspace(0, len(db) - 1, MAX_DATABASE_POINTS).astype(int)]
    name = f"Database ({len(db)} images" + (f", {len(shown)} shown)" if len(shown) < len(db) else ")")
    points_json = {"type": "MultiPoint", "coordinates": [[float(lon), float(lat)] for lat, lon in shown]}
    folium.GeoJson(points_json, name=name, control=True, marker=folium.CircleMarker(
        radius=2, color=DATABASE_COLOR, weight=0, fill=True, fill_opacity=0.7, interactive=False)).add_to(m)
    if query_latlon is not None:
        layer = folium.FeatureGroup(name=f"{html.escape(query_label)} and {radius_m:g} m circle").add_to(m)
        folium.Circle(list(query_latlon), radius=radius_m, color=QUERY_COLOR, weight=1.5, dash_array="5 4",
                      fill=True, fill_opacity=0.06, interactive=False).add_to(layer)
        marker = folium.Marker(list(query_latlon), icon=_badge("Q", QUERY_COLOR, "#ffffff", None), z_index_offset=1000,
                               tooltip=html.escape(f"{query_label} (true position)")).add_to(layer)
        if query_image is not None:
            marker.add_child(HtmlPopup(f'<div style="font:12px sans-serif"><b>{html.escape(query_label)}</b><br>'
                                       f'<img src="{thumbnail_uri(query_image)}" width="{THUMB_WIDTH}"></div>'))
    for pin_set in pin_sets:
        _add_pins(m, pin_set)
    folium.LayerControl(collapsed=False).add_to(m)
    m.fit_bounds(_bounds(points, radius_m + 5.0))
    return m


def show_map(m: folium.Map, key: str, height: int = 520) -> None:
    """Show a map on the page (no reruns on map clicks: nothing is read back)."""
    from streamlit_folium import st_folium

    st_folium(m, key=key, height=height, use_container_width=True, returned_objects=[])
