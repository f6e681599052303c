"""Recall@N and spatial de-duplication of ranked lists (docs/design.md §1, "Evaluation")."""
from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

log = logging.getLogger(__name__)

RECALL_NS = (1, 5, 10, 20)
SAME_PLACE_M = 0.01
NMS_WINDOW_PER_N = 12  # views per place in OpenIBL's Tokyo 24/7 NMS window ...
OPENIBL_MAX_RECALL_N = 10  # ... times the largest N of OpenIBL's test.py (recall@1, 5, 10)
#: OpenIBL's Tokyo 24/7 spatial NMS looks at the top 12 x 10 = 120 of each ranking, whatever N we
#: report (our RECALL_NS goes to 20; 12 x 20 = 240 would raise recall@5/10 above OpenIBL's)
TOKYO_NMS_WINDOW = NMS_WINDOW_PER_N * OPENIBL_MAX_RECALL_N


def recall_from_hits(hits: np.ndarray, ns: Sequence[int] = RECALL_NS) -> dict[int, float]:
    """Recall@N from a ``Q x K`` boolean matrix (``hits[q, j]``: the j-th result of q is right)."""
    hits = np.asarray(hits, dtype=bool)
    if hits.ndim != 2:
        raise ValueError(f"hits must be Q x K, got shape {hits.shape}")
    q, k = hits.shape
    ns = [int(n) for n in ns]
    bad = [n for n in ns if n < 1 or n > k]
    if bad:
        raise ValueError(f"recall@N needs 1 <= N <= K={k} (the ranked list length); got N={bad}")
    if q == 0:
        raise ValueError("recall@N of zero queries is undefined")
    first_right = np.where(hits.any(axis=1), hits.argmax(axis=1), k)
    return {n: float(np.mean(first_right < n)) for n in ns}


def recall_at_n(
    ranked_ids: np.ndarray, positives: Sequence[np.ndarray], ns: Sequence[int] = RECALL_NS
) -> dict[int, float]:
    """Fraction of queries with at least one positive among their top-N ranked database ids.

    ``ranked_ids`` is ``Q x K`` (best first); ``positives[q]`` the database ids that count as
    right for query q. Queries without any positive count as wrong (a warning is logged);
    an N larger than K raises ``ValueError``.
    """
    ranked = np.asarray(ranked_ids)
    if ranked.ndim != 2:
        raise ValueError(f"ranked_ids must be Q x K, got shape {ranked.shape}")
    if len(positives) != ranked.shape[0]:
        raise ValueError(f"{ranked.shape[0]} ranked lists but {len(positives)} positive lists")
    hits = np.zeros(ranked.shape, dtype=bool)
    empty = 0
    for q, pos in enumerate(positives):
        pos = np.asarray(pos).reshape(-1)
        if pos.size == 0:
            empty += 1
            continue
        hits[q] = np.isin(ranked[q], pos)
    if empty:
        log.warning("%d of %d queries have no positive in the database; they count as wrong", empty, len(positives))
    return recall_from_hits(hits, ns)


def place_labels(db_utm: np.ndarray, tol_m: float = SAME_PLACE_M) -> np.ndarray:
    """Label per database image; images whose positions lie within ``tol_m`` share a label."""
    xy = np.asarray(db_utm, dtype=np.float64).reshape(-1, 2)
    n = len(xy)
    pairs = cKDTree(xy).query_pairs(r=tol_m, output_type="ndarray")
    if len(pairs) == 0:
        return np.arange(n)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def nms_groups(images) -> np.ndarray:
    """Place id per image of an :class:`~sfrs_core.data.dataset.ImageSet` for spatial NMS: the
    ``groups`` its reader filled in (Tokyo 24/7: the image's folder), else :func:`place_labels`
    of its positions (images at the same position within 1 cm form one place)."""
    groups = getattr(images, "groups", None)
    if groups is not None:
        return np.asarray(groups, dtype=np.int64)
    return place_labels(images.utm)


def dedupe_columns(ranked_ids: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Columns of ``ranked_ids`` that keep the first hit of each place, cut to ``k`` (-1 pads)."""
    ranked = np.asarray(ranked_ids)
    if ranked.ndim != 2:
        raise ValueError(f"ranked_ids must be Q x K, got shape {ranked.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    out = np.full((ranked.shape[0], k), -1, dtype=np.int64)
    for q, row in enumerate(ranked):
        valid = np.flatnonzero(row >= 0)
        _, first = np.unique(labels[row[valid]], return_index=True)
        keep = valid[np.sort(first)][:k]
        out[q, : len(keep)] = keep
    return out


def dedupe_places(ranked_ids: np.ndarray, db_utm: np.ndarray, k: int, *, tol_m: float = SAME_PLACE_M) -> np.ndarray:
    """Spatial NMS (Tokyo 24/7: several views per place): keep only the first hit of each distinct
    database position (positions equal within ``tol_m``, 1 cm), then cut to ``k``.

    Returns ``Q x k`` int64 database ids; a row with fewer than ``k`` distinct places is padded
    with -1 (retrieve ``k`` × views-per-place candidates to avoid that).
    """
    ranked = np.asarray(ranked_ids, dtype=np.int64)
    cols = dedupe_columns(ranked, place_labels(db_utm, tol_m), k)
    ids = np.take_along_axis(ranked, np.maximum(cols, 0), axis=1)
    return np.where(cols >= 0, ids, -1)


def spatial_nms(ranked_ids: np.ndarray, groups: np.ndarray, k: int, *, window: int | None = None) -> np.ndarray:
    """Spatial NMS with explicit place groups, as OpenIBL evaluates Tokyo 24/7.

    Of each ranked list (``Q x K`` database ids, best first) only the first ``window`` entries
    are looked at (all when None; OpenIBL: :data:`TOKYO_NMS_WINDOW`, 120); among
    them the first hit of each group (``groups[id]``) is kept, in rank order, and the list is cut
    to ``k``. Returns ``Q x k`` int64 ids, padded with -1 where fewer places were found.
    """
    ranked = np.asarray(ranked_ids, dtype=np.int64)
    if ranked.ndim != 2:
        raise ValueError(f"ranked_ids must be Q x K, got shape {ranked.shape}")
    if window is not None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        ranked = ranked[:, :window]
    cols = dedupe_columns(ranked, np.asarray(groups), k)
    ids = np.take_along_axis(ranked, np.maximum(cols, 0), axis=1)
    return np.where(cols >= 0, ids, -1)
