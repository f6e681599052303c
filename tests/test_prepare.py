"""The app's one-time preparation: cached database indexes and attention summaries."""
from __future__ import annotations

import os

import numpy as np
import pytest

from sfrs_core.data import load_dataset
from sfrs_core.data.transforms import ImageTransform
from sfrs_core.explain.attention import attention_by_class
from sfrs_core.prepare import attention_file, attention_summary, cached_attention, index_folder, prepare
from sfrs_core.retrieval import extract_descriptors
from sfrs_core.runs import open_run


@pytest.fixture(scope="module")
def prepared(tiny_runs):
    return prepare((str(tiny_runs),), progress=False)


def test_prepare_indexes_every_generation_with_the_models_own_descriptors(tiny_runs, prepared):
    sfrs = open_run(tiny_runs / "tiny-sfrs")
    for run in (sfrs, open_run(tiny_runs / "tiny-sare")):
        for g in run.generations:
            assert index_folder(run, g, "test") in prepared
    db = load_dataset(sfrs.data)["test"].database
    model = sfrs.model(1)
    expected = extract_descriptors(model, db, ImageTransform(sfrs.image_size(), model.normalization), progress=False)
    from sfrs_core.retrieval.bundle import IndexBundle

    bundle = IndexBundle.load(index_folder(sfrs, 1, "test"))
    stored = bundle.index.reconstruct_n(0, bundle.index.ntotal)
    np.testing.assert_allclose(stored, expected, atol=1e-5)
    assert bundle.paths == [str(db.image_path(i)) for i in range(len(db))]


def test_prepare_again_reuses_the_cache_and_rebuilds_after_a_newer_checkpoint(tiny_runs, prepared):
    sfrs = open_run(tiny_runs / "tiny-sfrs")
    bundle_json = index_folder(sfrs, 0, "test") / "bundle.json"
    before = bundle_json.stat().st_mtime_ns
    prepare((str(tiny_runs),), progress=False)
    assert bundle_json.stat().st_mtime_ns == before
    ckpt = sfrs.path / "gen0.pt"
    future = bundle_json.stat().st_mtime + 10
    os.utime(ckpt, (future, future))
    try:
        prepare((str(tiny_runs),), progress=False)
        assert bundle_json.stat().st_mtime_ns > before
    finally:
        os.utime(ckpt, (future - 20, future - 20))


def test_attention_summary_is_cached_and_equals_a_direct_computation(tiny_runs, prepared):
    sfrs = open_run(tiny_runs / "tiny-sfrs")
    g = sfrs.last_generation
    assert attention_file(sfrs, g, "test", "gradcam") in prepared
    assert cached_attention(sfrs, 0, "test", "activation") is None  # not prepared: computed on demand
    calls = []
    summary = attention_summary(sfrs, 0, "test", "activation", on_progress=lambda d, t: calls.append((d, t)))
    n = len(load_dataset(sfrs.data)["test"].queries)
    assert calls[-1] == (n, n) and len(calls) == n
    assert cached_attention(sfrs, 0, "test", "activation") == summary
    direct = attention_by_class(sfrs.model(0), load_dataset(sfrs.data)["test"], sfrs.results("test", 0), "activation")
    assert summary["shares"] == pytest.approx(direct["shares"])
    assert sum(summary["shares"].values()) == pytest.approx(1.0)
