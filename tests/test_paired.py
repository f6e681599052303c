"""Paired seed x query comparisons: intervals that cover a known effect, and 0 under the null."""
from __future__ import annotations

import numpy as np
import pytest

from sfrs_core.paired import generation_diffs, hits_at, paired_diff


def synthetic(effect: float, seeds: int = 5, queries: int = 400, base: float = 0.7, seed_sd: float = 0.02, rng_seed: int = 1):
    """Baseline hits ~ Bernoulli(base + seed noise); the treated model adds ``effect`` on average
    (queries the baseline misses are fixed with the right probability, on every seed)."""
    rng = np.random.default_rng(rng_seed)
    b = np.zeros((seeds, queries), bool)
    t = np.zeros((seeds, queries), bool)
    for s in range(seeds):
        p = base + rng.normal(0, seed_sd)
        b[s] = rng.random(queries) < p
        fix = rng.random(queries) < effect / (1 - p)
        t[s] = b[s] | (~b[s] & fix)
    return t, b


def test_interval_covers_a_known_effect_and_excludes_zero():
    t, b = synthetic(effect=0.08)
    d = paired_diff(t, b)
    assert d.mean == pytest.approx((t.astype(float) - b).mean())
    assert d.low < 0.08 < d.high
    assert d.low > 0 and d.established and d.verdict() == "established gain"
    assert d.seeds_up == 5 and d.seeds_down == 0
    assert d.sign_p == pytest.approx(2 / 2**5)  # the smallest a 5-seed sign test can give


def test_interval_covers_zero_under_the_null():
    covered = 0
    for r in range(20):
        t, b = synthetic(effect=0.0, rng_seed=100 + r)
        # under the null the treated model is an independent redraw at the same rate
        rng = np.random.default_rng(r)
        t = rng.random(b.shape) < b.mean(axis=1, keepdims=True)
        d = paired_diff(t, b, replicates=2000)
        covered += d.low <= 0 <= d.high
    assert covered >= 17  # nominal 95 %: 19 of 20 expected, 17 leaves room for chance


def test_identical_models_give_a_zero_width_interval_at_zero():
    _, b = synthetic(effect=0.0)
    d = paired_diff(b, b)
    assert (d.mean, d.low, d.high) == (0.0, 0.0, 0.0)
    assert not d.established and d.sign_p == 1.0


def test_interval_widens_with_seed_noise():
    quiet = paired_diff(*synthetic(effect=0.05, seed_sd=0.0, rng_seed=3))
    noisy_t, noisy_b = synthetic(effect=0.05, rng_seed=3)
    # per-seed effects that disagree: half the seeds gain 15 points, half lose 5
    noisy_t = noisy_b.copy()
    rng = np.random.default_rng(0)
    for s in range(noisy_t.shape[0]):
        flip = rng.random(noisy_t.shape[1]) < (0.5 if s % 2 == 0 else 0.0)
        noisy_t[s] = noisy_b[s] | (flip & ~noisy_b[s])
        if s % 2:
            noisy_t[s] = noisy_b[s] & (rng.random(noisy_t.shape[1]) > 0.07)
    noisy = paired_diff(noisy_t, noisy_b)
    assert noisy.high - noisy.low > 2 * (quiet.high - quiet.low)


def test_generation_diffs_reads_correct_matrices_at_n():
    rng = np.random.default_rng(0)
    runs = []
    for _ in range(3):
        base = rng.random((50, 10)) < 0.2
        better = base | (rng.random((50, 10)) < 0.1)
        runs.append({0: base, 1: better})
    out = generation_diffs(runs, ns=(1, 5))
    assert set(out) == {1} and set(out[1]) == {1, 5}
    expect = np.mean([hits_at(r[1], 5).mean() - hits_at(r[0], 5).mean() for r in runs])
    assert out[1][5].mean == pytest.approx(expect)
    with pytest.raises(ValueError):
        paired_diff(np.ones((2, 3)), np.ones((3, 2)))
