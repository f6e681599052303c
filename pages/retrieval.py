"""Query-retrieval grids: baseline beside the compared model, green/red by the 25 m rule."""
from __future__ import annotations

import numpy as np
import streamlit as st

from sfrs_core.explain.outcomes import query_outcomes
from sfrs_core.figures import retrieval_grid
from viz_app.state import dataset, results, sidebar
from viz_app.widgets import figure_downloads

sel = sidebar()
st.title("Retrieval")
if sel is None:
    st.stop()

split = dataset(sel.data)[sel.split]
a = results(str(sel.baseline.run.path), sel.split, sel.baseline.generation)
b = results(str(sel.other.run.path), sel.split, sel.other.generation)
names = (sel.baseline.run.kind, sel.other.run.kind)
if names[0] == names[1]:
    names = ("baseline", "compared")
groups = {"all queries": np.arange(len(split.queries)), **query_outcomes(a, b, names)}
conditions = split.queries.condition
c1, c2, c3 = st.columns([2, 2, 1])
group = c1.selectbox("Queries", list(groups), format_func=lambda g: f"{g} ({len(groups[g])})", key="ret_group")
candidates = groups[group]
if conditions is not None:
    times = sorted({c.split("+")[0] for c in conditions})
    when = c2.multiselect("Condition", times, default=times, key="ret_cond")
    candidates = np.array([q for q in candidates if conditions[q].split("+")[0] in when], dtype=int)
k = c3.slider("Top-K", 1, min(10, a.k), 5, key="ret_k")
if len(candidates) == 0:
    st.warning("No query matches these filters.")
    st.stop()
if "ret_query" not in st.session_state or st.session_state.ret_query not in candidates:
    st.session_state.ret_query = int(candidates[0])
pick, rand = st.columns([4, 1])
pick.selectbox("Query id", candidates.tolist(), key="ret_query")
if rand.button("Random query", use_container_width=True):
    st.session_state.ret_query = int(np.random.default_rng().choice(candidates))
    st.rerun()
q = int(st.session_state.ret_query)

labels = [sel.baseline.label, sel.other.label]
fig = retrieval_grid(
    [split.queries.image_path(q)] * 2,
    [[split.database.image_path(int(i)) for i in r.ids[q, :k]] for r in (a, b)],
    [r.distances_m[q, :k].tolist() for r in (a, b)],
    row_labels=[sel.baseline.run.kind, sel.other.run.kind], group_size=2,
    title=f"Query {q}" + (f" ({conditions[q]})" if conditions is not None else ""),
)
st.pyplot(fig, use_container_width=True)
cols = st.columns(2)
for col, label, r in zip(cols, labels, (a, b)):
    right = ":green[**right**]" if r.correct[q, 0] else ":red[**wrong**]"
    col.markdown(f"**{label}** — top-1 {right}, {r.distances_m[q, 0]:.1f} m away (similarity {r.similarities[q, 0]:.3f})")
figure_downloads(fig, f"retrieval_q{q}", key="ret_fig")
