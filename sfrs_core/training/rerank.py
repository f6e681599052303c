"""k-reciprocal Jaccard distance (Zhong et al., CVPR 2017) for chosen pairs, without N×N matrices.

The distance between images i and j is ``(1 - λ)·d_J(i, j) + λ·d(i, j)`` with
``d = 2 - 2·<f_i, f_j>`` (squared L2 of unit descriptors) and ``d_J`` the Jaccard distance of
their k-reciprocal neighbour vectors. Those vectors come from a faiss kNN graph (k1 + 1
neighbours per image) and are stored sparse, so memory grows with N·k1, not N². Zhong et al.
also divide ``d`` by each column's maximum, which needs the dense matrix; for unit descriptors
``d`` is bounded by 4 and we leave it unscaled.
"""
from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np
import scipy.sparse as sp


def knn_graph(features: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` nearest neighbours (inner product) of every row among all rows, nearest first."""
    feats = np.ascontiguousarray(features, dtype=np.float32)
    index = faiss.IndexFlatIP(feats.shape[1])
    index.add(feats)
    _, ids = index.search(feats, min(k, len(feats)))
    return ids


def _k_reciprocal(ids: np.ndarray, i: int, k: int) -> np.ndarray:
    forward = ids[i, : k + 1]
    backward = ids[forward, : k + 1]
    return forward[(backward == i).any(axis=1)]


def k_reciprocal_vectors(features: np.ndarray, k1: int = 20, k2: int = 1) -> sp.csr_matrix:
    """Row-normalised, sparse k-reciprocal neighbour vectors ``V`` (N × N, about N·k1 entries)."""
    feats = np.asarray(features, dtype=np.float32)
    n = len(feats)
    ids = knn_graph(feats, k1 + 1)
    half = int(np.around(k1 / 2))
    rows, cols, vals = [], [], []
    for i in range(n):
        base = _k_reciprocal(ids, i, k1)
        expanded = base
        for c in base:
            cand = _k_reciprocal(ids, int(c), half)
            if len(np.intersect1d(cand, base)) > 2.0 / 3.0 * len(cand):
                expanded = np.append(expanded, cand)
        expanded = np.unique(expanded)
        dist = 2.0 - 2.0 * (feats[expanded] @ feats[i])
        weight = np.exp(-dist)
        rows.append(np.full(len(expanded), i))
        cols.append(expanded)
        vals.append(weight / weight.sum())
    V = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    if k2 > 1:  # local query expansion: average the vectors of the k2 nearest neighbours
        nn = ids[:, :k2]
        avg = sp.csr_matrix((np.full(nn.size, 1.0 / k2), (np.repeat(np.arange(n), k2), nn.ravel())), shape=(n, n))
        V = (avg @ V).tocsr()
    return V


@dataclass
class JaccardReranker:
    """k-reciprocal re-ranking distances for pairs of images of one feature set."""

    features: np.ndarray
    V: sp.csr_matrix
    lam: float = 0.1

    @classmethod
    def fit(cls, features: np.ndarray, k1: int = 20, k2: int = 1, lam: float = 0.1) -> "JaccardReranker":
        """Build the k-reciprocal vectors of ``features`` (L2-normalised rows)."""
        feats = np.ascontiguousarray(features, dtype=np.float32)
        return cls(feats, k_reciprocal_vectors(feats, k1, k2), lam)

    def distance(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Re-ranked distance between images ``i[t]`` and ``j[t]`` for every t."""
        i = np.asarray(i, dtype=np.int64)
        j = np.asarray(j, dtype=np.int64)
        overlap = np.asarray(self.V[i].minimum(self.V[j]).sum(axis=1)).ravel()
        jaccard = 1.0 - overlap / (2.0 - overlap)
        original = 2.0 - 2.0 * np.einsum("nd,nd->n", self.features[i], self.features[j])
        return (1.0 - self.lam) * jaccard + self.lam * original
