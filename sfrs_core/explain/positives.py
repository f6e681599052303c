"""A query's GPS positives as SFRS training mines them (docs/design.md §1 "Tuple"), for the app's maps.

Every database image within 10 m of a query is a GPS positive, whichever way it faces; many show
another scene (the seed's first challenge). Training takes the *easiest* positive (ranked first
by the model) for the hard loss and up to ``pos_num`` *difficult* positives for the soft loss:
from the ``pos_pool`` best-ranked, those the k-reciprocal re-ranking promotes, then the unmoved
(OpenIBL's rule). :class:`PositiveMiner` asks :class:`~sfrs_core.mining.TupleMiner` (the
trainer's own code, re-ranking on) which positives a generation's model picks, from that model's
descriptors of the whole split: re-ranking looks at neighbours of neighbours, so every query and
database image must be described. That takes a while on a CPU, so the descriptors are extracted
once per run, generation and split and kept in ``<run>/cache/descriptors_<split>_gen<g>.npz`` (as
the prepared indexes: re-extracted when the checkpoint is newer), and every query's outcome in
``<run>/cache/positives_<split>_gen<g>.npz`` (:class:`MiningTable`), so a page needs no
re-ranking (``make prepare`` fills both for the SFRS runs: :func:`sfrs_core.prepare.prepare`).
The region similarities behind a query's soft labels (a forward pass of the query and its picked
positives) are kept per query in ``<run>/cache/picked/<split>_gen<g>_q<q>.npz``
(:func:`cached_picked_soft_labels`; ``make prepare`` fills the first snapshot query's).

A generation's model stands in for the one that mined: during training the student's
descriptors are re-extracted every ``cache_size`` queries, so what it picked changed as it learnt;
the final model of a generation shows what it ends up treating as the same scene.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ..data.dataset import PlaceSplit
from ..data.transforms import ImageTransform
from .heatmap_core import load_rgb
from .soft_labels import cached_feature_size, region_similarity_matrix, softmax
from ..io import atomic_path
from ..retrieval.extract import extract_descriptors
from ..runs import Run
from ..mining import MiningConfig, TupleMiner

Progress = Callable[[int, int], None]  # (images done, images in all)


def descriptor_file(run: Run, generation: int, split: str) -> Path:
    """Where a generation's descriptors of ``split`` are cached."""
    return run.path / "cache" / f"descriptors_{split}_gen{generation}.npz"


def cached_descriptors(run: Run, generation: int, split: PlaceSplit) -> tuple[np.ndarray, np.ndarray] | None:
    """(database, queries) descriptors of ``split`` by ``generation``, when cached, newer than the
    checkpoint and of the split's sizes; else None."""
    path = descriptor_file(run, generation, split.name)
    checkpoint = run.path / f"gen{generation}.pt"
    if not path.is_file() or (checkpoint.is_file() and path.stat().st_mtime < checkpoint.stat().st_mtime):
        return None
    with np.load(path, allow_pickle=False) as z:
        db, q = z["database"], z["queries"]
    if len(db) != len(split.database) or len(q) != len(split.queries):
        return None
    return db, q


def describe_split(model: torch.nn.Module, split: PlaceSplit, image_size: tuple[int, int] | None,
                  path: Path, on_progress: Progress | None = None,
                  batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Describe every database and query image of ``split`` as mining does (eval mode, no PCA),
    save them atomically at ``path`` and return (database, queries)."""
    transform = ImageTransform(image_size, model.normalization)
    total = len(split.database) + len(split.queries)
    done = [0]

    def step(n: int) -> None:
        done[0] += n
        if on_progress is not None:
            on_progress(done[0], total)

    db, q = (extract_descriptors(model, images, transform, batch_size=batch_size, progress=False, use_pca=False,
                                 on_batch=step) for images in (split.database, split.queries))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, database=db, queries=q)
    return db, q


def mining_config(run: Run) -> MiningConfig:
    """The run's mining settings (its ``config.json``; the paper's where it says nothing)."""
    saved = run.config.get("mining") or {}
    return MiningConfig(**{k: v for k, v in saved.items() if k in MiningConfig.__dataclass_fields__})


@dataclass(frozen=True)
class MinedPositives:
    """What mining makes of one query's GPS positives (database indices)."""

    query: int
    positives: np.ndarray  # all GPS positives, nearest first
    ranked: np.ndarray  # the same, most similar first (the model's ranking)
    easiest: int  # ranked[0]
    pool: np.ndarray  # ranked[:pos_pool]: where difficult positives come from
    picked: np.ndarray  # the difficult positives, in the order they are picked


