"""SFRS Studio: the Streamlit app (``make app`` / ``streamlit run app.py``).

This file only sets the page up and routes; each page lives in ``pages/`` and draws the shared
sidebar itself (:func:`viz_app.state.sidebar`), so every page also runs on its own in tests.
"""
from __future__ import annotations

import streamlit as st

st.set_page_config(page_title="SFRS Studio", layout="wide")

PAGES = [
    st.Page("pages/overview.py", title="Overview", default=True),
    st.Page("pages/retrieval.py", title="Retrieval", url_path="retrieval"),
    st.Page("pages/heatmaps.py", title="Heatmaps", url_path="heatmaps"),
    st.Page("pages/soft_labels.py", title="Soft labels", url_path="soft_labels"),
    st.Page("pages/map.py", title="Map", url_path="map"),
    st.Page("pages/upload.py", title="Upload", url_path="upload"),
    st.Page("pages/train.py", title="Train", url_path="train"),
]

st.navigation(PAGES).run()
