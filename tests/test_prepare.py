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


def test_prepare_mines_the_sfrs_runs_validation_positives_with_the_models_own_descriptors(tiny_runs, prepared):
    """The Soft labels and Map pages' mined positives come prepared for the SFRS run only: the
    stored descriptors are the model's own (no PCA, an independent extraction path) and the stored
    table is what the trainer's miner makes of them."""
    from sfrs_core.explain.positives import (MiningTable, PositiveMiner, cached_descriptors, mined_positives,
                                             mining_config, mining_file)

    sfrs, sare = open_run(tiny_runs / "tiny-sfrs"), open_run(tiny_runs / "tiny-sare")
    g = sfrs.last_generation
    assert mining_file(sfrs, g, "val") in prepared
    assert not mining_file(sare, sare.last_generation, "val").exists()
    split = load_dataset(sfrs.data)["val"]
    model = sfrs.model(g)
    db, q = cached_descriptors(sfrs, g, split)
    transform = ImageTransform(sfrs.image_size(), model.normalization)
    model.pca = None  # the descriptors mining uses: before PCA
    np.testing.assert_allclose(db, extract_descriptors(model, split.database, transform, progress=False), atol=1e-5)
    table = mined_positives(sfrs, g, split)
    fresh = MiningTable.from_miner(PositiveMiner(split, db, q, mining_config(sfrs)), len(split.queries))
    for a, b in zip((table.positives, table.ranked, table.picked), (fresh.positives, fresh.ranked, fresh.picked)):
        assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert any(len(p) for p in table.picked)


def test_prepare_caches_the_heatmaps_the_heatmaps_page_opens_on(tiny_runs, prepared):
    from sfrs_core.explain.pair_cache import pair_file

    for run in (open_run(tiny_runs / "tiny-sfrs"), open_run(tiny_runs / "tiny-sare")):
        g = run.last_generation
        match = int(run.results("test", g).ids[0, 0])
        assert pair_file(run.path, g, "test", 0, match, "gradcam") in prepared
        assert pair_file(run.path, g, "test", 0, match, "gradcam").is_file()


def test_prepare_keeps_the_soft_labels_the_soft_labels_page_opens_on(tiny_runs, prepared):
    """The first snapshot query's picked soft labels are on disk after prepare, equal to a direct
    computation, and recomputed when the checkpoint is newer or other positives are asked for."""
    from sfrs_core.explain.positives import cached_picked_soft_labels, mined_positives, picked_file, picked_soft_labels

    run = open_run(tiny_runs / "tiny-sfrs")
    g = run.last_generation
    split = load_dataset(run.data)["val"]
    snap = next(s for s in run.soft_labels() if s.generation == g)
    mined = mined_positives(run, g, split).mine(int(snap.queries[0]))
    assert len(mined.picked), "the tiny run's first snapshot query picks no positive: the test needs one"
    path = picked_file(run, g, "val", mined.query)
    assert path.is_file()
    model = run.model(g).eval()
    direct = picked_soft_labels(model, split, mined.query, mined.picked, snap.temperature, run.image_size())
    calls = []

    def get_model():
        calls.append(1)
        return model

    kept = cached_picked_soft_labels(run, g, split, mined.query, mined.picked, snap.temperature, get_model)
    np.testing.assert_allclose(kept, direct, rtol=1e-5, atol=1e-7)
    assert calls == [] and kept.shape == (len(mined.picked), 9) and np.isclose(kept.sum(), 1.0)
    # another temperature: the same kept similarities, another softmax
    hotter = cached_picked_soft_labels(run, g, split, mined.query, mined.picked, 2 * snap.temperature, get_model)
    assert calls == [] and hotter.max() < kept.max()
    # other positives, or a checkpoint newer than the file: computed again
    cached_picked_soft_labels(run, g, split, mined.query, mined.picked[:1], snap.temperature, get_model)
    assert calls == [1]
    cached_picked_soft_labels(run, g, split, mined.query, mined.picked, snap.temperature, get_model)
    checkpoint = run.path / f"gen{g}.pt"
    os.utime(path, (checkpoint.stat().st_mtime - 10,) * 2)
    np.testing.assert_allclose(
        cached_picked_soft_labels(run, g, split, mined.query, mined.picked, snap.temperature, get_model), direct,
        rtol=1e-5, atol=1e-7)
    assert calls == [1, 1, 1]


def test_prepare_keeps_the_feature_map_size_the_soft_labels_page_draws_regions_on(tiny_runs, prepared):
    from sfrs_core.explain.heatmap_core import load_rgb
    from sfrs_core.explain.soft_labels import cached_feature_size, feature_size

    run = open_run(tiny_runs / "tiny-sfrs")
    g = run.last_generation
    hw = load_rgb(load_dataset(run.data)["val"].queries.image_path(0), run.image_size()).shape[:2]
    assert (run.path / "cache" / "feature_size.json").is_file()
    model = run.model(g)
    expected = feature_size(model, hw)
    assert cached_feature_size(run.path, g, hw, lambda: pytest.fail("measured again")) == expected
    checkpoint = run.path / f"gen{g}.pt"
    before = checkpoint.stat()
    os.utime(checkpoint)  # a newer checkpoint: measured again
    try:
        assert cached_feature_size(run.path, g, hw, lambda: model) == expected
        assert cached_feature_size(run.path, g, hw, lambda: pytest.fail("measured again")) == expected
    finally:
        os.utime(checkpoint, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_prepare_keeps_synthcity_map_layers_beside_the_dataset(tiny_runs, prepared):
    from sfrs_core.data.synthcity.basemap import basemap_file

    data = open_run(tiny_runs / "tiny-sfrs").data
    assert all(basemap_file(data, s).is_file() for s in ("train", "val", "test"))
