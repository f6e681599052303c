"""One-time preparation of the runs the app shows, cached on disk in ``<run>/cache/``.

- Each finished generation of a run gets, per split, an :class:`IndexBundle` of the split's
  database in ``<run>/cache/<split>_gen<g>/`` (descriptor extraction is the slow part;
  afterwards the app loads it in milliseconds).
- The last generation of each run gets its attention-by-class summary over the split's queries
  for the app's default heatmap method, Grad-CAM (SynthCity only: it needs label maps), in
  ``<run>/cache/attention_<split>_gen<g>_<method>.json``; other generations and methods are
  computed on demand and cached the same way. Its heatmaps of the first query (what the Heatmaps
  page opens on) are cached too (:mod:`.explain.pair_cache`).
- The last generation of each SFRS run gets every validation query's mined positives (the
  descriptors of the whole split, then the trainer's re-ranked mining, :mod:`.explain.positives`)
  for the Soft labels and Map pages, and the soft labels of its first snapshot query's picked
  positives (what the Soft labels page opens on).
- A SynthCity dataset gets its map layers (streets, buildings, shops) written beside it.

``make app`` runs :func:`prepare` first; everything is rebuilt when a checkpoint is newer.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

from .data import load_dataset
from .data.dataset import PlaceDataset, PlaceSplit
from .io import atomic_write_json
from .retrieval.bundle import IndexBundle
from .runs import DEFAULT_RUN_DIRS, Run, discover_runs


def index_folder(run: Run, generation: int, split: str) -> Path:
    """Where the prepared index of a run's generation on ``split`` lives."""
    return run.path / "cache" / f"{split}_gen{generation}"


def _newer(path: Path, checkpoint: Path) -> bool:
    return path.is_file() and path.stat().st_mtime >= checkpoint.stat().st_mtime


def _cached_bundle(folder: Path, checkpoint: Path, n_database: int) -> IndexBundle | None:
    """The saved bundle when it is newer than the checkpoint and indexes the whole database."""
    if not _newer(folder / "bundle.json", checkpoint):
        return None
    bundle = IndexBundle.load(folder)
    return bundle if bundle.index.ntotal == n_database else None


def prepared_index(run: Run, generation: int, split: str = "test", *, place_split: PlaceSplit | None = None,
                   progress: bool = False) -> IndexBundle:
    """The database index of ``run``'s ``generation`` on ``split``: loaded if prepared, else built and
    saved. ``place_split`` is that split of the run's dataset, if already loaded."""
    folder = index_folder(run, generation, split)
    place_split = place_split or load_dataset(run.data)[split]
    checkpoint = run.path / f"gen{generation}.pt"
    cached = _cached_bundle(folder, checkpoint, len(place_split.database))
    if cached is not None:
        return cached
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
                      place_split: PlaceSplit | None = None, on_progress: Callable[[int, int], None] | None = None,
                      progress: bool = False) -> dict:
    """:func:`~sfrs_core.explain.attention.attention_by_class` of a run's generation over all
    queries of ``split`` (heatmaps towards each query's own top-1), cached on disk.
    ``place_split`` is that split of the run's dataset, if already loaded."""
    from .explain.attention import attention_by_class

    cached = cached_attention(run, generation, split, method)
    if cached is not None:
        return cached
    place_split = place_split or load_dataset(run.data)[split]
    summary = attention_by_class(run.model(generation), place_split, run.results(split, generation),
                                 method, image_size=run.image_size(), progress=progress, on_progress=on_progress)
    atomic_write_json(attention_file(run, generation, split, method), summary)
    return summary


ProgressCallback = Callable[[str, float, int, str], None]
"""``on_progress(stage, done, total, item)`` of :func:`prepare`: ``stage`` is ``"index"`` or
``"attention"``, ``done`` of ``total`` models of that stage are finished (fractional while one is
under way: the attention summary reports each query), ``item`` names the model being prepared."""


