"""The sidebar every page shares: the dataset, split and the two models compared.

The cached reads it and the pages use are :mod:`viz_app.cache`; their names are also importable
from here, as the pages always have.
"""
from __future__ import annotations

import zlib

import streamlit as st

from sfrs_core.data import DatasetError
from sfrs_core.runs import Run
from viz_app.cache import (Choice, SeedStatistics, Selection, broken_runs, compared_results, dataset, feature_size,
                           index_bundle, metrics, model, pair_heatmaps, picked_soft_labels, positive_miner, results,
                           run_dirs, run_metrics, runs, seed_statistics, selection_key, soft_labels)
from viz_app.widgets import md_escape

__all__ = [  # the sidebar, and the cached reads the pages import from here
    "sidebar", "Choice", "SeedStatistics", "Selection", "broken_runs", "compared_results", "dataset",
    "feature_size", "index_bundle", "metrics", "model", "pair_heatmaps", "picked_soft_labels", "positive_miner",
    "results", "run_dirs", "run_metrics", "runs", "seed_statistics", "selection_key", "soft_labels",
]


def _sticky_select(label: str, options: list, key: str, default: int = 0, **kwargs):
    """A sidebar selectbox that keeps its choice (by value) when its options change, e.g. when a
    new run appears; falls back to ``default`` when the old choice is gone."""
    remembered = st.session_state.get(f"_{key}")
    index = options.index(remembered) if remembered in options else default
    widget_key = f"{key}_{zlib.crc32(repr(options).encode()):08x}"  # new options: a new widget
    value = st.sidebar.selectbox(label, options, index=index, key=widget_key, **kwargs)
    st.session_state[f"_{key}"] = value
    return value


def _model_picker(label: str, options: list[Run], kind: str, key: str) -> Choice:
    by_path = {str(r.path): r for r in options}
    default = next((i for i, r in enumerate(options) if r.kind == kind), 0)
    path = _sticky_select(label, list(by_path), f"{key}_run", default,
                          format_func=lambda p: f"{by_path[p].kind} · {by_path[p].name}")
    run = by_path[path]
    gens = run.generations
    g = _sticky_select(f"{label}: generation", gens, f"{key}_gen", len(gens) - 1)
    return Choice(run, g)


def sidebar(setup: bool = False) -> Selection | None:
    """The shared sidebar (choices, then the training panel); None, with a message on the page,
    when there is nothing to show. While the chosen dataset is the app's own SynthCity and is not
    rendered yet (or being set up), pages say so and point to the Overview, which passes ``setup``
    and draws the set-up panel itself (:mod:`viz_app.bootstrap_panel`)."""
    sel = _choices(setup)
    from viz_app.guard import access_panel
    from viz_app.train_panel import training_panel

    access_panel()
    training_panel(sel)
    return sel


def _choices(setup: bool = False) -> Selection | None:
    all_runs = runs()
    st.sidebar.title("SFRS Studio")
    broken = broken_runs()
    if broken:
        with st.sidebar.expander(f"{len(broken)} run(s) skipped", icon=":material/warning:"):
            for run, problem in broken:
                st.markdown(f"**{md_escape(run.name)}**: {md_escape(problem)}")
    if not all_runs:
        st.info("No trained runs found in " + ", ".join(f"`{d}`" for d in run_dirs())
                + ". Train one with `python -m sfrs_core train` or restore `assets/demo`.")
        return None
    datasets = sorted({r.data for r in all_runs})
    data = _sticky_select("Dataset", datasets, "dataset")
    options = [r for r in all_runs if r.data == data]
    from viz_app.bootstrap import setup_needed
    from viz_app.bootstrap_panel import setup_notice

    if setup_needed(data):
        if not setup:
            setup_notice(data)
        return None
    try:
        ds = dataset(data)
    except DatasetError as err:
        st.error(f"The dataset of these runs cannot be read: {err}. For SynthCity, run `make demo-data`.")
        return None
    splits = [s for s in ("test", "val") if s in ds.splits]
    split = _sticky_select("Split", splits, "split")
    baseline = _model_picker("Baseline", options, "SARE", "baseline")
    other = _model_picker("Compared with", options, "SFRS", "other")
    return Selection(data, split, baseline, other)
