"""One-time preparation of the runs the app shows: database indexes, cached on disk.

Each finished generation of a run gets, per split, an :class:`IndexBundle` of the split's
database in ``<run>/cache/<split>_gen<g>/``. Building it is the only slow part (descriptor
extraction); afterwards the app loads it in milliseconds. ``make app`` runs this first.
"""
from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from .data import load_dataset
from .retrieval.bundle import IndexBundle
from .runs import DEFAULT_RUN_DIRS, Run, discover_runs


def index_folder(run: Run, generation: int, split: str) -> Path:
    """Where the prepared index of a run's generation on ``split`` lives."""
    return run.path / "cache" / f"{split}_gen{generation}"


def _fresh(folder: Path, checkpoint: Path, n_database: int) -> bool:
    if not (folder / "bundle.json").is_file():
        return False
    return (folder / "bundle.json").stat().st_mtime >= checkpoint.stat().st_mtime and \
        IndexBundle.load(folder).index.ntotal == n_database


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


def prepare(dirs: tuple[str, ...] = DEFAULT_RUN_DIRS, splits: tuple[str, ...] = ("test",), *,
            progress: bool = True) -> list[Path]:
    """Prepare every finished generation of every run in ``dirs``; returns the index folders."""
    todo = []
    for run in discover_runs(dirs):
        splits_here = [s for s in splits if s in load_dataset(run.data).splits]
        todo += [(run, g, s) for g in run.generations for s in splits_here]
    done = []
    for run, g, s in tqdm(todo, desc="Preparing runs", unit="model", disable=not progress):
        prepared_index(run, g, s, progress=progress)
        done.append(index_folder(run, g, s))
    return done
