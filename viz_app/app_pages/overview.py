"""SFRS Studio — overview: the runs found, their recall, and recall@N curves."""
from __future__ import annotations

from functools import partial

import pandas as pd
import streamlit as st

from sfrs_core.explain.figure_set import figure_set_zip
from sfrs_core.figures import recall_by_condition, recall_curves
from viz_app.bootstrap_panel import failure_notice, setup_panel, setup_target
from viz_app.guard import heavy
from viz_app.state import run_dirs, runs, seed_statistics, sidebar
from viz_app.widgets import cached_figure, figure_downloads

sel = sidebar(setup=True)
st.title("SFRS Studio")
st.caption("Image localization by retrieval — SARE and SFRS (Ge et al., ECCV 2020) compared on your data.")
if sel is None:
    pending = setup_target(r.data for r in runs())  # a fresh checkout: SynthCity not rendered yet
    if pending is not None:
        setup_panel(pending, run_dirs())
    st.stop()
failure_notice(sel.data, run_dirs())

rows = []
for run in [r for r in runs() if r.data == sel.data]:
    for g in run.result_generations:  # (a shipped seed may lack a middle generation's weights, not its recall)
        rec = run.recall(sel.split, g)
        rows.append({"run": run.name, "kind": run.kind, "seed": run.config.get("seed", 0), "generation": g,
                     "loss": run.loss, **{f"R@{n}": f"{100 * rec[n]:.1f}" if n in rec else "—" for n in (1, 5, 10, 20)},
                     "trunk weights": run.trunk_weights_text})
st.subheader(f"Recall on `{sel.data}` / {sel.split} (%, 25 m)")
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")

seeds = seed_statistics(sel.data, sel.split)
if seeds.rows:
    st.subheader("Over seeds: mean ± std (%)")
    st.caption("Runs whose configurations differ only in their seed, together: recall as the mean and sample "
               "standard deviation over seeds, for all queries and per time of day. One seed is one draw; "
               "compare methods by these, not by a single run.")
    st.dataframe(pd.DataFrame(seeds.rows), hide_index=True, width="stretch")
    if seeds.paired:
        st.subheader("Paired: each generation against its own seed's SARE baseline (points of recall)")
        st.caption("Generation 0 of every SFRS run is its SARE baseline, so each seed and each query is a pair. "
                   "Brackets: a 95 % interval from a bootstrap over seeds × queries; the sign test counts seeds "
                   "up against down (with 5 seeds its smallest p is 0.0625). A gain is established only "
                   "where the interval excludes 0.")
        st.dataframe(pd.DataFrame(seeds.paired), hide_index=True, width="stretch")
    if seeds.chart:
        left, right = st.columns([3, 2])
        cond_fig = partial(recall_by_condition, seeds.chart, seeds.errors, n=1,
                           title="Recall@1 by condition (mean ± std over seeds)")
        with left:
            cached_figure(("recall_by_condition", repr(seeds.chart), repr(seeds.errors)), cond_fig, "recall_by_condition")
        with right:
            figure_downloads(cond_fig, "recall_by_condition", key="overview_seeds")

curves = {c.label: c.run.recall(sel.split, c.generation) for c in (sel.baseline, sel.other)}
left, right = st.columns([3, 2])
with left:
    cached_figure(("recall_curves", repr(curves)), partial(recall_curves, curves, title="Recall@N"), "recall_curves")
with right:
    for label, rec in curves.items():
        st.metric(f"R@1 — {label}", f"{100 * rec[1]:.1f} %" if 1 in rec else "—")
    figure_downloads(lambda: recall_curves(curves, title="Recall@N"), "recall_curves", key="overview_recall")

st.subheader("Export")
st.caption("The paper figure set for the two chosen models (recall curves, retrieval and heatmap grids, "
           "soft-label evolution, attention by class; PDF, SVG and PNG) as one zip; the same as "
           "`python -m sfrs_core export-figures`.")
chosen = (sel.baseline, sel.other)
export_key = (sel.split, *[(str(c.run.path), c.generation) for c in chosen])
if st.button("Export paper figures", key="export_go", icon=":material/folder_zip:"):
    with heavy() as go:  # one of the server's few heavy slots, or "busy, try again"
        if go:
            with st.spinner("Writing the figure set (about a minute on the demo models)…"):
                data = figure_set_zip([str(c.run.path) for c in chosen], split=sel.split,
                                      generations=[c.generation for c in chosen], progress=False)
            st.session_state["export_zip"] = (export_key, data)
done = st.session_state.get("export_zip")
if done and done[0] == export_key:
    st.download_button(f"Download sfrs_figures.zip ({len(done[1]) / 1e6:.1f} MB)", done[1], file_name="sfrs_figures.zip",
                       mime="application/zip", key="export_dl", icon=":material/download:", on_click="ignore")
