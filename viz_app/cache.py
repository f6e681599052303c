"""Cached access to runs, datasets and results (what the pages and the sidebar read).

Run folders are found in ``SFRS_STUDIO_RUN_DIRS`` (paths separated by ``os.pathsep``;
default ``assets/demo`` and ``runs``). Everything heavy is cached, so switching pages never
recomputes it. The sidebar that chooses among them is :mod:`viz_app.state`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st

from sfrs_core.data import shared_dataset
from sfrs_core.runs import Run, app_run_dirs, discover_runs, open_run, run_problem


def run_dirs() -> tuple[str, ...]:
    """The run folders (:func:`sfrs_core.runs.app_run_dirs`)."""
    return app_run_dirs()


@st.cache_resource(show_spinner=False)
def _run(path: str) -> Run:
    return open_run(path)


def _checked_runs() -> tuple[list[Run], list[tuple[Run, str]]]:
    good, broken = [], []
    for r in discover_runs(run_dirs()):
        if not r.generations:
            continue
        problem = run_problem(r.path)  # remembered until one of the run's files changes
        if problem is None:
            good.append(_run(str(r.path)))
        else:
            broken.append((r, problem))
    return good, broken


def runs() -> list[Run]:
    """Every usable run with at least one finished generation (re-scanned on each rerun; each
    run's health check is cached until one of its files changes)."""
    return _checked_runs()[0]


def broken_runs() -> list[tuple[Run, str]]:
    """Runs left out of the app, each with its problem (one line naming the file)."""
    return _checked_runs()[1]


@st.cache_resource(show_spinner="Reading the dataset…", max_entries=8)
def dataset(path: str):
    """The dataset at ``path``, read once per server (:func:`sfrs_core.data.shared_dataset`); at
    most 8 kept (the runs' datasets, and paths visitors typed inside the data roots)."""
    return shared_dataset(path)


@st.cache_data(show_spinner=False)
def results(run_path: str, split: str, generation: int):
    return _run(run_path).results(split, generation)


@st.cache_resource(show_spinner="Loading the model…")
def model(run_path: str, generation: int):
    """A run's model of ``generation`` (CPU, eval mode), loaded once per server."""
    return _run(run_path).model(generation).eval()


@st.cache_data(show_spinner=False)
def feature_size(run_path: str, generation: int, image_hw: tuple[int, int]) -> tuple[int, int]:
    """The trunk's feature-map size for an image of ``image_hw`` (one forward pass, once per model
    and size, kept in the run's cache: :func:`sfrs_core.explain.soft_labels.cached_feature_size`)."""
    from sfrs_core.explain.soft_labels import cached_feature_size

    return cached_feature_size(run_path, generation, tuple(image_hw), lambda: model(run_path, generation))


@st.cache_resource(show_spinner="Indexing the database (once; `make app` does this ahead)…")
def index_bundle(run_path: str, generation: int, split: str):
    """The database index (:class:`~sfrs_core.retrieval.bundle.IndexBundle`) of a model on ``split``,
    prepared on disk by :mod:`sfrs_core.prepare`."""
    from sfrs_core.prepare import prepared_index

    run = _run(run_path)
    return prepared_index(run, generation, split, place_split=dataset(run.data)[split])


@dataclass(frozen=True)
class Choice:
    """A model: a run and one of its generations."""

    run: Run
    generation: int

    @property
    def label(self) -> str:
        return f"{self.run.kind} · {self.run.name} · gen {self.generation}"


@dataclass(frozen=True)
class Selection:
    """What the sidebar chose: the dataset and the two models compared (baseline, other)."""

    data: str
    split: str
    baseline: Choice
    other: Choice

    @property
    def names(self) -> tuple[str, str]:
        """Short names of the two models in outcome lists ('SARE', 'SFRS'; generic when the kinds are equal)."""
        kinds = (self.baseline.run.kind, self.other.run.kind)
        return kinds if kinds[0] != kinds[1] else ("baseline", "compared")


def selection_key(sel: Selection) -> tuple:
    """What a figure of the two compared models depends on: dataset, split, names, and per model its
    run, generation and the time its results were written (a retrained generation is a new key)."""
    def stamp(c: Choice) -> tuple:
        results_file = c.run.path / "results" / f"{sel.split}_gen{c.generation}.npz"
        return str(c.run.path), c.generation, results_file.stat().st_mtime if results_file.is_file() else None
    return sel.data, sel.split, *sel.names, stamp(sel.baseline), stamp(sel.other)


def compared_results(sel: Selection):
    """The chosen split (:class:`~sfrs_core.data.dataset.PlaceSplit`) and the per-query results of
    the baseline and of the compared model on it."""
    return (dataset(sel.data)[sel.split], *(results(str(c.run.path), sel.split, c.generation)
                                            for c in (sel.baseline, sel.other)))


@st.cache_data(show_spinner="Computing heatmaps…", max_entries=64)
def pair_heatmaps(run_path: str, generation: int, split: str, query: int, method: str):
    """A model's heatmaps (:class:`~sfrs_core.explain.heatmaps.PairHeatmaps`) for a query and its
    own top-1 match: the query's map targets the match's descriptor and vice versa (kept on disk in
    the run's cache, so a restarted server has them at once)."""
    from sfrs_core.explain.pair_cache import pair_heatmaps as cached_pair

    run = _run(run_path)
    place_split = dataset(run.data)[split]
    match = int(results(run_path, split, generation).ids[query, 0])
    return cached_pair(run_path, generation, split, query, match, method, place_split.queries.image_path(query),
                       place_split.database.image_path(match), run.image_size(), lambda: model(run_path, generation))


@st.cache_data(show_spinner=False)
def _soft_labels(run_path: str, stamp: tuple):
    return _run(run_path).soft_labels()


def soft_labels(run: Run):
    """The soft-label snapshots a run saved (one per generation), re-read when a new one appears."""
    files = sorted((run.path / "soft_labels").glob("gen*.npz"))
    return _soft_labels(str(run.path), tuple((f.name, f.stat().st_mtime) for f in files))


@st.cache_resource(show_spinner="Mining the split's positives…", max_entries=8)
def _positive_miner(run_path: str, generation: int, split: str, stamp: float):
    from sfrs_core.explain.positives import mined_positives

    run = _run(run_path)
    return mined_positives(run, generation, dataset(run.data)[split]) if stamp else None


def positive_miner(run: Run, generation: int, split: str):
    """Every query's mining outcome (:class:`sfrs_core.explain.positives.MiningTable`) of a run's generation
    on ``split``, from its descriptors cached on disk; None until they are extracted."""
    from sfrs_core.explain.positives import descriptor_file

    path = descriptor_file(run, generation, split)
    return _positive_miner(str(run.path), generation, split, path.stat().st_mtime if path.is_file() else 0.0)


@st.cache_data(show_spinner="Soft labels of the picked positives…", max_entries=64)
def picked_soft_labels(run_path: str, generation: int, split: str, query: int, picked: tuple[int, ...],
                       temperature: float):
    """:func:`sfrs_core.explain.positives.picked_soft_labels` of a run's generation, (len(picked), 9),
    kept on disk in the run's cache (so a restarted server has them at once)."""
    from sfrs_core.explain.positives import cached_picked_soft_labels

    run = _run(run_path)
    return cached_picked_soft_labels(run, generation, dataset(run.data)[split], query, picked, temperature,
                                     lambda: model(run_path, generation))


@st.cache_data(show_spinner=False)
def metrics(run_path: str, mtime: float):
    """A run's metrics log (``mtime`` of the log as the cache key, so a live run refreshes); works
    for a run that is still setting up (no ``config.json`` yet)."""
    from sfrs_core.training.metrics_log import read_metrics

    return read_metrics(Path(run_path) / "metrics.jsonl")


def run_metrics(run: Run):
    """:func:`metrics` of ``run``, re-read when its log changed."""
    log = run.path / "metrics.jsonl"
    return metrics(str(run.path), log.stat().st_mtime if log.is_file() else 0.0)


@dataclass(frozen=True)
class SeedStatistics:
    """The Overview's seed table (:func:`sfrs_core.seeds.summary_rows` of every group of 2+ seeds)
    and, per group, the last generation's recall@1 by condition (``chart``) and its std (``errors``)."""

    rows: list
    chart: dict
    errors: dict
    paired: list = field(default_factory=list)  # sfrs_core.seeds.paired_rows of multi-generation groups


def seed_statistics(data: str, split: str) -> SeedStatistics:
    """Recall over seeds of the runs of ``data`` that differ only in their seed."""
    from sfrs_core.seeds import paired_diffs, paired_rows, seed_groups, seed_summary, summary_rows

    groups = [g for g in seed_groups(r for r in runs() if r.data == data) if len(g.runs) > 1 and g.generations]
    conditions = dataset(data)[split].queries.condition
    rows, chart, errors, paired = [], {}, {}, []
    for group in groups:
        load = lambda run, s, g: results(str(run.path), s, g)  # noqa: E731
        stats = seed_summary(group, split, conditions, load=load)
        rows += summary_rows(group, stats)
        paired += [{"method": group.kind, "seeds": len(group.runs), **row}
                   for row in paired_rows(paired_diffs(group, split, load=load))]
        last = group.generations[-1]
        label = f"{group.kind} gen {last} ({len(group.runs)} seeds)"
        chart[label] = {s.condition: s.mean for s in stats if s.generation == last and s.n == 1}
        errors[label] = {s.condition: s.std for s in stats if s.generation == last and s.n == 1}
    return SeedStatistics(rows, chart, errors, paired)
