"""Heatmaps: why each model matches a query to its top-1, SARE beside SFRS, and where attention
falls by semantic class (this query and the whole split)."""
from __future__ import annotations

from functools import partial

import numpy as np
import streamlit as st
from PIL import Image

from sfrs_core.explain.attention import class_shares
from sfrs_core.explain.overlay import overlay
from sfrs_core.figures import attention_bars, heatmap_grid
from sfrs_core.prepare import attention_summary, cached_attention
from viz_app.guard import heavy, may_write
from viz_app.state import Choice, compared_results, pair_heatmaps, selection_key, sidebar
from viz_app.widgets import cached_figure, figure_downloads, query_picker

METHOD_NAMES = {"gradcam": "Grad-CAM (similarity)", "decomp": "Exact decomposition", "activation": "Activation"}
COLORMAPS = ["auto", "jet", "turbo", "inferno", "viridis", "RdBu_r"]

sel = sidebar()
st.title("Heatmaps")
if sel is None:
    st.stop()

split, *res = compared_results(sel)
choices = (sel.baseline, sel.other)
names = sel.names
q = query_picker(split.queries.condition, *res, names, key="hm")
c1, c2, c3 = st.columns([2, 1, 1])
method = c1.radio("Method", list(METHOD_NAMES), format_func=METHOD_NAMES.get, horizontal=True, key="hm_method")
opacity = c2.slider("Opacity", 0.0, 1.0, 0.5, 0.05, key="hm_opacity")
cmap = c3.selectbox("Colormap", COLORMAPS, key="hm_cmap",
                    help="auto: jet for non-negative maps, red-blue for the signed decomposition")
colormap = None if cmap == "auto" else cmap


def label(c: Choice, name: str) -> str:
    return f"{name} gen {c.generation}"


labels = [label(c, n) for c, n in zip(choices, names)]
pairs = [pair_heatmaps(str(c.run.path), c.generation, sel.split, q, method) for c in choices]
key = (*selection_key(sel), q, method)


grid = partial(  # overlays made here (a few ms), the figure drawn in the figure worker
    heatmap_grid,
    [pairs[0].query_rgb],
    {lab: [overlay(p.query_rgb, p.query.image, colormap, opacity, signed=p.query.signed)]
     for lab, p in zip(labels, pairs)},
    [[overlay(p.match_rgb, p.match.image, colormap, opacity, signed=p.match.signed) for p in pairs]],
    similarities={lab: [p.similarity] for lab, p in zip(labels, pairs)},
    match_titles=[f"{lab} top-1" for lab in labels],
    match_captions=[[f"{r.distances_m[q, 0]:.0f} m" for r in res]],
    match_correct=[[bool(r.correct[q, 0]) for r in res]],
    title=f"Query {q}: {METHOD_NAMES[method]}",
)


cached_figure(("heatmaps", *key, opacity, cmap), grid, f"heatmaps_{method}_q{q}")
st.caption("Columns: the query; its heatmap under each model (towards that model's top-1); each model's top-1 "
           "with its heatmap towards the query, framed green within 25 m, red beyond.")
figure_downloads(grid, f"heatmaps_{method}_q{q}", key="hm_fig")

st.subheader("Attention by semantic class")
if split.queries.label_root is None:
    st.info("This dataset has no semantic label maps (only SynthCity has them), so attention cannot be split by class.")
    st.stop()

label_map = np.asarray(Image.open(split.queries.label_path(q)))
this_query = {lab: class_shares(p.query.image, label_map) for lab, p in zip(labels, pairs)}
this_query["image area"] = class_shares(np.ones(label_map.shape), label_map)

whole: dict[str, dict[str, float]] = {}
area = None
missing = []
for lab, c in zip(labels, choices):
    summary = cached_attention(c.run, c.generation, sel.split, method)
    if summary is None:
        missing.append((lab, c))
    else:
        whole[lab], area = summary["shares"], summary["area"]
whole["image area"] = area  # last, as in this query's bars

left, right = st.columns(2)
with left:
    st.markdown(f"**This query** ({METHOD_NAMES[method]})")
    cached_figure(("attention_query", *key), partial(attention_bars, this_query, width="one"),
                  f"attention_{method}_q{q}", "hm_bq")
with right:
    st.markdown(f"**Whole {sel.split} split** ({len(split.queries)} queries, each towards its own top-1)")
    if missing:
        todo = ", ".join(lab for lab, _ in missing)
        if not may_write():  # the summary is written to the run's cache: not for a viewer
            st.caption(f"Not computed yet for {todo} on this server.")
        elif st.button(f"Compute for {todo} (about {0.2 * len(split.queries) * len(missing):.0f} s)", key="hm_whole"):
            with heavy() as go:
                if go:
                    bar = st.progress(0.0)
                    for lab, c in missing:
                        attention_summary(
                            c.run, c.generation, sel.split, method, place_split=split,
                            on_progress=lambda done, total, lab=lab: bar.progress(done / total,
                                                                                  text=f"{lab}: {done}/{total}"))
            if go:
                st.rerun()  # cached on disk now: redraw with the bars instead of the button
    if not missing:
        cached_figure(("attention_split", *key[:-2], method), partial(attention_bars, whole, width="one"),
                      f"attention_{method}_{sel.split}", "hm_bw")
