"""Region soft labels across generations: a query's difficult positives with the 9 regions drawn,
the distribution at each generation, its entropy, the query's GPS positives on the map as the
generation mines them (easiest, picked, left out), and the run's training curves."""
from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd
import streamlit as st

from sfrs_core.data.dataset import TRAIN_POS_RADIUS_M
from sfrs_core.data.synthcity.basemap import load_basemap, load_config
from sfrs_core.explain.heatmap_core import load_rgb
from sfrs_core.explain.positives import describe_split, descriptor_file
from sfrs_core.explain.soft_labels import draw_regions, entropy
from sfrs_core.figures import soft_label_evolution, training_curves
from sfrs_core.models.regions import REGION_NAMES
from sfrs_core.training.metrics_log import final_recalls
from viz_app.map import DEFAULT_FOV_DEG, known_heading, positive_color, positives_map, show_map
from viz_app.positives import positive_marks
from viz_app.state import (dataset, feature_size, model, picked_soft_labels, positive_miner, run_metrics, sidebar,
                           soft_labels)
from viz_app.widgets import cached_figure, map_tiles_choice, progress_button


def _stamp(path) -> tuple:
    """When ``path`` (a file, or a folder's files) last changed: a new snapshot or record redraws."""
    files = sorted(path.iterdir()) if path.is_dir() else [path] if path.exists() else []
    return tuple((f.name, f.stat().st_mtime) for f in files)


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
    fhw = feature_size(str(run.path), run.last_generation, q_rgb.shape[:2])

    st.markdown(f"**Query {int(queries[qi])} and its {len(positives)} difficult positives**, regions tinted by "
                f"the soft labels of generation {g} (entropy {float(entropy(dist[None])[0]):.2f} nats)")
    cols = st.columns(len(positives) + 1)
    cols[0].image(q_rgb, caption=f"query {int(queries[qi])}", width="stretch")
    for col, p, weights in zip(cols[1:], positives, dist):
        rgb = load_rgb(split.database.image_path(int(p)), size)
        top = int(np.argmax(weights))
        col.image(draw_regions(rgb, fhw, weights=weights), width="stretch",
                  caption=f"db {int(p)}: {weights.sum():.0%}, most on {REGION_NAMES[top]}")

    st.markdown(f"**Query {int(queries[qi])}'s GPS positives**: every database image within "
                f"{TRAIN_POS_RADIUS_M:g} m, whichever way it faces, is a positive by GPS; many show another scene")
    query = int(queries[qi])
    miner = positive_miner(run, g, split.name)
    mined = miner.mine(query) if miner is not None else None
    marks = positive_marks(split, query, mined, model_label=f"gen {g}")
    city = load_config(run.data)
    tiles = map_tiles_choice("sl_tiles_toggle")
    map_col, text_col = st.columns([3, 2])
    with map_col:
        show_map(lambda: positives_map(
            tuple(split.queries.latlon[query]), marks, query_heading=known_heading(split.queries.heading, query),
            query_image=split.queries.image_path(query), query_label=f"Query {query}",
            fov_deg=city.fov_deg if city is not None else DEFAULT_FOV_DEG,
            basemap=load_basemap(run.data, split.name), tiles=tiles, positives_label=f"GPS positives ({len(marks)})",
        ), key=("positives", str(run.path), g, split.name, query, tiles, tuple(marks)), height=430)
    with text_col:
        if mined is None:
            st.markdown("Wedges: where each positive looks, from the query's (black) position. Which of them "
                        f"does generation {g} treat as the same scene? Mining needs its descriptors of the whole "
                        f"{split.name} split (the k-reciprocal re-ranking looks at neighbours of neighbours).")
            n = len(split.database) + len(split.queries)
            progress_button(f"Mine with generation {g} ({n} images, once: about {0.15 * n:.0f} s)",
                            "sl_mine", lambda on_progress: describe_split(
                                model(str(run.path), g), split, size, descriptor_file(run, g, split.name), on_progress))
        else:
            cfg = miner.cfg
            st.markdown(
                f"As generation {g}'s model mines them (the trainer's own `TupleMiner`): "
                f"**easiest** (★, black outline): the positive it ranks first, for the hard loss; "
                f"**picked** (pink): the {len(mined.picked)} difficult positives for the soft loss, taken from "
                f"its {len(mined.pool)} best-ranked by k-reciprocal re-ranking (promoted first, then unmoved, up to "
                f"{cfg.pos_num}); **grey, dashed**: left out (demoted, or outside the pool). Hover a label for its "
                "rank. Below: each positive's image; a picked one with the share of the soft labels "
                f"generation {g} gives it as a teacher (τ = {snap.temperature:g}).")
    shares = {}
    if mined is not None and len(mined.picked):
        soft = picked_soft_labels(str(run.path), g, split.name, query, tuple(int(i) for i in mined.picked),
                                  snap.temperature)
        shares = {int(i): (float(w.sum()), REGION_NAMES[int(w.argmax())]) for i, w in zip(mined.picked, soft)}
    per_row = 8
    for start in range(0, len(marks), per_row):
        for col, mark in zip(st.columns(per_row), marks[start:start + per_row]):
            star = " ★ easiest" if mark.easiest else ""
            heading = "" if mark.heading is None else f" · {mark.heading:.0f}°"
            col.image(str(split.database.image_path(mark.db_index)), width="stretch",
                      caption=f"{mark.label}: {mark.distance_m:.1f} m{heading}{star}")
            if mark.picked is not None:
                share, region = shares.get(mark.db_index, (0.0, ""))
                role = (f"<b>picked</b>: {share:.0%} of the soft labels, most on {region}" if mark.picked
                        else "left out")
                col.markdown(f"<div style='font-size:0.8em;margin-top:-0.6em;border-left:4px solid "
                             f"{positive_color(mark)};padding-left:4px'>{role}</div>", unsafe_allow_html=True)

    dists = [s.distributions[qi] for s in snaps]
    temps = [s.temperature for s in snaps]
    glabels = [f"gen {s.generation}" for s in snaps]
    evolution = partial(soft_label_evolution, dists, temps, glabels, title=f"Query {int(queries[qi])}")
    snapshot_stamp = tuple((s.generation, s.temperature) for s in snaps)
    cached_figure(("soft_label_evolution", str(run.path), snapshot_stamp, _stamp(run.path / "soft_labels"), qi),
                  evolution, f"soft_labels_q{int(queries[qi])}", "sl_fig")

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
    cached_figure(("training_curves", str(run.path), _stamp(run.path / "metrics.jsonl")), partial(training_curves, log),
                  f"training_curves_{run.name}", "sl_tc")
    table = pd.DataFrame(final_recalls(log))
    if not table.empty:
        st.markdown("Recall (%) at the end of each generation")
        st.table(table, hide_index=True)  # a static table: no interactive grid to load for 3 rows