class PositiveMiner:
    """The trainer's :class:`TupleMiner` over one split's descriptors, re-ranking on."""

    def __init__(self, split: PlaceSplit, db_desc: np.ndarray, q_desc: np.ndarray, cfg: MiningConfig):
        self.cfg = cfg
        self.miner = TupleMiner(split, cfg)
        self.miner.refresh(db_desc, q_desc, rerank=True)

    def mine(self, query: int) -> MinedPositives | None:
        """The query's positives as mined; None when it has no GPS positive."""
        positives = self.miner.positives[query]
        if len(positives) == 0:
            return None
        ranked = self.miner.ranked_positives(query)
        picked = self.miner.difficult_positives(query, ranked)
        return MinedPositives(query, positives, ranked, int(ranked[0]), ranked[: self.cfg.pos_pool], picked)


def mining_file(run: Run, generation: int, split: str) -> Path:
    """Where every query's mining outcome of a generation on ``split`` is cached."""
    return run.path / "cache" / f"positives_{split}_gen{generation}.npz"


def _ragged(arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Variable-length integer arrays as one flat array and the offsets of each (len + 1)."""
    offsets = np.concatenate([[0], np.cumsum([len(a) for a in arrays])]).astype(np.int64)
    flat = np.concatenate(arrays).astype(np.int64) if arrays else np.zeros(0, np.int64)
    return flat, offsets


def _unragged(flat: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [flat[a:b] for a, b in zip(offsets[:-1], offsets[1:])]


@dataclass(frozen=True)
class MiningTable:
    """Every query's mining outcome (what :meth:`PositiveMiner.mine` gives), kept so that a page
    needs no re-ranking: per query its GPS positives (nearest first), the model's ranking of them
    and the difficult positives picked."""

    cfg: MiningConfig
    positives: list[np.ndarray]
    ranked: list[np.ndarray]
    picked: list[np.ndarray]

    @classmethod
    def from_miner(cls, miner: PositiveMiner, n_queries: int) -> MiningTable:
        """Mine every query of the split."""
        empty = np.zeros(0, np.int64)
        mined = [miner.mine(q) for q in range(n_queries)]
        return cls(miner.cfg, [miner.miner.positives[q] for q in range(n_queries)],
                   [empty if m is None else m.ranked for m in mined], [empty if m is None else m.picked for m in mined])

    def mine(self, query: int) -> MinedPositives | None:
        """The query's positives as mined; None when it has no GPS positive."""
        ranked = self.ranked[query]
        if len(ranked) == 0:
            return None
        return MinedPositives(query, self.positives[query], ranked, int(ranked[0]), ranked[: self.cfg.pos_pool],
                              self.picked[query])

    def save(self, path: Path) -> None:
        """Write the table (and the settings it was mined with) atomically to ``path``."""
        arrays = {f"{name}_{part}": a for name in ("positives", "ranked", "picked")
                  for part, a in zip(("flat", "offsets"), _ragged(getattr(self, name)))}
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, config=np.array(json.dumps(asdict(self.cfg), sort_keys=True)), **arrays)

    @classmethod
    def load(cls, path: Path, cfg: MiningConfig) -> MiningTable | None:
        """The table at ``path`` when it was mined with ``cfg``; else None."""
        with np.load(path, allow_pickle=False) as z:
            if str(z["config"]) != json.dumps(asdict(cfg), sort_keys=True):
                return None
            parts = {name: _unragged(z[f"{name}_flat"], z[f"{name}_offsets"])
                     for name in ("positives", "ranked", "picked")}
        return cls(cfg, **parts)


