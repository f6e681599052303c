"""`python -m viz_app.warm` (run by make prepare): every page drawn once, headless, its figures on disk."""
from __future__ import annotations

import json
import os

from viz_app import figure_cache, warm


def test_warm_draws_every_page_once_and_keeps_the_figures(app_env, tmp_path, monkeypatch):
    import streamlit as st

    monkeypatch.setenv(figure_cache.CACHE_ENV, str(tmp_path / "cache"))
    st.cache_data.clear()  # as the fresh process of `python -m viz_app.warm` (earlier tests drew them in memory)
    done = warm.warm()
    assert [line.split(":")[0] for line in done] == list(warm.PAGES)
    assert not any("(" in line for line in done), done  # no page showed an error
    figures = list((tmp_path / "cache" / "figures").glob("*.img"))
    assert len(figures) >= 3  # at least the Overview's curves, a retrieval grid, the training curves
    assert json.loads((tmp_path / "cache" / "warm.json").read_text())["fingerprint"] == warm.fingerprint()
    assert warm.warm() == []  # nothing changed: nothing run


def test_the_fingerprint_follows_the_runs_files(app_env):
    before = warm.fingerprint()
    log = app_env / "tiny-sfrs" / "metrics.jsonl"
    stat = log.stat()
    os.utime(log, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    try:
        assert warm.fingerprint() != before
    finally:
        os.utime(log, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert warm.fingerprint() == before
