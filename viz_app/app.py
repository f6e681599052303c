"""SFRS Studio: the Streamlit app (``sfrs-studio`` / ``make app``; ``streamlit run app.py`` in a checkout).

This file only sets the page up and routes; each page lives in ``app_pages/`` beside it and draws
the shared sidebar itself (:func:`viz_app.state.sidebar`), so every page also runs on its own in
tests. The pages, ``static/`` (Leaflet) and ``.streamlit/config.toml`` sit in this package, so an
installed ``sfrs-studio`` finds them wherever it runs: Streamlit serves ``static/`` and reads
``.streamlit/`` beside the main script. The folder is not called ``pages/``: Streamlit treats a ``pages/`` folder beside the entry script
as a legacy multipage app, and a visitor whose first request is a deep link (``/map``) then got
that folder's page list and script instead of this navigation.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from viz_app.guard import apply_server_policy
from viz_app.serve import server_threads

server_threads()  # also under a bare `streamlit run app.py` (make app's viz_app.serve does it first)
st.set_page_config(page_title="SFRS Studio", layout="wide")
apply_server_policy()  # no tracebacks for visitors of an exposed server; refuse an unsafe one
HERE = Path(__file__).resolve().parent / "app_pages"

PAGES = [
    st.Page(HERE / "overview.py", title="Overview", default=True),
    st.Page(HERE / "retrieval.py", title="Retrieval", url_path="retrieval"),
    st.Page(HERE / "heatmaps.py", title="Heatmaps", url_path="heatmaps"),
    st.Page(HERE / "soft_labels.py", title="Soft labels", url_path="soft_labels"),
    st.Page(HERE / "map.py", title="Map", url_path="map"),
    st.Page(HERE / "upload.py", title="Upload", url_path="upload"),
    st.Page(HERE / "train.py", title="Train", url_path="train"),
]

st.navigation(PAGES).run()
