"""Small reusable widgets: figure downloads and the query picker the pages share."""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np
import streamlit as st
from matplotlib.figure import Figure

from sfrs_core.explain.outcomes import query_outcomes
from sfrs_core.figures import MIME_TYPES, figure_bytes
from sfrs_core.retrieval.results import QueryResults

FigureSource = Figure | Callable[[], Figure]

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>~$|&])")  # markup anywhere in a line (links, code, emphasis, HTML, LaTeX)
_MD_LINE_START = re.compile(r"^(\s*)([#+=>-])")  # a heading, list, rule or quote when the text starts a block
_MD_ORDERED = re.compile(r"^(\s*\d+)([.)])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def md_escape(text: object) -> str:
    """``text`` as itself in Streamlit markdown (``st.markdown``, ``st.error``…), for every string a
    visitor typed or named (run names, paths, file names) and every error echoing one: the
    characters of links, images, code, emphasis, HTML and LaTeX are backslash-escaped, as is a
    heading, list or quote marker at the start; line breaks and other control characters become
    one space, so nothing starts a new block. Ordinary punctuation (``.``, ``-``, ``:``, ``()``)
    stays as it is, so messages read, and compare, as written."""
    out = _MD_SPECIAL.sub(r"\\\1", _CONTROL.sub(" ", str(text)))
    return _MD_ORDERED.sub(r"\1\\\2", _MD_LINE_START.sub(r"\1\\\2", out))


def figure_downloads(fig: FigureSource, stem: str, key: str) -> None:
    """PNG, SVG and PDF download buttons for a matplotlib figure.

    ``fig`` may be a zero-argument function building the figure (e.g. the paper twin of a plotly
    chart): nothing is drawn or encoded until a button is clicked, so the page paints at once.
    """
    def render(fmt: str) -> Callable[[], bytes]:
        return lambda: figure_bytes(fig if isinstance(fig, Figure) else fig(), fmt)

    for col, fmt in zip(st.columns(3), ("png", "svg", "pdf")):
        col.download_button(f"{fmt.upper()}", render(fmt), file_name=f"{stem}.{fmt}", mime=MIME_TYPES[fmt],
                            key=f"{key}_{fmt}", icon=":material/download:", on_click="ignore",
                            width="stretch")


@st.cache_data(show_spinner=False, max_entries=256)
def _figure_bytes(key: tuple, _build: Callable[[], Figure], persist: bool = True) -> bytes:
    from viz_app.figure_cache import cached_bytes
    from viz_app.figure_pool import render

    return cached_bytes(key, lambda: render(_build)) if persist else render(_build)


def cached_figure(key: tuple, build: Callable[[], Figure], stem: str, download_key: str | None = None,
                  persist: bool = True) -> None:
    """Show the matplotlib figure ``build()`` draws, as st.pyplot would, from image bytes
    (:func:`sfrs_core.figures.screen_bytes`) cached under ``key`` (a tuple naming the figure and
    every input it depends on, files by the time they were written): a rerun with the same
    inputs, by this visitor or another, draws and encodes nothing, and with ``persist`` (not for
    a visitor's own photo) neither does a restarted server (:mod:`viz_app.figure_cache`). A
    ``functools.partial`` of a figure function is drawn in the figure worker process
    (:mod:`viz_app.figure_pool`), off the server's GIL. With ``download_key``, PNG/SVG/PDF
    buttons that build the figure only when clicked."""
    st.image(_figure_bytes(key, build, persist), width="stretch")
    if download_key is not None:
        figure_downloads(build, stem, key=download_key)


def query_picker(conditions: Sequence[str] | None, a: QueryResults, b: QueryResults, names: tuple[str, str],
                 key: str) -> int:
    """Choose a query: from an outcome list (e.g. SFRS right and SARE wrong), by condition
    (day/dusk/night), by id or at random. The choice is remembered across pages."""
    groups = {"all queries": np.arange(a.ids.shape[0]), **query_outcomes(a, b, names)}
    c1, c2 = st.columns(2)
    group = c1.selectbox("Queries", list(groups), format_func=lambda g: f"{g} ({len(groups[g])})", key=f"{key}_group")
    candidates = groups[group]
    if conditions is not None:
        times = sorted({c.split("+")[0] for c in conditions})
        when = c2.multiselect("Condition", times, default=times, key=f"{key}_cond")
        candidates = np.array([q for q in candidates if conditions[q].split("+")[0] in when], dtype=int)
    if len(candidates) == 0:
        st.warning("No query matches these filters.")
        st.stop()
    wkey = f"{key}_query"
    if st.session_state.get(wkey) not in candidates:
        remembered = st.session_state.get("query")
        st.session_state[wkey] = remembered if remembered in candidates else int(candidates[0])
    pick, rand = st.columns([4, 1], vertical_alignment="bottom")
    pick.selectbox("Query id", candidates.tolist(), key=wkey)
    rand.button("Random query", key=f"{key}_random", width="stretch", on_click=_pick_random,
                args=(wkey, candidates.tolist()))
    st.session_state["query"] = q = int(st.session_state[wkey])
    return q


def _pick_random(key: str, candidates: list[int]) -> None:
    st.session_state[key] = int(np.random.default_rng().choice(candidates))


def map_tiles_choice(key: str) -> str:
    """The sidebar switch for online map tiles: ``"osm"`` (OpenStreetMap, fetched from the internet)
    or ``"none"`` (the offline map). Default from ``SFRS_MAP_TILES``; the choice is shared by the
    pages with maps."""
    from viz_app.map import tiles_from_env

    if key not in st.session_state:
        st.session_state[key] = st.session_state.get("map_tiles", tiles_from_env()) == "osm"
    online = st.sidebar.toggle("Online map tiles (OpenStreetMap)", key=key,
                               help="Draw OpenStreetMap's streets under the pins: for real datasets, whose GPS "
                                    "is a real place. Fetches tiles from the internet; off, the maps need nothing "
                                    "from outside this app. Default: the environment variable SFRS_MAP_TILES=osm.")
    st.session_state["map_tiles"] = "osm" if online else "none"
    return st.session_state["map_tiles"]


def progress_button(label: str, key: str, work: Callable[[Callable[[int, int], None]], object]) -> None:
    """A button that runs ``work(on_progress)`` under a progress bar (``on_progress(done, total)``),
    then reruns the page (the result is expected to be cached by then). Not drawn for a visitor who
    may not write (the work fills caches on disk); one of the server's heavy slots while it runs."""
    from viz_app.guard import heavy, may_write

    if not may_write():
        return
    if st.button(label, key=key, icon=":material/play_arrow:"):
        with heavy() as go:
            if not go:
                return
            bar = st.progress(0.0)
            work(lambda done, total: bar.progress(done / max(total, 1), text=f"{done} / {total} images"))
        st.rerun()
