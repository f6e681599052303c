"""The disk cache of heatmap pairs (sfrs_core.explain.pair_cache)."""
from __future__ import annotations

import os

import numpy as np
import pytest

from sfrs_core.data import load_dataset
from sfrs_core.explain.heatmaps import compare_heatmaps
from sfrs_core.explain.pair_cache import pair_file, pair_heatmaps
from sfrs_core.runs import open_run


@pytest.fixture
def pair_setup(tiny_runs, tiny_city, tmp_path):
    import shutil

    run_path = tmp_path / "run"
    shutil.copytree(tiny_runs / "tiny-sfrs", run_path)
    run = open_run(run_path)
    split = load_dataset(tiny_city)["test"]
    g, q = run.last_generation, 1
    match = int(run.results("test", g).ids[q, 0])
    args = (run_path, g, "test", q, match, "gradcam", split.queries.image_path(q), split.database.image_path(match),
            run.image_size())
    return run, args


def _no_model():
    raise AssertionError("the model was loaded although the pair is cached")


def test_a_cached_pair_equals_the_computed_one_without_loading_the_model(pair_setup):
    run, args = pair_setup
    model = run.model(run.last_generation)
    calls = []
    first = pair_heatmaps(*args, lambda: calls.append(1) or model)
    assert calls == [1] and pair_file(*args[:4], args[4], "gradcam").is_file()
    expected = compare_heatmaps({"m": model}, args[6], args[7], "gradcam", args[8])["m"]
    again = pair_heatmaps(*args, _no_model)
    for pair in (first, again):
        np.testing.assert_allclose(pair.query.image, expected.query.image, atol=1e-6)
        np.testing.assert_allclose(pair.match.feature, expected.match.feature, atol=1e-6)
        assert pair.similarity == pytest.approx(expected.similarity, abs=1e-6)
        assert pair.query.similarity == pytest.approx(expected.query.similarity, abs=1e-6)
        np.testing.assert_array_equal(pair.query_rgb, expected.query_rgb)
        np.testing.assert_array_equal(pair.match_overlay, expected.match_overlay)


def test_a_stale_or_broken_cache_file_is_recomputed(pair_setup):
    run, args = pair_setup
    model = run.model(run.last_generation)
    pair_heatmaps(*args, lambda: model)
    path = pair_file(*args[:4], args[4], "gradcam")
    checkpoint = args[0] / f"gen{args[1]}.pt"
    os.utime(path, (checkpoint.stat().st_mtime - 10,) * 2)  # the checkpoint is newer: retrained since
    calls = []
    pair_heatmaps(*args, lambda: calls.append(1) or model)
    assert calls == [1]
    path.write_bytes(b"not an npz")
    pair_heatmaps(*args, lambda: calls.append(2) or model)
    assert calls == [1, 2]
    pair_heatmaps(*args, _no_model)  # and written again


def test_a_read_only_run_folder_still_gives_the_pair(pair_setup):
    run, args = pair_setup
    model = run.model(run.last_generation)
    cache = args[0] / "cache"
    cache.mkdir(exist_ok=True)
    cache.chmod(0o500)
    try:
        if os.access(cache, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        pair = pair_heatmaps(*args, lambda: model)
        assert pair.query.image.shape == pair.query_rgb.shape[:2]
        assert not pair_file(*args[:4], args[4], "gradcam").exists()
    finally:
        cache.chmod(0o700)
