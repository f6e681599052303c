"""SFRS Studio — entry page.

A placeholder until the app issue lands: it lists the embedded SynthCity demo dataset, so
`make app` shows something real on a fresh machine. The library does the work; this page
only lays it out.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from sfrs_core.data import DatasetError, load_dataset
from sfrs_core.data.synthcity import is_complete

DEMO = Path("data/synthcity")

st.set_page_config(page_title="SFRS Studio", layout="wide")
st.title("SFRS Studio")
st.caption("Self-supervising fine-grained region similarities for image localization — explorer (early preview).")


@st.cache_data(show_spinner="Reading the dataset…")
def _summary(path: str) -> dict:
    return load_dataset(path).summary()


if not is_complete(DEMO):
    st.warning(f"The SynthCity demo dataset is not at `{DEMO}` yet. Run `make app` (it renders it once), "
               "or `python -m sfrs_core synth --preset demo --out data/synthcity`.")
    st.stop()

try:
    summary = _summary(str(DEMO))
except DatasetError as err:
    st.error(f"Could not read the demo dataset: {err}")
    st.stop()

st.subheader("Demo dataset: SynthCity")
st.dataframe(
    [
        {
            "split": name,
            "database": s["database"],
            "queries": s["queries"],
            "area (km²)": s["area_km2"],
            "positives ≤ 25 m per query (mean)": s["positives_25m"]["mean"],
        }
        for name, s in summary["splits"].items()
    ],
    hide_index=True,
)
sample = Path("assets/synthcity_sample.jpg")
if sample.is_file():
    st.image(str(sample), caption="Database views of one place in eight headings, two queries and a label map.")
