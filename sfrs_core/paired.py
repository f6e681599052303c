"""Paired comparisons over seeds: is SFRS generation g better than the SARE baseline of its own seed?

Each seed's SFRS run starts from its SARE baseline (generation 0 is SARE, trained identically), and
every model answers the same test queries, so the comparison is paired twice: by seed and by query.
For each seed ``s`` and query ``q``, ``d[s, q] = hit_g[s, q] - hit_0[s, q]`` (hit: a right answer in
the top N). The effect is the mean of ``d``: the gain in recall@N, in points.

* The 95 % interval is a two-way bootstrap: seeds and queries resampled with replacement,
  independently (the same resampled queries for every seed, as they are one test set), so that it
  carries both the training noise (seeds) and the finite test set (queries).
* The sign test counts seeds whose recall went up against down (ties dropped), two-sided. With 5
  seeds it cannot reach p < 0.05: all five up gives p = 2 / 2^5 = 0.0625. It is reported as what it
  is, the seed-level evidence, beside the interval.

A gain is *established* only where the interval excludes 0.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

BOOTSTRAP_REPLICATES = 10_000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class PairedDiff:
    """Recall@N of a generation minus its seed's baseline (fractions), over seeds x queries."""

    n: int  # recall@N
    mean: float
    low: float  # 95 % bootstrap interval
    high: float
    per_seed: tuple[float, ...]
    seeds_up: int
    seeds_down: int
    sign_p: float  # two-sided sign test over seeds (1.0 when every seed ties)
    queries: int

    @property
    def established(self) -> bool:
        """The interval excludes 0."""
        return self.low > 0 or self.high < 0

    def text(self) -> str:
        """'+4.2 [+1.0, +7.5]' in points of recall."""
        return f"{100 * self.mean:+.1f} [{100 * self.low:+.1f}, {100 * self.high:+.1f}]"

    def verdict(self) -> str:
        if not self.established:
            return "not established (the interval holds 0)"
        return "established gain" if self.mean > 0 else "established loss"


def hits_at(correct: np.ndarray, n: int) -> np.ndarray:
    """Per query: a right answer within the top ``n`` (``correct`` is Q x K)."""
    correct = np.asarray(correct, dtype=bool)
    if not 1 <= n <= correct.shape[1]:
        raise ValueError(f"recall@{n} needs 1 <= N <= K={correct.shape[1]}")
    return correct[:, :n].any(axis=1)


def paired_diff(treated: np.ndarray, baseline: np.ndarray, n: int = 1, replicates: int = BOOTSTRAP_REPLICATES,
                seed: int = BOOTSTRAP_SEED) -> PairedDiff:
    """``treated`` and ``baseline``: per seed, per query hits (S x Q booleans, or 0/1), the same
    seeds and queries in the same order. Returns the mean difference with its 95 % interval."""
    t, b = np.asarray(treated, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    if t.shape != b.shape or t.ndim != 2 or 0 in t.shape:
        raise ValueError(f"paired hits must be two equal S x Q tables, got {t.shape} and {b.shape}")
    d = t - b
    s, q = d.shape
    rng = np.random.default_rng(seed)
    seed_w = rng.multinomial(s, np.full(s, 1.0 / s), size=replicates).astype(np.float64)  # B x S
    query_w = rng.multinomial(q, np.full(q, 1.0 / q), size=replicates).astype(np.float64)  # B x Q
    boot = np.einsum("bs,sq,bq->b", seed_w, d, query_w) / (s * q)
    low, high = np.percentile(boot, [2.5, 97.5])
    per_seed = d.mean(axis=1)
    up, down = int((per_seed > 0).sum()), int((per_seed < 0).sum())
    sign_p = float(binomtest(up, up + down, 0.5).pvalue) if up + down else 1.0
    return PairedDiff(n, float(d.mean()), float(low), float(high), tuple(float(v) for v in per_seed), up, down, sign_p, q)


def generation_diffs(hits_by_seed: Sequence[dict[int, np.ndarray]], ns: Sequence[int] = (1, 5, 10),
                     baseline: int = 0) -> dict[int, dict[int, PairedDiff]]:
    """``hits_by_seed[i][g]``: seed i's Q x K ``correct`` matrix of generation g. For every
    generation after ``baseline`` that all seeds have: {generation: {N: PairedDiff}}."""
    common = set(hits_by_seed[0])
    for h in hits_by_seed[1:]:
        common &= set(h)
    out: dict[int, dict[int, PairedDiff]] = {}
    for g in sorted(common - {baseline}):
        out[g] = {}
        for n in ns:
            t = np.stack([hits_at(h[g], n) for h in hits_by_seed])
            b = np.stack([hits_at(h[baseline], n) for h in hits_by_seed])
            out[g][n] = paired_diff(t, b, n)
    return out
