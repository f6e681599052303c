"""k-reciprocal re-ranking against a dense, line-by-line transcription of Zhong et al."""
from __future__ import annotations

import numpy as np

from sfrs_core.training.rerank import JaccardReranker


def dense_reference(feats: np.ndarray, k1: int, k2: int, lam: float) -> np.ndarray:
    """Zhong et al.'s algorithm with full matrices (distances 2 - 2·sim, no column scaling)."""
    n = len(feats)
    dist = 2.0 - 2.0 * feats @ feats.T
    rank = np.argsort(-(feats @ feats.T), axis=1, kind="stable")
    V = np.zeros((n, n))
    for i in range(n):
        fwd = rank[i, : k1 + 1]
        bwd = rank[fwd, : k1 + 1]
        recip = fwd[np.where(bwd == i)[0]]
        expanded = recip
        for c in recip:
            cf = rank[c, : int(np.around(k1 / 2)) + 1]
            cb = rank[cf, : int(np.around(k1 / 2)) + 1]
            cand = cf[np.where(cb == c)[0]]
            if len(np.intersect1d(cand, recip)) > 2 / 3 * len(cand):
                expanded = np.append(expanded, cand)
        expanded = np.unique(expanded)
        w = np.exp(-dist[i, expanded])
        V[i, expanded] = w / w.sum()
    if k2 > 1:
        V = np.stack([V[rank[i, :k2]].mean(axis=0) for i in range(n)])
    jac = np.zeros((n, n))
    for i in range(n):
        mins = np.minimum(V[i][None, :], V).sum(axis=1)
        jac[i] = 1 - mins / (2 - mins)
    return (1 - lam) * jac + lam * dist


def _clustered(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(6, d))
    x = centres[rng.integers(0, 6, n)] + 0.6 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_sparse_pairs_equal_the_dense_reference():
    feats = _clustered(70, 16, 0)
    for k1, k2 in ((20, 1), (8, 3)):
        ref = dense_reference(feats.astype(np.float64), k1, k2, 0.1)
        rr = JaccardReranker.fit(feats, k1=k1, k2=k2, lam=0.1)
        i, j = np.meshgrid(np.arange(70), np.arange(70), indexing="ij")
        got = rr.distance(i.ravel(), j.ravel()).reshape(70, 70)
        np.testing.assert_allclose(got, ref, atol=2e-5)


def test_self_distance_is_zero_and_neighbours_are_closer():
    feats = _clustered(50, 8, 1)
    rr = JaccardReranker.fit(feats, k1=10)
    assert np.allclose(rr.distance(np.arange(50), np.arange(50)), 0.0, atol=1e-5)
    d = rr.distance(np.zeros(50, int), np.arange(50))
    sims = feats @ feats[0]
    # the 5 most similar images are, on average, much closer after re-ranking than the 5 least
    order = np.argsort(-sims)
    assert d[order[1:6]].mean() < d[order[-5:]].mean()
