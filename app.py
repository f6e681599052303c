"""SFRS Studio: the Streamlit app (``make app`` / ``streamlit run app.py``).

This file only sets the page up and routes; each page lives in ``app_pages/`` and draws the shared
sidebar itself (:func:`viz_app.state.sidebar`), so every page also runs on its own in tests.
The folder is not called ``pages/``: Streamlit treats a ``pages/`` folder beside the entry script
as a legacy multipage app, and a visitor whose first request is a deep link (``/map``) then got
that folder's page list and script instead of this navigation.
"""
from __future__ import annotations

import streamlit as st

from viz_app.serve import server_threads

server_threads()  # also under a bare `streamlit run app.py` (make app's viz_app.serve does it first)
st.set_page_config(page_title="SFRS Studio", layout="wide")

PAGES = [
    st.Page("app_pages/overview.py", title="Overview", default=True),
    st.Page("app_pages/retrieval.py", title="Retrieval", url_path="retrieval"),
    st.Page("app_pages/heatmaps.py", title="Heatmaps", url_path="heatmaps"),
    st.Page("app_pages/soft_labels.py", title="Soft labels", url_path="soft_labels"),
    st.Page("app_pages/map.py", title="Map", url_path="map"),
    st.Page("app_pages/upload.py", title="Upload", url_path="upload"),
    st.Page("app_pages/train.py", title="Train", url_path="train"),
]

st.navigation(PAGES).run()
