"""The real app in Debian's Chromium (Playwright): every page renders with no error box.

Starts ``streamlit run app.py`` on 127.0.0.1 over the tiny test runs, opens each page, waits
until Streamlit has finished rendering, and saves a screenshot per page under
``test-artifacts/screenshots/`` (``make test`` installs chromium first).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser import CHROMIUM, PAGES, ROOT, serve_app, upload_photo, visit_pages

SHOTS = ROOT / "test-artifacts" / "screenshots"
NAV = ["Overview", "Retrieval", "Heatmaps", "Soft labels", "Map", "Upload", "Train"]


def test_every_page_renders_in_chromium_without_an_error_box(tiny_runs):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium (apt-get install chromium)")
    from sfrs_core.prepare import prepare

    prepare((str(tiny_runs),), progress=False)  # what `make app` does before serving
    with serve_app({"SFRS_STUDIO_RUN_DIRS": str(tiny_runs)}) as url:
        visits = visit_pages(url, list(PAGES), SHOTS, maps=True)
    assert [v.name for v in visits] == list(PAGES)
    for v in visits:
        assert not v.errors, (v.name, v.errors)
        assert v.nav == NAV, (v.name, v.nav)
        assert v.screenshot.stat().st_size > 10_000, v.name  # a real page, not a blank one
        # offline: the pages, their maps (Leaflet, SynthCity's streets and buildings, view cones) and
        # everything in them come from this server, nothing from a CDN or a tile server
        assert v.requests and not _outside(v.requests, url), (v.name, _outside(v.requests, url))
    maps = {v.name: v for v in visits if any(u.endswith("/app/static/leaflet/leaflet.js") for u in v.requests)}
    assert {"map", "soft_labels"} <= set(maps)


def _outside(requests: list[str], url: str) -> list[str]:
    """The requests that leave the app's server."""
    return [u for u in requests if not u.startswith((url + "/", "data:", "blob:", "about:"))]


def test_online_map_tiles_are_opt_in(tiny_runs):
    """SFRS_MAP_TILES=osm: the Map page asks OpenStreetMap's tile server for its tiles (and nothing
    else leaves the app); without it (above) nothing does."""
    with serve_app({"SFRS_STUDIO_RUN_DIRS": str(tiny_runs), "SFRS_MAP_TILES": "osm"}) as url:
        (visit,) = visit_pages(url, ["map"], maps=True)
    outside = _outside(visit.requests, url)
    assert outside and all(u.startswith("https://tile.openstreetmap.org/") for u in outside), outside


def test_make_app_launcher_serves_the_same_app(tiny_runs):
    """`make app` starts the server through viz_app.serve (libraries imported first): same pages."""
    with serve_app({"SFRS_STUDIO_RUN_DIRS": str(tiny_runs)}, preload=True) as url:
        visits = visit_pages(url, ["retrieval", "map"])
    for v in visits:
        assert not v.errors and v.nav == NAV, (v.name, v.errors, v.nav)


def test_uploading_a_photo_in_chromium_shows_both_models_matches(tiny_runs, tiny_city, tmp_path):
    from PIL import Image

    from sfrs_core.data import load_dataset

    photo = tmp_path / "street.jpg"
    Image.open(load_dataset(str(tiny_city))["test"].queries.image_path(0)).convert("RGB").save(photo, quality=90)
    with serve_app({"SFRS_STUDIO_RUN_DIRS": str(tiny_runs)}, preload=True) as url:
        visit = upload_photo(url, photo)
    assert not visit.errors, visit.errors
    assert len(visit.metrics) == 2 and all("top-1" in m for m in visit.metrics), visit.metrics  # one per model
