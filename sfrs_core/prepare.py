"""One-time preparation of the runs the app shows, cached on disk in ``<run>/cache/``.

- Each finished generation of a run gets, per split, an :class:`IndexBundle` of the split's
  database in ``<run>/cache/<split>_gen<g>/`` (descriptor extraction is the slow part;
  afterwards the app loads it in milliseconds).
- The last generation of each run gets its attention-by-class summary over the split's queries
  for the app's default heatmap method, Grad-CAM (SynthCity only: it needs label maps), in
  ``<run>/cache/attention_<split>_gen<g>_<method>.json``; other generations and methods are
  computed on demand and cached the same way.

``make app`` runs :func:`prepare` first; everything is rebuilt when a checkpoint is newer.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

from .data import load_dataset
from .io import atomic_write_json
from .retrieval.bundle import IndexBundle
from .runs import DEFAULT_RUN_DIRS, Run, discover_runs


def index_folder(run: Run, generation: int, split: str) -> Path:
    """Where the prepared index of a run's generation on ``split`` lives."""
    return run.path / "cache" / f"{split}_gen{generation}"


def _newer(path: Path, checkpoint: Path) -> bool:
    return path.is_file() and path.stat().st_mtime >= checkpoint.stat().st_mtime


def _fresh(folder: Path, checkpoint: Path, n_database: int) -> bool:
    return _newer(folder / "bundle.json", checkpoint) and IndexBundle.load(folder).index.ntotal == n_database


def prepared_index(run: Run, generation: int, split: str = "test", *, progress: bool = False) -> IndexBundle:
    """The database index of ``run``'s ``generation`` on ``split``: loaded if prepared, else built and saved."""
    folder = index_folder(run, generation, split)
    place_split = load_dataset(run.data)[split]
    checkpoint = run.path / f"gen{generation}.pt"
    if _fresh(folder, checkpoint, len(place_split.database)):
        return IndexBundle.load(folder)
    bundle = IndexBundle.build(run.model(generation), place_split, image_size=run.image_size(), progress=progress,
                               meta={"checkpoint": str(checkpoint), "dataset": str(run.data), "generation": generation})
    bundle.save(folder)
    return bundle


def attention_file(run: Run, generation: int, split: str, method: str) -> Path:
    """Where the attention-by-class summary of a run's generation on ``split`` is cached."""
    return run.path / "cache" / f"attention_{split}_gen{generation}_{method}.json"


def cached_attention(run: Run, generation: int, split: str, method: str) -> dict | None:
    """The cached attention summary, or None if it has not been computed (or is stale)."""
    path = attention_file(run, generation, split, method)
    return json.loads(path.read_text()) if _newer(path, run.path / f"gen{generation}.pt") else None


def attention_summary(run: Run, generation: int, split: str = "test", method: str = "gradcam", *,
                      on_progress: Callable[[int, int], None] | None = None, progress: bool = False) -> dict:
    """:func:`~sfrs_core.explain.attention.attention_by_class` of a run's generation over all
    queries of ``split`` (heatmaps towards each query's own top-1), cached on disk."""
    from .explain.attention import attention_by_class

    cached = cached_attention(run, generation, split, method)
    if cached is not None:
        return cached
    summary = attention_by_class(run.model(generation), load_dataset(run.data)[split], run.results(split, generation),
                                 method, image_size=run.image_size(), progress=progress, on_progress=on_progress)
    atomic_write_json(attention_file(run, generation, split, method), summary)
    return summary


def prepare(dirs: tuple[str, ...] = DEFAULT_RUN_DIRS, splits: tuple[str, ...] = ("test",), *,
            methods: tuple[str, ...] = ("gradcam",), progress: bool = True) -> list[Path]:
    """Prepare every finished generation of every run in ``dirs``; returns the index folders."""
    indexes, attention = [], []
    for run in discover_runs(dirs):
        if not run.generations:
            continue
        ds = load_dataset(run.data)
        for s in (s for s in splits if s in ds.splits):
            indexes += [(run, g, s) for g in run.generations]
            if ds[s].queries.label_root is not None:
                attention += [(run, run.last_generation, s, m) for m in methods]
    done = []
    for run, g, s in tqdm(indexes, desc="Indexing databases", unit="model", disable=not progress):
        prepared_index(run, g, s, progress=progress)
        done.append(index_folder(run, g, s))
    for run, g, s, m in tqdm(attention, desc="Attention by class", unit="model", disable=not progress):
        attention_summary(run, g, s, m, progress=progress)
        done.append(attention_file(run, g, s, m))
    return done
