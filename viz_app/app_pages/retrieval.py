"""Query-retrieval grids: baseline beside the compared model, green/red by the 25 m rule."""
from __future__ import annotations

from functools import partial

import streamlit as st

from sfrs_core.figures import retrieval_grid
from viz_app.state import compared_results, selection_key, sidebar
from viz_app.widgets import cached_figure, figure_downloads, query_picker

sel = sidebar()
st.title("Retrieval")
if sel is None:
    st.stop()

split, a, b = compared_results(sel)
conditions = split.queries.condition
left, right = st.columns([5, 1])
with left:
    q = query_picker(conditions, a, b, sel.names, key="ret")
k = right.slider("Top-K", 1, min(10, a.k), 5, key="ret_k")


grid = partial(
    retrieval_grid,
    [split.queries.image_path(q)] * 2,
    [[split.database.image_path(int(i)) for i in r.ids[q, :k]] for r in (a, b)],
    [r.distances_m[q, :k].tolist() for r in (a, b)],
    row_labels=[sel.baseline.run.kind, sel.other.run.kind], group_size=2,
    title=f"Query {q}" + (f" ({conditions[q]})" if conditions is not None else ""),
)


cached_figure(("retrieval", *selection_key(sel), q, k), grid, f"retrieval_q{q}")
for col, choice, r in zip(st.columns(2), (sel.baseline, sel.other), (a, b)):
    verdict = ":green[**right**]" if r.correct[q, 0] else ":red[**wrong**]"
    col.markdown(f"**{choice.label}** — top-1 {verdict}, {r.distances_m[q, 0]:.1f} m away "
                 f"(similarity {r.similarities[q, 0]:.3f})")
figure_downloads(grid, f"retrieval_q{q}", key="ret_fig")
