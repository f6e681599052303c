"""Small reusable widgets."""
from __future__ import annotations

import streamlit as st
from matplotlib.figure import Figure

from sfrs_core.figures import figure_bytes

_MIME = {"png": "image/png", "svg": "image/svg+xml", "pdf": "application/pdf"}


def figure_downloads(fig: Figure, stem: str, key: str) -> None:
    """PNG, SVG and PDF download buttons for a matplotlib figure."""
    cols = st.columns(3)
    for col, fmt in zip(cols, ("png", "svg", "pdf")):
        col.download_button(f"⬇ {fmt.upper()}", figure_bytes(fig, fmt), file_name=f"{stem}.{fmt}",
                            mime=_MIME[fmt], key=f"{key}_{fmt}", use_container_width=True)