def mined_positives(run: Run, generation: int, split: PlaceSplit) -> MiningTable | None:
    """Every query's mining outcome of ``generation`` on ``split``: from the cache when it is newer
    than the descriptors and mined with the run's settings; else mined now from the cached
    descriptors (a second or so: the re-ranking graph) and saved; None while the descriptors are
    not extracted (:func:`describe_split`)."""
    cfg = mining_config(run)
    desc_path, path = descriptor_file(run, generation, split.name), mining_file(run, generation, split.name)
    if path.is_file() and desc_path.is_file() and path.stat().st_mtime >= desc_path.stat().st_mtime:
        table = MiningTable.load(path, cfg)
        if table is not None and len(table.ranked) == len(split.queries):
            return table
    desc = cached_descriptors(run, generation, split)
    if desc is None:
        return None
    table = MiningTable.from_miner(PositiveMiner(split, *desc, cfg), len(split.queries))
    table.save(path)
    return table


def picked_similarities(model: torch.nn.Module, split: PlaceSplit, query: int, picked: np.ndarray,
                        image_size: tuple[int, int] | None) -> np.ndarray:
    """The ``len(picked) × 9`` similarities of the query to the regions of the picked positives
    (:func:`sfrs_core.explain.soft_labels.region_similarity_matrix`)."""
    transform = ImageTransform(image_size, model.normalization)
    q = transform(split.queries.image_path(query))
    p = torch.stack([transform(split.database.image_path(int(i))) for i in picked])
    return np.asarray(region_similarity_matrix(model, q, p), dtype=np.float32)


def picked_soft_labels(model: torch.nn.Module, split: PlaceSplit, query: int, picked: np.ndarray, temperature: float,
                       image_size: tuple[int, int] | None) -> np.ndarray:
    """The soft labels the model, as a teacher at ``temperature``, gives the picked positives: the
    softmax over the ``len(picked) × 9`` similarities of the query to their regions
    (:func:`picked_similarities`), shape (len(picked), 9)."""
    return softmax(picked_similarities(model, split, query, picked, image_size)[None], temperature)[0]


def picked_file(run: Run, generation: int, split: str, query: int) -> Path:
    """Where the region similarities of a query and its picked positives are kept."""
    return run.path / "cache" / "picked" / f"{split}_gen{generation}_q{query}.npz"


def cached_picked_soft_labels(run: Run, generation: int, split: PlaceSplit, query: int, picked: np.ndarray,
                              temperature: float, get_model: Callable[[], torch.nn.Module]) -> np.ndarray:
    """:func:`picked_soft_labels` of a run's generation, from the similarities kept on disk
    (:func:`picked_file`) when they were computed for the same picked positives with this
    checkpoint (not older than it); else computed with ``get_model()`` (only called then) and kept."""
    picked = np.asarray(picked, dtype=np.int64)
    path, checkpoint = picked_file(run, generation, split.name, query), run.path / f"gen{generation}.pt"
    sims = None
    try:
        if path.stat().st_mtime >= checkpoint.stat().st_mtime:
            with np.load(path) as z:
                if np.array_equal(z["picked"], picked) and z["similarities"].shape == (len(picked), 9):
                    sims = z["similarities"]
    except (OSError, ValueError, KeyError):
        sims = None
    if sims is None:
        sims = picked_similarities(get_model(), split, query, picked, run.image_size())
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, picked=picked, similarities=sims)
        except OSError:
            pass  # a read-only run folder: computed again next time
    return softmax(np.asarray(sims, dtype=np.float32)[None], temperature)[0]


def prepare_first_soft_labels(run: Run, generation: int, split: PlaceSplit) -> Path | None:
    """Keep the picked soft labels of the first query of the run's ``generation`` snapshot on
    ``split`` (what the Soft labels page opens on) and the size of its feature map (the regions
    drawn); None when there is nothing to keep."""
    snap = next((s for s in run.soft_labels() if s.generation == generation and s.split == split.name), None)
    table = mined_positives(run, generation, split)
    mined = table.mine(int(snap.queries[0])) if snap is not None and len(snap.queries) and table else None
    if mined is None or not len(mined.picked):
        return None
    model = lru_cache(maxsize=1)(lambda: run.model(generation).eval())
    cached_picked_soft_labels(run, generation, split, mined.query, mined.picked, snap.temperature, model)
    image_hw = load_rgb(split.queries.image_path(mined.query), run.image_size()).shape[:2]
    cached_feature_size(run.path, run.last_generation, image_hw, model)  # the regions' grid
    return picked_file(run, generation, split.name, mined.query)