def prepare(dirs: tuple[str, ...] = DEFAULT_RUN_DIRS, splits: tuple[str, ...] = ("test",), *,
            methods: tuple[str, ...] = ("gradcam",), progress: bool = True, all_seeds: bool = False,
            on_progress: ProgressCallback | None = None) -> list[Path]:
    """Prepare every finished generation of every run in ``dirs``; returns the index folders.

    Of runs that differ only in their seed, only the lowest seed is prepared unless ``all_seeds``:
    the app reports the others from their saved results, and indexes one on demand when it is
    picked in the sidebar. ``on_progress`` (see :data:`ProgressCallback`) is told before and
    after each model, e.g. to move the app's progress bar.
    """
    from .data.synthcity.basemap import load_basemap
    from .seeds import experiment_key

    indexes, attention, positives = [], [], []
    datasets: dict[str, PlaceDataset] = {}  # each dataset read once, whatever number of runs use it
    finished = [run for run in discover_runs(dirs) if run.generations]
    lowest: dict[str, int] = {}
    for run in finished:
        key = experiment_key(run)
        lowest[key] = min(lowest.get(key, run.seed), run.seed)
    for run in finished if all_seeds else [r for r in finished if r.seed == lowest[experiment_key(r)]]:
        if run.data not in datasets:
            datasets[run.data] = load_dataset(run.data)
            for name in datasets[run.data].splits:  # SynthCity's map layers, kept beside it (no-op elsewhere)
                load_basemap(run.data, name)
        ds = datasets[run.data]
        for s in (s for s in splits if s in ds.splits):
            indexes += [(run, g, ds[s]) for g in run.generations]
            if ds[s].queries.label_root is not None:
                attention += [(run, run.last_generation, ds[s], m) for m in methods]
        mined_split = run.config.get("val_split", "val")  # where the soft-label snapshots are taken
        if run.kind == "SFRS" and mined_split in ds.splits:
            positives.append((run, run.last_generation, ds[mined_split]))
    report = on_progress or (lambda stage, done, total, item: None)
    done = []
    for i, (run, g, sp) in enumerate(tqdm(indexes, desc="Indexing databases", unit="model", disable=not progress)):
        report("index", i, len(indexes), f"{run.name} gen {g} ({sp.name})")
        prepared_index(run, g, sp.name, place_split=sp, progress=progress)
        done.append(index_folder(run, g, sp.name))
    report("index", len(indexes), len(indexes), "")
    for i, (run, g, sp, m) in enumerate(tqdm(attention, desc="Attention by class", unit="model", disable=not progress)):
        item = f"{run.name} gen {g} ({sp.name}, {m})"
        report("attention", i, len(attention), item)
        attention_summary(run, g, sp.name, m, place_split=sp, progress=progress,
                          on_progress=lambda q, n, i=i, item=item: report("attention", i + q / max(n, 1),
                                                                          len(attention), item))
        done.append(attention_file(run, g, sp.name, m))
        done.append(_first_pair(run, g, sp, m))
    report("attention", len(attention), len(attention), "")
    for i, (run, g, sp) in enumerate(tqdm(positives, desc="Mined positives", unit="model", disable=not progress)):
        item = f"{run.name} gen {g} ({sp.name})"
        report("positives", i, len(positives), item)
        done.append(prepared_positives(run, g, sp, on_progress=lambda n, total, i=i, item=item: report(
            "positives", i + n / max(total, 1), len(positives), item)))
    report("positives", len(positives), len(positives), "")
    return done


def _first_pair(run: Run, generation: int, split: PlaceSplit, method: str) -> Path:
    """Cache the heatmaps of the split's first query and its top-1 (the Heatmaps page's first view)."""
    from .explain.pair_cache import pair_file, pair_heatmaps

    match = int(run.results(split.name, generation).ids[0, 0])
    pair_heatmaps(run.path, generation, split.name, 0, match, method, split.queries.image_path(0),
                  split.database.image_path(match), run.image_size(), lambda: run.model(generation))
    return pair_file(run.path, generation, split.name, 0, match, method)


def prepared_positives(run: Run, generation: int, split: PlaceSplit, *,
                       on_progress: Callable[[int, int], None] | None = None) -> Path:
    """Every query's mined positives of a generation on ``split`` (what the Soft labels and Map
    pages draw, :mod:`.explain.positives`): the split described once, then mined; cached, with
    the soft labels of the first snapshot query's picked positives (the Soft labels page's first view)."""
    from .explain.positives import (describe_split, descriptor_file, mined_positives, mining_file,
                                    prepare_first_soft_labels)

    if mined_positives(run, generation, split) is None:
        describe_split(run.model(generation), split, run.image_size(), descriptor_file(run, generation, split.name),
                       on_progress)
        mined_positives(run, generation, split)
    prepare_first_soft_labels(run, generation, split)
    return mining_file(run, generation, split.name)
