"""The app's disk cache of figure bytes (viz_app.figure_cache)."""
from __future__ import annotations

import os

import pytest

from viz_app import figure_cache


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(figure_cache.CACHE_ENV, str(tmp_path))
    return tmp_path / "figures"


def test_a_figure_is_drawn_once_and_then_read_from_disk(cache):
    calls = []

    def draw(data: bytes):
        return lambda: calls.append(data) or data

    key = ("training_curves", "/runs/a", (("metrics.jsonl", 12.5),))
    assert figure_cache.cached_bytes(key, draw(b"first")) == b"first"
    assert figure_cache.cached_bytes(key, draw(b"second")) == b"first"  # from disk: not drawn again
    assert calls == [b"first"]
    assert figure_cache.figure_file(key).read_bytes() == b"first" and figure_cache.figure_file(key).parent == cache
    # another input (a newer metrics log) is another figure
    newer = ("training_curves", "/runs/a", (("metrics.jsonl", 13.0),))
    assert figure_cache.cached_bytes(newer, draw(b"third")) == b"third"
    assert len(list(cache.glob("*.img"))) == 2


def test_changed_drawing_code_is_a_new_file(cache, monkeypatch):
    key = ("recall_curves", "x")
    before = figure_cache.figure_file(key)
    monkeypatch.setattr(figure_cache, "code_version", lambda: "other-code")
    assert figure_cache.figure_file(key) != before
    assert figure_cache.cached_bytes(key, lambda: b"redrawn") == b"redrawn"


def test_code_version_follows_the_sources(tmp_path, monkeypatch):
    (tmp_path / "sfrs_core" / "figures").mkdir(parents=True)
    (tmp_path / "sfrs_core" / "explain").mkdir(parents=True)
    source = tmp_path / "sfrs_core" / "figures" / "curves.py"
    source.write_text("A = 1\n")
    monkeypatch.setattr(figure_cache, "ROOT", tmp_path)
    figure_cache.code_version.cache_clear()
    try:
        first = figure_cache.code_version()
        source.write_text("A = 2\n")
        figure_cache.code_version.cache_clear()
        assert figure_cache.code_version() != first
    finally:
        figure_cache.code_version.cache_clear()


def test_prune_keeps_the_most_recent_figures(cache):
    for i in range(6):
        figure_cache.cached_bytes(("f", i), lambda i=i: bytes([i]))
        os.utime(figure_cache.figure_file(("f", i)), (1000 + i, 1000 + i))
    assert figure_cache.prune(limit=4) == 2
    kept = sorted(p.read_bytes()[0] for p in cache.glob("*.img"))
    assert kept == [2, 3, 4, 5]


def test_an_unwritable_cache_still_gives_the_figure(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(figure_cache.CACHE_ENV, str(blocker))
    assert figure_cache.cached_bytes(("f",), lambda: b"drawn") == b"drawn"


def test_a_map_is_kept_on_disk_unless_it_shows_a_visitors_photo(cache):
    from viz_app.map import map_html, offline_map

    def build():
        return offline_map((40.4406, -79.9959))

    html = map_html(("test-map", "kept"), build)
    assert "leaflet" in html.lower()
    assert figure_cache.figure_file(("map", "test-map", "kept")).read_bytes().decode() == html
    map_html(("test-map", "upload"), build, persist=False)
    assert not figure_cache.figure_file(("map", "test-map", "upload")).exists()
    assert len(list(cache.glob("*.img"))) == 1
