"""Placeholder (being built)."""
import streamlit as st

from viz_app.state import sidebar

sidebar()
st.title("map")
st.info("Coming soon.")
