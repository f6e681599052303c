"""Maps of a query and what two models retrieved for it (folium, shown in an ``st.iframe``): the
Streamlit side, and the one place the pages import the map API from.

The maps are built elsewhere: what they mark, as plain data, in :mod:`viz_app.map_marks`; their
folium layers in :mod:`viz_app.map_layers`; whole offline maps in :mod:`viz_app.map_build`; the
geometry in metres (view cones, bounds) in :mod:`sfrs_core.data.geo`.

:func:`show_map` renders a map's whole HTML page once per set of inputs (a cache key the page
gives; building and rendering a map with its popups and layers costs about 0.1 s of held GIL,
paid on every rerun before) and shows it with ``st.iframe`` as a ``srcdoc`` frame. Such a frame
resolves relative URLs against the page that embeds it, ``<server>[/<baseUrlPath>]/<page>``, so
the Leaflet URLs (:data:`~viz_app.map_build.LEAFLET_JS`) are relative (``app/static/...``): they
name the same server's static folder also when the app runs under a ``server.baseUrlPath``.
"""
from __future__ import annotations

from collections.abc import Callable

import folium
import streamlit as st

from sfrs_core.data.geo import metres_per_degree, view_cone
from viz_app.map_build import (BACKGROUND, DATABASE_COLOR, LEAFLET_CSS, LEAFLET_JS, MAX_DATABASE_POINTS, offline_map,
                               positives_map, retrieval_map)
from viz_app.map_layers import (BUILDING_STYLE, CONES_ZOOM, DATABASE_CONE_M, DATABASE_CONE_RADIUS_M,
                                DATABASE_CONE_STYLE, DEFAULT_FOV_DEG, EASIEST_RING, MAX_DATABASE_CONES, MAX_ZOOM,
                                NEAR_ZOOM, OSM_ATTRIBUTION, OSM_TILES, PIN_CONE_M, QUERY_CONE_M, STREET_STYLE,
                                THUMB_WIDTH, TILE_CHOICES, TILES_ENV, HtmlPopup, LabelLayer, ZoomVisibility,
                                add_basemap, add_database_cones, add_online_tiles, add_positives, thumbnail_uri,
                                tiles_from_env)
from viz_app.map_marks import (NOT_PICKED_COLOR, PICKED_COLOR, POSITIVE_COLOR, ImageLike, Pin, PinSet, PositiveMark,
                               known_heading, pins_from_localization, pins_from_results, positive_color)

__all__ = [
    "BACKGROUND", "BUILDING_STYLE", "CONES_ZOOM", "DATABASE_COLOR", "DATABASE_CONE_M", "DATABASE_CONE_RADIUS_M",
    "DATABASE_CONE_STYLE", "DEFAULT_FOV_DEG", "EASIEST_RING", "LEAFLET_CSS", "LEAFLET_JS", "MAX_DATABASE_CONES",
    "MAX_DATABASE_POINTS", "MAX_ZOOM", "NEAR_ZOOM", "NOT_PICKED_COLOR", "OSM_ATTRIBUTION", "OSM_TILES",
    "PICKED_COLOR", "PIN_CONE_M", "POSITIVE_COLOR", "QUERY_CONE_M", "STREET_STYLE", "THUMB_WIDTH", "TILE_CHOICES",
    "TILES_ENV", "HtmlPopup", "ImageLike", "LabelLayer", "Pin", "PinSet", "PositiveMark", "ZoomVisibility",
    "add_basemap", "add_database_cones", "add_online_tiles", "add_positives", "known_heading", "map_html",
    "metres_per_degree", "offline_map", "pins_from_localization", "pins_from_results", "positive_color",
    "positives_map", "retrieval_map", "show_map", "thumbnail_uri", "tiles_from_env", "view_cone",
]


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
