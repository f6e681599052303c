"""Tuple mining for SARE/SFRS training (DESIGN.md §1, "Tuple").

For a training query q (positives: database images within 10 m; negatives: farther than 25 m):

* easiest positive ``p*``: the GPS-positive ranked first by the current model;
* up to ``pos_num`` difficult positives, picked as OpenIBL's sampler picks them: the
  ``pos_pool`` GPS-positives ranked best by the model are re-ranked by k-reciprocal Jaccard
  distance (from generation 1 on); the positives the re-ranking *promotes* come first (most
  promoted first), then those it leaves in place, up to ``pos_num``. Demoted positives are
  dropped, so a query may get fewer than ``pos_num``; the soft loss masks the missing entries.
  Without re-ranking nothing moves and the first ``pos_num`` of the pool are kept;
* ``neg_num`` hard negatives: the most similar among a random pool of ``neg_pool`` negatives
  united with the query's negatives of its previous visit (the negative cache, which persists
  across epochs and generations, as OpenIBL's sampler object does).

Similarities come from descriptors the trainer re-extracts every ``cache_size`` queries. Only
query-to-candidate products are computed; the Jaccard re-ranking uses a sparse kNN graph over
OpenIBL's population: the trainable queries (those with a positive) and the whole database.

It sits below both of its users, training (``sfrs_core.training.mining`` re-exports it) and the
explanations of what mining picked (``sfrs_core.explain.positives``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .data.dataset import PlaceSplit
from .training.rerank import JaccardReranker  # a leaf module (faiss, numpy, scipy): no training code


@dataclass(frozen=True)
class MiningConfig:
    """Sizes and radii of a training tuple (defaults: the paper's)."""

    pos_radius_m: float = 10.0
    neg_radius_m: float = 25.0
    pos_num: int = 10
    pos_pool: int = 20
    neg_num: int = 10
    neg_pool: int = 1000
    rerank_k1: int = 20
    rerank_k2: int = 1
    rerank_lambda: float = 0.1


@dataclass(frozen=True)
class TrainingTuple:
    """Indices of one tuple: query (into queries), the rest into the database."""

    query: int
    easiest: int
    positives: np.ndarray  # (<= pos_num,) difficult positives, at least one
    negatives: np.ndarray  # (neg_num,)


def promoted_first(reranked_distance: np.ndarray, k: int) -> np.ndarray:
    """OpenIBL's choice of difficult positives from a pool ranked by the model.

    ``reranked_distance[r]`` is the re-ranked distance of the pool's r-th positive. Each
    positive's move is its new rank minus its old one; the promoted (move < 0) come first, most
    promoted first (ties: better new rank first), then the unmoved (move = 0) by rank; demoted
    ones are dropped. Returns up to ``k`` positions into the pool (always at least one: the new
    first was never demoted).
    """
    new_order = np.argsort(reranked_distance, kind="stable")  # new rank -> old position
    move = np.arange(len(new_order)) - new_order  # new rank - old rank, per new rank
    promoted = np.flatnonzero(move < 0)
    promoted = promoted[np.argsort(move[promoted], kind="stable")]
    unmoved = np.flatnonzero(move == 0)
    return new_order[np.concatenate([promoted, unmoved])[:k]]


class TupleMiner:
    """Mines tuples of a training split from the current descriptors."""

    def __init__(self, split: PlaceSplit, cfg: MiningConfig):
        self.split = split
        self.cfg = cfg
        self.positives = split.positives(cfg.pos_radius_m)
        self.non_negatives = split.positives(cfg.neg_radius_m)
        self.trainable = np.array([i for i, p in enumerate(self.positives) if len(p)], dtype=np.int64)
        n_db = len(split.database)
        if n_db <= cfg.neg_num:
            raise ValueError(f"the training database has {n_db} images; need more than neg_num={cfg.neg_num}")
        #: previous epoch's negatives per query (-1: none yet)
        self.negative_cache = np.full((len(split.queries), cfg.neg_num), -1, dtype=np.int64)
        self.db_desc: np.ndarray | None = None
        self.q_desc: np.ndarray | None = None
        self.reranker: JaccardReranker | None = None

    def refresh(self, db_desc: np.ndarray, q_desc: np.ndarray, rerank: bool) -> None:
        """Use new descriptors (L2-normalised rows); ``rerank`` builds the Jaccard re-ranker."""
        self.db_desc = np.ascontiguousarray(db_desc, dtype=np.float32)
        self.q_desc = np.ascontiguousarray(q_desc, dtype=np.float32)
        self.reranker = None
        if rerank:
            # One population as OpenIBL's: the trainable queries, then the whole database.
            both = np.concatenate([self.q_desc[self.trainable], self.db_desc])
            self.reranker = JaccardReranker.fit(both, self.cfg.rerank_k1, self.cfg.rerank_k2, self.cfg.rerank_lambda)
            self._population_row = np.full(len(self.q_desc), -1, dtype=np.int64)
            self._population_row[self.trainable] = np.arange(len(self.trainable))

    def ranked_positives(self, q: int) -> np.ndarray:
        """GPS-positives of query ``q``, most similar first (ties: nearer first)."""
        pos = self.positives[q]
        sims = self.db_desc[pos] @ self.q_desc[q]
        return pos[np.argsort(-sims, kind="stable")]

    def difficult_positives(self, q: int, ranked: np.ndarray) -> np.ndarray:
        """Up to ``pos_num`` positives of the top ``pos_pool``: see :func:`promoted_first`."""
        pool = ranked[: self.cfg.pos_pool]
        if self.reranker is None:
            return pool[: self.cfg.pos_num]
        n_pop_q = len(self.trainable)
        dist = self.reranker.distance(np.full(len(pool), self._population_row[q]), n_pop_q + pool)
        return pool[promoted_first(dist, self.cfg.pos_num)]

    def negative_pool(self, q: int, rng: np.random.Generator) -> np.ndarray:
        """``neg_pool`` random database images farther than ``neg_radius_m`` from query ``q``."""
        n_db = len(self.split.database)
        excluded = self.non_negatives[q]
        available = n_db - len(excluded)
        if available < self.cfg.neg_num:
            raise ValueError(f"query {q} has only {available} negatives; need neg_num={self.cfg.neg_num}")
        want = min(self.cfg.neg_pool, available)
        draw = rng.choice(n_db, size=min(n_db, want + len(excluded)), replace=False)
        draw = draw[~np.isin(draw, excluded)]
        return draw[:want]

    def hard_negatives(self, q: int, pool: np.ndarray) -> np.ndarray:
        """The ``neg_num`` most similar of ``pool`` ∪ the cache; updates the cache."""
        cached = self.negative_cache[q]
        cands = np.unique(np.concatenate([pool, cached[cached >= 0]]))
        sims = self.db_desc[cands] @ self.q_desc[q]
        chosen = cands[np.argsort(-sims, kind="stable")[: self.cfg.neg_num]]
        self.negative_cache[q] = chosen
        return chosen

    def mine(self, q: int, rng: np.random.Generator) -> TrainingTuple:
        """The full tuple of query ``q``."""
        if self.db_desc is None:
            raise RuntimeError("call refresh() with descriptors before mining")
        if len(self.positives[q]) == 0:
            raise ValueError(f"training query {q} has no positive within {self.cfg.pos_radius_m} m")
        ranked = self.ranked_positives(q)
        return TrainingTuple(
            query=q,
            easiest=int(ranked[0]),
            positives=self.difficult_positives(q, ranked),
            negatives=self.hard_negatives(q, self.negative_pool(q, rng)),
        )
