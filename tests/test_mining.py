"""Mining returns true positives and negatives, and the hardest ones, against brute force."""
from __future__ import annotations

import numpy as np
import pytest

from sfrs_core.data import ImageSet, PlaceSplit
from sfrs_core.training.mining import MiningConfig, TupleMiner


def _split(seed: int = 0, n_db: int = 300, n_q: int = 40) -> PlaceSplit:
    rng = np.random.default_rng(seed)
    db = rng.uniform(0, 200, size=(n_db, 2)) + [500_000, 4_000_000]
    q = db[rng.integers(0, n_db, n_q)] + rng.uniform(-4, 4, size=(n_q, 2))
    mk = lambda pts: ImageSet(".", [f"{i}.jpg" for i in range(len(pts))], pts, (17, "T"), np.tile([40.4, -80.0], (len(pts), 1)))  # noqa: E731
    return PlaceSplit("train", mk(db), mk(q))


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("rerank", [False, True])
def test_mined_tuples_respect_the_radii_and_the_ranking(rerank):
    split = _split()
    rng = np.random.default_rng(1)
    db_desc, q_desc = _unit(rng.normal(size=(300, 16))), _unit(rng.normal(size=(40, 16)))
    cfg = MiningConfig(pos_num=4, pos_pool=6, neg_num=5, neg_pool=50, rerank_k1=8)
    miner = TupleMiner(split, cfg)
    miner.refresh(db_desc, q_desc, rerank=rerank)
    dist = np.linalg.norm(split.queries.utm[:, None] - split.database.utm[None], axis=2)  # brute force
    for q in miner.trainable:
        t = miner.mine(int(q), np.random.default_rng(q))
        gps_pos = np.flatnonzero(dist[q] <= 10.0)
        assert dist[q, t.easiest] <= 10.0 and (dist[q, t.positives] <= 10.0).all()
        assert (dist[q, t.negatives] > 25.0).all()
        sims = db_desc @ q_desc[q]
        assert t.easiest == gps_pos[np.argmax(sims[gps_pos])]
        pool = gps_pos[np.argsort(-sims[gps_pos])][:6]
        assert set(t.positives) <= set(pool)
        if not rerank:
            np.testing.assert_array_equal(t.positives, np.resize(pool, 4))


def test_hard_negatives_are_the_most_similar_of_pool_and_cache():
    split = _split(2)
    rng = np.random.default_rng(3)
    db_desc, q_desc = _unit(rng.normal(size=(300, 8))), _unit(rng.normal(size=(40, 8)))
    miner = TupleMiner(split, MiningConfig(neg_num=5, neg_pool=30))
    miner.refresh(db_desc, q_desc, rerank=False)
    q = int(miner.trainable[0])
    pool1 = miner.negative_pool(q, np.random.default_rng(0))
    first = miner.hard_negatives(q, pool1)
    sims = db_desc @ q_desc[q]
    np.testing.assert_array_equal(first, pool1[np.argsort(-sims[pool1])][:5])
    # Next epoch: a disjoint pool; the cached negatives still compete.
    pool2 = np.setdiff1d(miner.negative_pool(q, np.random.default_rng(9)), first)
    second = miner.hard_negatives(q, pool2)
    union = np.union1d(pool2, first)
    np.testing.assert_array_equal(np.sort(second), np.sort(union[np.argsort(-sims[union])][:5]))


def test_negative_pool_excludes_everything_within_25m():
    split = _split(4)
    miner = TupleMiner(split, MiningConfig(neg_pool=10_000))
    dist = np.linalg.norm(split.queries.utm[:, None] - split.database.utm[None], axis=2)
    for q in range(5):
        pool = miner.negative_pool(q, np.random.default_rng(q))
        assert set(pool) == set(np.flatnonzero(dist[q] > 25.0))
