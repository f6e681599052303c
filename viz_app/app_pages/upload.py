"""Upload a photo: localize it with both models (top-K, map, error from its GPS) and see why (Grad-CAM)."""
from __future__ import annotations

import hashlib
import time
from functools import partial

import numpy as np
import streamlit as st

from sfrs_core.data.photo import PHOTO_TYPES, PhotoError, read_photo
from sfrs_core.data.synthcity.basemap import load_basemap, load_config
from sfrs_core.explain.heatmap_core import load_rgb
from sfrs_core.explain.heatmaps import compare_heatmaps
from sfrs_core.figures import format_distance, heatmap_grid, retrieval_grid
from sfrs_core.figures.style import CORRECT_RADIUS_M, color_map
from sfrs_core.retrieval.localize import localize
from viz_app.map import DEFAULT_FOV_DEG, PinSet, pins_from_localization, retrieval_map, show_map
from viz_app.state import dataset, index_bundle, model, selection_key, sidebar
from viz_app.widgets import cached_figure, map_tiles_choice, md_escape

FAR_M = 1000.0  # a photo this far from every database image was not taken in the dataset's area


@st.cache_data(show_spinner=False, max_entries=32)
def _localized(digest: str, models: tuple, split: str, k: int, _loaded, _photo):
    """Both models' localization of a photo (by its digest): a rerun of the page (a slider, the
    map) describes and searches nothing again. Returns the localizations and the seconds they took."""
    start = time.perf_counter()
    found = [localize(net, bundle, _photo, k, _photo.gps) for net, bundle in _loaded]
    return found, time.perf_counter() - start


sel = sidebar()
st.title("Upload a photo")
if sel is None:
    st.stop()
st.caption(f"Localize a photo of your own against the **{sel.split}** database with both models. "
           "With a GPS position in its EXIF, the error of each model's best match is measured in metres.")

c1, c2 = st.columns([3, 1])
upload = c1.file_uploader(f"Photo ({', '.join(t.upper() for t in PHOTO_TYPES if t != 'jpeg')})",
                          type=list(PHOTO_TYPES), key="upload_file")
k = c2.slider("Top-K", 1, 10, 5, key="upload_k")
if upload is None:
    st.info("Upload a street-level photo to see where the models place it.")
    st.stop()
choices = (sel.baseline, sel.other)
loaded = [(model(str(c.run.path), c.generation), index_bundle(str(c.run.path), c.generation, sel.split))
          for c in choices]
# the photo is decoded only as large as the databases' image size needs (a 12 MP JPEG at 1/8 scale)
sizes = [bundle.image_size for _, bundle in loaded]
need = tuple(max(s[i] for s in sizes) for i in (0, 1)) if all(sizes) else None
start = time.perf_counter()
data = upload.getvalue()
digest = hashlib.sha256(data).hexdigest()
try:
    photo = read_photo(data, upload.name, size=need)
except PhotoError as err:
    st.error(f"This photo cannot be used. {md_escape(err)}")
    st.stop()
for note in photo.notes:
    st.info(f"{md_escape(photo.name)}: {md_escape(note)}.")
decoded = time.perf_counter() - start
found, searched = _localized(digest, tuple((str(c.run.path), c.generation) for c in choices), sel.split, k,
                             loaded, photo)
elapsed = decoded + searched
for warning in dict.fromkeys(w for loc in found for w in loc.warnings):  # once, though both models warn
    st.warning(f"{md_escape(photo.name)} was localized, but {md_escape(warning)}.")

split = dataset(sel.data)[sel.split]
labels = [c.label for c in choices]
if photo.gps is None:
    st.info("The photo has no GPS position in its EXIF: its matches are shown, but their errors cannot be measured.")
else:
    e, n = found[0].truth_utm
    nearest = float(np.hypot(*(split.database.utm - (e, n)).T).min())
    if nearest > FAR_M:
        st.warning(f"The photo's GPS position is {nearest / 1000:,.1f} km from the nearest database image: it was "
                   "not taken in this dataset's area, so the errors below say little.")
