"""k-reciprocal re-ranking against a dense, brute-force transcription of Zhong et al. 2017
fed exactly what OpenIBL's SFRS sampler feeds it (squared Euclidean distances, squared again
and scaled by each column's maximum; queries then database as one population)."""
from __future__ import annotations

import numpy as np

from sfrs_core.training.rerank import JaccardReranker


def dense_reference(q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray, k1: int, k2: int, lam: float) -> np.ndarray:
    """Zhong et al. with full matrices; returns the re-ranked query x gallery distances."""
    nq = len(q_q)
    full = np.block([[q_q, q_g], [q_g.T, g_g]]) ** 2
    full = (full / full.max(axis=0)).T  # each column by its maximum, then transposed
    n = len(full)
    rank = np.argsort(full, axis=1, kind="stable")
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
        w = np.exp(-full[i, expanded])
        V[i, expanded] = w / w.sum()
    if k2 > 1:
        V = np.stack([V[rank[i, :k2]].mean(axis=0) for i in range(n)])
    jac = np.zeros((nq, n))
    for i in range(nq):
        mins = np.minimum(V[i][None, :], V).sum(axis=1)
        jac[i] = 1 - mins / (2 - mins)
    final = (1 - lam) * jac + lam * full[:nq]
    return final[:, nq:]


def _clustered(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(6, d))
    x = centres[rng.integers(0, 6, n)] + 0.6 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _sq_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2 * a @ b.T


def test_sparse_pairs_equal_the_dense_reference_on_openibl_inputs():
    feats = _clustered(90, 16, 0).astype(np.float64)
    q, g = feats[:30], feats[30:]
    for k1, k2 in ((20, 1), (8, 3)):
        ref = dense_reference(_sq_dist(q, g), _sq_dist(q, q), _sq_dist(g, g), k1, k2, 0.1)
        rr = JaccardReranker.fit(feats.astype(np.float32), k1=k1, k2=k2, lam=0.1)
        i, j = np.meshgrid(np.arange(30), 30 + np.arange(60), indexing="ij")
        got = rr.distance(i.ravel(), j.ravel()).reshape(30, 60)
        np.testing.assert_allclose(got, ref, atol=2e-5)


def test_distance_scale_is_openibls_not_the_raw_distance():
    """The λ term is the row-normalised squared distance: in [0, 1], 1 for the farthest image."""
    feats = _clustered(60, 8, 2)
    rr = JaccardReranker.fit(feats, k1=10, lam=1.0)  # λ = 1: only the transformed distance
    sims = feats @ feats[0]
    far = int(np.argmin(sims))
    d = rr.distance(np.zeros(60, int), np.arange(60))
    assert d.max() <= 1.0 + 1e-6 and d[far] == np.float64(d.max())
    np.testing.assert_allclose(d[far], 1.0, atol=1e-5)
    np.testing.assert_allclose(d[5], (2 - 2 * sims[5]) ** 2 / (2 - 2 * sims[far]) ** 2, rtol=1e-4)


def test_self_distance_is_zero_and_neighbours_are_closer():
    feats = _clustered(50, 8, 1)
    rr = JaccardReranker.fit(feats, k1=10)
    assert np.allclose(rr.distance(np.arange(50), np.arange(50)), 0.0, atol=1e-5)
    d = rr.distance(np.zeros(50, int), np.arange(50))
    sims = feats @ feats[0]
    # the 5 most similar images are, on average, much closer after re-ranking than the 5 least
    order = np.argsort(-sims)
    assert d[order[1:6]].mean() < d[order[-5:]].mean()
