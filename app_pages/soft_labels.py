"""Region soft labels across generations: a query's difficult positives with the 9 regions drawn,
the distribution at each generation, its entropy, and the run's training curves."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from sfrs_core.explain.heatmap_core import load_rgb
from sfrs_core.explain.soft_labels import draw_regions, entropy, feature_size
from sfrs_core.figures import soft_label_evolution, training_curves
from sfrs_core.models.regions import REGION_NAMES
from sfrs_core.training.metrics_log import final_recalls
from viz_app.state import dataset, model, run_metrics, sidebar, soft_labels
from viz_app.widgets import figure_downloads

sel = sidebar()
st.title("Soft labels")
if sel is None:
    st.stop()

run = sel.other.run
st.caption(f"Run **{run.name}** ({run.kind}, the compared model in the sidebar). In generation g+1, SFRS trains "
           "on the soft labels of teacher g: a softmax over the similarities of the query to the 9 regions "
           "(whole image, 4 halves, 4 quarters) of each difficult positive, at temperature τ.")
snaps = soft_labels(run)
if not snaps:
    st.info(f"Run {run.name} saved no soft-label snapshots.")
else:
    split = dataset(run.data)[snaps[0].split]
    queries = snaps[0].queries
    c1, c2 = st.columns([1, 2])
    qi = c1.selectbox(f"Query ({snaps[0].split} split)", range(len(queries)), key="sl_query",
                      format_func=lambda i: f"query {int(queries[i])}")
    gens = [s.generation for s in snaps]
    g = c2.select_slider("Teacher generation", gens, value=gens[-1], key="sl_gen",
                         format_func=lambda x: f"gen {x} (τ = {snaps[gens.index(x)].temperature:g})")
    snap = snaps[gens.index(g)]
    dist = snap.distributions[qi]  # (k, 9)
    positives = snap.positives[qi]
    size = run.image_size()
    q_rgb = load_rgb(split.queries.image_path(int(queries[qi])), size)
    fhw = feature_size(model(str(run.path), run.last_generation), q_rgb.shape[:2])

    st.markdown(f"**Query {int(queries[qi])} and its {len(positives)} difficult positives**, regions tinted by "
                f"the soft labels of generation {g} (entropy {float(entropy(dist[None])[0]):.2f} nats)")
    cols = st.columns(len(positives) + 1)
    cols[0].image(q_rgb, caption=f"query {int(queries[qi])}", width="stretch")
    for col, p, weights in zip(cols[1:], positives, dist):
        rgb = load_rgb(split.database.image_path(int(p)), size)
        top = int(np.argmax(weights))
        col.image(draw_regions(rgb, fhw, weights=weights), width="stretch",
                  caption=f"db {int(p)}: {weights.sum():.0%}, most on {REGION_NAMES[top]}")

    dists = [s.distributions[qi] for s in snaps]
    temps = [s.temperature for s in snaps]
    glabels = [f"gen {s.generation}" for s in snaps]
    evolution = soft_label_evolution(dists, temps, glabels, title=f"Query {int(queries[qi])}")
    st.pyplot(evolution, width="stretch")
    figure_downloads(evolution, f"soft_labels_q{int(queries[qi])}", key="sl_fig")

    st.markdown(f"**Mean entropy of the {len(queries)} snapshot queries** (nats; uniform over "
                f"{dist.size} entries: {np.log(dist.size):.2f})")
    means = [float(s.entropy.mean()) for s in snaps]
    for col, lab, value, before in zip(st.columns(len(snaps)), glabels, means, [None] + means[:-1]):
        col.metric(lab, f"{value:.2f}", None if before is None else f"{value - before:+.2f}", delta_color="inverse")

st.subheader("Training curves")
log = run_metrics(run)
if not any(r.get("event") == "step" for r in log):
    st.info(f"Run {run.name} has no training steps in its metrics log.")
else:
    curves = training_curves(log)
    st.pyplot(curves, width="stretch")
    figure_downloads(curves, f"training_curves_{run.name}", key="sl_tc")
    table = pd.DataFrame(final_recalls(log))
    if not table.empty:
        st.markdown("Recall (%) at the end of each generation")
        st.dataframe(table, hide_index=True, width="stretch")
