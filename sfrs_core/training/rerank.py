"""k-reciprocal Jaccard distance (Zhong et al., CVPR 2017) for chosen pairs, without N×N matrices.

The distances are those of OpenIBL's ``re_ranking`` call in its SFRS sampler update: the input
is the squared Euclidean distance ``D(i, j) = 2 - 2·<f_i, f_j>`` of unit descriptors, which
``re_ranking`` squares again and scales row by row (each probe's row divided by its largest
entry, the "column max" of the symmetric matrix):

    T(i, j) = D(i, j)² / max_k D(i, k)²,

the max over every image of the population. The re-ranked distance is
``(1 - λ)·d_J(i, j) + λ·T(i, j)`` with ``d_J`` the Jaccard distance of k-reciprocal neighbour
vectors weighted by ``exp(-T)``. The neighbour lists come from a faiss kNN graph (k1 + 1
neighbours per image: ``T``'s row order is ``D``'s), each row's maximum from one faiss search for
the *least* similar image, and the vectors are stored sparse, so memory grows with N·k1, not N².
"""
from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np
import scipy.sparse as sp


def _ip_index(features: np.ndarray) -> tuple[np.ndarray, faiss.IndexFlatIP]:
    feats = np.ascontiguousarray(features, dtype=np.float32)
    index = faiss.IndexFlatIP(feats.shape[1])
    index.add(feats)
    return feats, index


def knn_graph(features: np.ndarray, k: int, index: faiss.IndexFlatIP | None = None) -> np.ndarray:
    """The ``k`` nearest neighbours (inner product) of every row among all rows, nearest first."""
    feats, index = (np.ascontiguousarray(features, dtype=np.float32), index) if index else _ip_index(features)
    _, ids = index.search(feats, min(k, len(feats)))
    return ids


def row_max_distance(features: np.ndarray, index: faiss.IndexFlatIP | None = None) -> np.ndarray:
    """``max_k D(i, k)²`` per row, ``D = 2 - 2·<f_i, f_k>``: one search for the least similar image."""
    feats, index = (np.ascontiguousarray(features, dtype=np.float32), index) if index else _ip_index(features)
    neg_min_sim, _ = index.search(-feats, 1)  # max_k <-f_i, f_k> = -min_k <f_i, f_k>
    far = np.maximum(2.0 + 2.0 * neg_min_sim[:, 0].astype(np.float64), 0.0)
    return np.maximum(far**2, 1e-12)


def transformed_distance(features: np.ndarray, row_max: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """``T(i, j)`` of the module docstring for index arrays ``i`` and ``j``."""
    sims = np.einsum("nd,nd->n", features[i].astype(np.float64), features[j].astype(np.float64))
    d = np.maximum(2.0 - 2.0 * sims, 0.0)
    return d**2 / row_max[i]


def _k_reciprocal(ids: np.ndarray, i: int, k: int) -> np.ndarray:
    forward = ids[i, : k + 1]
    backward = ids[forward, : k + 1]
    return forward[(backward == i).any(axis=1)]


def k_reciprocal_vectors(features: np.ndarray, k1: int = 20, k2: int = 1, row_max: np.ndarray | None = None,
                         index: faiss.IndexFlatIP | None = None) -> sp.csr_matrix:
    """Row-normalised, sparse k-reciprocal neighbour vectors ``V`` (N × N, about N·k1 entries);
    ``row_max`` and ``index`` (over ``features``) are reused when the caller has them."""
    feats, index = (np.ascontiguousarray(features, dtype=np.float32), index) if index else _ip_index(features)
    n = len(feats)
    row_max = row_max_distance(feats, index) if row_max is None else row_max
    ids = knn_graph(feats, k1 + 1, index)
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
        weight = np.exp(-transformed_distance(feats, row_max, np.full(len(expanded), i), expanded))
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
    """k-reciprocal re-ranking distances for pairs of images of one feature set (the population)."""

    features: np.ndarray
    V: sp.csr_matrix
    row_max: np.ndarray
    lam: float = 0.1

    @classmethod
    def fit(cls, features: np.ndarray, k1: int = 20, k2: int = 1, lam: float = 0.1) -> "JaccardReranker":
        """Build the k-reciprocal vectors of ``features`` (L2-normalised rows)."""
        feats, index = _ip_index(features)  # one index serves the neighbour lists and the row maxima
        row_max = row_max_distance(feats, index)
        return cls(feats, k_reciprocal_vectors(feats, k1, k2, row_max, index), row_max, lam)

    def distance(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Re-ranked distance from image ``i[t]`` (the probe) to image ``j[t]`` for every t."""
        i = np.asarray(i, dtype=np.int64)
        j = np.asarray(j, dtype=np.int64)
        overlap = np.asarray(self.V[i].minimum(self.V[j]).sum(axis=1)).ravel()
        jaccard = 1.0 - overlap / (2.0 - overlap)
        return (1.0 - self.lam) * jaccard + self.lam * transformed_distance(self.features, self.row_max, i, j)
