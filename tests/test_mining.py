"""Mining returns true positives and negatives, and the hardest ones, against brute force."""
from __future__ import annotations

import numpy as np
import pytest

from sfrs_core.data import ImageSet, PlaceSplit
from sfrs_core.training.mining import MiningConfig, TupleMiner, promoted_first
from sfrs_core.training.rerank import JaccardReranker


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
        assert 1 <= len(t.positives) <= 4 and len(set(t.positives)) == len(t.positives)  # no repeats
        if not rerank:  # nothing moves: the first pos_num of the pool (fewer when the query has fewer)
            np.testing.assert_array_equal(t.positives, pool[:4])


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


def test_promoted_first_by_hand():
    """OpenIBL's choice: promoted positives (most first), then unmoved ones, demoted dropped."""
    # pool order 0..5; re-ranked order [2, 0, 1, 5, 3, 4]: 2 and 5 each rise 2 places, the rest fall
    dist = np.empty(6)
    dist[[2, 0, 1, 5, 3, 4]] = np.arange(6)
    np.testing.assert_array_equal(promoted_first(dist, 10), [2, 5])
    # re-ranked [0, 3, 2, 1]: 3 rises 2, 0 and 2 stay, 1 falls
    dist = np.empty(4)
    dist[[0, 3, 2, 1]] = np.arange(4)
    np.testing.assert_array_equal(promoted_first(dist, 10), [3, 0, 2])
    np.testing.assert_array_equal(promoted_first(dist, 2), [3, 0])  # cut to k
    # larger rises come first: re-ranked [4, 0, 3, 1, 2] -> 4 rises 4, 3 rises 1
    dist = np.empty(5)
    dist[[4, 0, 3, 1, 2]] = np.arange(5)
    np.testing.assert_array_equal(promoted_first(dist, 10), [4, 3])
    # nothing moves: all kept in order, cut to k
    np.testing.assert_array_equal(promoted_first(np.arange(7.0), 5), [0, 1, 2, 3, 4])


def test_reranked_positives_use_openibls_population_and_choice():
    """Re-ranking runs over the trainable queries (those with a positive) and the database only;
    the picks equal promoted_first on a Jaccard re-ranker fitted on that population by hand."""
    split = _split(5)
    far = np.array([[510_000.0, 4_010_000.0]])  # a query with no database image within 10 m
    split.queries.utm[-1] = far
    rng = np.random.default_rng(6)
    db_desc, q_desc = _unit(rng.normal(size=(300, 16))), _unit(rng.normal(size=(40, 16)))
    cfg = MiningConfig(pos_num=3, pos_pool=8, neg_num=5, neg_pool=50, rerank_k1=8)
    miner = TupleMiner(split, cfg)
    assert 39 not in miner.trainable
    miner.refresh(db_desc, q_desc, rerank=True)
    population = np.concatenate([q_desc[miner.trainable], db_desc])
    assert len(miner.reranker.features) == len(miner.trainable) + 300
    reference = JaccardReranker.fit(population, k1=8)
    for row, q in enumerate(miner.trainable[:15]):
        ranked = miner.ranked_positives(int(q))
        pool = ranked[:8]
        d = reference.distance(np.full(len(pool), row), len(miner.trainable) + pool)
        np.testing.assert_array_equal(miner.difficult_positives(int(q), ranked), pool[promoted_first(d, 3)])
