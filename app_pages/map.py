"""Map of a query's true position and the top-K database images both models retrieved for it."""
from __future__ import annotations

import streamlit as st

from sfrs_core.figures.style import CORRECT_RADIUS_M, color_map
from viz_app.map import PinSet, pins_from_results, retrieval_map, show_map
from viz_app.state import compared_results, sidebar
from viz_app.widgets import query_picker

sel = sidebar()
st.title("Map")
if sel is None:
    st.stop()

split, a, b = compared_results(sel)
left, right = st.columns([5, 1])
with left:
    q = query_picker(split.queries.condition, a, b, sel.names, key="map")
k = right.slider("Top-K", 1, min(10, a.k, b.k), 5, key="map_k")

labels = [sel.baseline.label, sel.other.label]
colors = color_map(labels)
pin_sets = [
    PinSet(f"Baseline: {labels[0]}", pins_from_results(a, q, k, split.database.latlon, split.database.image_path),
           colors[labels[0]], square=False),
    PinSet(f"Compared: {labels[1]}", pins_from_results(b, q, k, split.database.latlon, split.database.image_path),
           colors[labels[1]], square=True),
]
m = retrieval_map(split.database.latlon, pin_sets, query_latlon=tuple(split.queries.latlon[q]),
                  query_image=split.queries.image_path(q), query_label=f"Query {q}")
show_map(m, key="map_view")
st.caption(
    f"**Q**: the query's true position, with the {CORRECT_RADIUS_M:g} m circle. Round badges: the baseline's "
    "top-K (left of their spot); square badges: the compared model's (right of it); the number is the rank "
    f"(several when views of one spot share it). :green[**Green**]: within {CORRECT_RADIUS_M:g} m of the query, "
    ":red[**red**]: farther. Grey dots: the database. Click a badge for its images; the box at the top right "
    "shows or hides each layer."
)
for col, label, r in zip(st.columns(2), labels, (a, b)):
    verdict = ":green[**right**]" if r.correct[q, 0] else ":red[**wrong**]"
    hits = int(r.correct[q, :k].sum())
    col.markdown(f"**{label}**: top-1 {verdict}, {r.distances_m[q, 0]:.1f} m away; "
                 f"{hits} of the top {k} within {CORRECT_RADIUS_M:g} m")
