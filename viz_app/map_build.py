"""Whole maps, ready to render: an empty offline map (:func:`offline_map`), a query with what two
models retrieved for it (:func:`retrieval_map`) and a query with its GPS positives
(:func:`positives_map`), put together from :mod:`viz_app.map_layers`.

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

Why the Leaflet URLs are relative: see :mod:`viz_app.map` (the maps are shown as ``srcdoc`` frames).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import folium
import numpy as np

from sfrs_core.data.geo import padded_bounds
from sfrs_core.figures.style import CORRECT_RADIUS_M
from viz_app.map_layers import (CONES_ZOOM, DATABASE_CONE_STYLE, DEFAULT_FOV_DEG, MAX_ZOOM, NEAR_ZOOM, PIN_CONE_M,
                                QUERY_CONE_M, ZoomVisibility, add_basemap, add_database_cones, add_online_tiles,
                                add_pins, add_positives, add_query)
from viz_app.map_marks import ImageLike, PinSet, PositiveMark

if TYPE_CHECKING:
    from sfrs_core.data.synthcity.basemap import Basemap

#: Leaflet as served by the app (``static/leaflet``), relative to the app's pages (see :mod:`viz_app.map`).
LEAFLET_JS = "app/static/leaflet/leaflet.js"
LEAFLET_CSS = "app/static/leaflet/leaflet.css"
BACKGROUND = "#f4f6f8"
DATABASE_COLOR = "#9aa3ad"
MAX_DATABASE_POINTS = 5000  # more database places (distinct positions) than this are thinned evenly

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
        add_query(m, tuple(query_latlon), query_label, query_image, query_heading, fov_deg, radius_m)
    for pin_set in pin_sets:
        add_pins(m, pin_set, fov_deg)
    return _finish(m, cones, padded_bounds(points, radius_m + 5.0))


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
    add_query(m, tuple(query_latlon), query_label, query_image, query_heading, fov_deg, radius_m)
    pad = max(radius_m, 0.8 * max(QUERY_CONE_M, radius_m + PIN_CONE_M))  # the circle and most of the cones
    return _finish(m, None, padded_bounds([tuple(query_latlon)], pad), collapsed=True)