cols = st.columns(2)
for col, label, loc in zip(cols, labels, found):
    top = loc.matches[0]
    if loc.top1_error_m is None:
        col.metric(f"{label}: top-1 similarity", f"{top.similarity:.3f}")
    else:
        verdict = "within" if loc.top1_error_m <= CORRECT_RADIUS_M else "farther than"
        col.metric(f"{label}: top-1 error", format_distance(loc.top1_error_m),
                   f"{verdict} {CORRECT_RADIUS_M:g} m", delta_color="normal" if verdict == "within" else "inverse", delta_arrow="off",
                   help=f"Distance from the photo's GPS to the top-1 match (similarity {top.similarity:.3f}).")
st.caption(f"Query time: {elapsed:.2f} s for both models (decoding, descriptor and search; models and indexes "
           "are cached).")

size = loaded[1][1].image_size
seen = load_rgb(photo.rgb, size)  # the photo as the models see it
kinds = [c.run.kind for c in choices]
key = (digest, photo.name, *selection_key(sel), k)
cached_figure(("upload_grid", *key), partial(
    retrieval_grid, [seen, seen], [[m.path for m in loc.matches] for loc in found], [loc.errors_m for loc in found],
    row_labels=kinds, group_size=2, title=f"{photo.name}: top-{k}",
    captions=[[f"s {m.similarity:.3f}" + (f", {format_distance(err)}" if err is not None else "")
               for m, err in zip(loc.matches, loc.errors_m)] for loc in found],
), "upload_topk", "upload_grid", persist=False)  # a visitor's photo stays off the disk

st.subheader("On the map")
colors = color_map(labels)
pin_sets = [PinSet(f"{role}: {label}", pins_from_localization(loc, database_heading=split.database.heading),
                   colors[label], square=role == "Compared")
            for role, label, loc in zip(("Baseline", "Compared"), labels, found)]
city = load_config(sel.data)
tiles = map_tiles_choice("upload_tiles_toggle")
show_map(lambda: retrieval_map(
    split.database.latlon, pin_sets, query_latlon=photo.gps, query_image=photo.rgb, query_label="Your photo",
    database_heading=split.database.heading, fov_deg=city.fov_deg if city is not None else DEFAULT_FOV_DEG,
    basemap=load_basemap(sel.data, sel.split), tiles=tiles,
), key=("upload", *key, tiles), persist=False)  # the photo is in the map's popup
st.caption("Round badges: the baseline's matches; square badges: the compared model's; the number is the rank. "
           + (f":green[**Green**]: within {CORRECT_RADIUS_M:g} m of the photo's GPS, :red[**red**]: farther; "
              f"dashed: the {CORRECT_RADIUS_M:g} m circle around it." if photo.gps else
              "Grey: no GPS in the photo, so right and wrong are unknown."))


@st.cache_data(show_spinner=False, max_entries=8)
def _gradcam(digest: str, run_path: str, generation: int, match_path: str, size: tuple[int, int] | None,
             _net, _rgb: np.ndarray):
    """Grad-CAM of the photo against its top-1 match and back (cached per photo and model)."""
    return compare_heatmaps({"m": _net}, _rgb, match_path, "gradcam", size)["m"]


st.subheader("Why the compared model matched it")
top1 = found[1].matches[0]
with st.spinner("Computing the Grad-CAM heatmap…"):
    pair = _gradcam(digest, str(sel.other.run.path), sel.other.generation, top1.path,
                    size, loaded[1][0], photo.rgb)
err = found[1].top1_error_m
cached_figure(("upload_gradcam", *key), partial(
    heatmap_grid, [pair.query_rgb], {kinds[1]: [pair.query_overlay]}, [[pair.match_overlay]],
    similarities={kinds[1]: [pair.similarity]}, match_titles=["Top-1 match"],
    match_captions=[[format_distance(err) if err is not None else "distance unknown"]],
    match_correct=[[None if err is None else err <= CORRECT_RADIUS_M]],
    title=f"Grad-CAM, {labels[1]}",
), "upload_gradcam", "upload_heat", persist=False)
st.caption("Grad-CAM of the similarity between the photo and the compared model's top-1 match: warm colours "
           "mark the regions that raise it (on the photo, towards the match; on the match, towards the photo).")
