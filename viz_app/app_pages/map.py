"""Map of a query's true position and view, the top-K database images both models retrieved for it,
SynthCity's streets and buildings, and (validation queries) the query's GPS positives as mined."""
from __future__ import annotations

import streamlit as st

from sfrs_core.data.dataset import TRAIN_POS_RADIUS_M
from sfrs_core.data.synthcity.basemap import load_basemap, load_config
from sfrs_core.explain.positives import describe_split, descriptor_file
from sfrs_core.figures.style import CORRECT_RADIUS_M, color_map
from viz_app.map import DEFAULT_FOV_DEG, PinSet, known_heading, pins_from_results, retrieval_map, show_map
from viz_app.positives import positive_marks
from viz_app.state import compared_results, dataset, model, positive_miner, selection_key, sidebar
from viz_app.widgets import map_tiles_choice, progress_button, query_picker

sel = sidebar()
st.title("Map")
if sel is None:
    st.stop()

tiles = map_tiles_choice("map_tiles_toggle")
split, a, b = compared_results(sel)
left, right = st.columns([5, 1])
with left:
    q = query_picker(split.queries.condition, a, b, sel.names, key="map")
k = right.slider("Top-K", 1, min(10, a.k, b.k), 5, key="map_k")

city = load_config(sel.data)
fov = city.fov_deg if city is not None else DEFAULT_FOV_DEG
labels = [sel.baseline.label, sel.other.label]
colors = color_map(labels)
db = split.database
pin_sets = [
    PinSet(f"Baseline: {labels[0]}", pins_from_results(a, q, k, db.latlon, db.image_path, db.heading),
           colors[labels[0]], square=False),
    PinSet(f"Compared: {labels[1]}", pins_from_results(b, q, k, db.latlon, db.image_path, db.heading),
           colors[labels[1]], square=True),
]
mining = sel.split != "test"  # training mines positives of training (and validation) queries, not test ones
miner = positive_miner(sel.other.run, sel.other.generation, sel.split) if mining else None
mined = miner.mine(q) if miner is not None else None
marks = positive_marks(split, q, mined, model_label=f"gen {sel.other.generation}") if mining else []
show_map(lambda: retrieval_map(
    db.latlon, pin_sets, query_latlon=tuple(split.queries.latlon[q]), query_image=split.queries.image_path(q),
    query_label=f"Query {q}", query_heading=known_heading(split.queries.heading, q), database_heading=db.heading,
    fov_deg=fov, basemap=load_basemap(sel.data, sel.split), tiles=tiles, positives=marks,
    positives_label=f"GPS positives within {TRAIN_POS_RADIUS_M:g} m ({len(marks)})",
), key=("map", *selection_key(sel), q, k, tiles, tuple(marks)))
st.caption(
    f"**Q**: the query's true position, with the {CORRECT_RADIUS_M:g} m circle and, where its heading is known, "
    "the wedge it sees. Round badges: the baseline's top-K (left of their spot); square badges: the compared "
    "model's (right of it); the number is the rank (several when views of one spot share it); each retrieved "
    f"image's wedge shows which way it looks. :green[**Green**]: within {CORRECT_RADIUS_M:g} m of the query, "
    ":red[**red**]: farther. Grey dots: the database (zoom in for each image's wedge). "
    + ("SynthCity's streets, buildings and shop names are drawn from the generator's own city model. "
       if city is not None else "")
    + "Click a badge for its images; the box at the top right shows or hides each layer."
)
if mining:
    what = (f"coloured by what **{sel.other.label}** mines: **pink**: picked as difficult positives, "
            "**grey, dashed**: left out, **★, black outline**: the easiest (ranked first)" if mined is not None else
            "not mined yet (blue)")
    st.caption(f"**p1, p2, …**: the query's GPS positives (database images within {TRAIN_POS_RADIUS_M:g} m, "
               f"nearest first, whichever way they face), {what}. The Soft labels page shows their images.")
    if miner is None:
        run, g = sel.other.run, sel.other.generation
        n = len(split.database) + len(split.queries)
        progress_button(f"Mine the positives with {sel.other.label} ({n} images of the {sel.split} split, once: "
                        f"about {0.15 * n:.0f} s)", "map_mine",
                        lambda on_progress: describe_split(model(str(run.path), g), dataset(run.data)[sel.split],
                                                                run.image_size(), descriptor_file(run, g, sel.split),
                                                                on_progress))
for col, label, r in zip(st.columns(2), labels, (a, b)):
    verdict = ":green[**right**]" if r.correct[q, 0] else ":red[**wrong**]"
    hits = int(r.correct[q, :k].sum())
    col.markdown(f"**{label}**: top-1 {verdict}, {r.distances_m[q, 0]:.1f} m away; "
                 f"{hits} of the top {k} within {CORRECT_RADIUS_M:g} m")
