"""Placeholder (being built)."""
import streamlit as st

from viz_app.state import sidebar

sidebar()
st.title("soft_labels")
st.info("Coming soon.")
