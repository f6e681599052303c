"""Retrieval: extraction, faiss indexes, recall@N, results files, evaluation — each checked
against an independent numpy/torch computation."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from sfrs_core.data.transforms import ImageTransform
from sfrs_core.retrieval import (
    QueryResults,
    build_index,
    cuda_available,
    dedupe_places,
    evaluate,
    extract_descriptors,
    faiss_gpu_available,
    load_index,
    pick_device,
    recall_at_n,
    save_index,
    search,
)
from sfrs_core.retrieval.index import default_m, default_nlist


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _brute_recall(q_desc, db_desc, q_utm, db_utm, ns, radius=25.0):
    """Plain numpy: rank by inner product, right when a top-N image lies within radius."""
    order = np.argsort(-(q_desc.astype(np.float64) @ db_desc.T.astype(np.float64)), axis=1, kind="stable")
    dist = np.sqrt(((q_utm[:, None, :] - db_utm[None, :, :]) ** 2).sum(-1))
    out = {}
    for n in ns:
        right = [np.any(dist[q, order[q, :n]] <= radius) for q in range(len(q_desc))]
        out[n] = float(np.mean(right))
    return out, dist


# ---------------------------------------------------------------- metrics


def test_recall_matches_brute_force_numpy():
    rng = np.random.default_rng(0)
    db_utm = rng.uniform(0, 300, size=(300, 2))
    q_utm = rng.uniform(0, 300, size=(60, 2))
    # random Fourier features of the position plus noise: nearby places tend to look alike
    w, b = rng.normal(scale=1 / 30, size=(2, 64)), rng.uniform(0, 2 * np.pi, 64)
    db_desc = _unit(np.cos(db_utm @ w + b) + 1.2 * rng.normal(size=(300, 64)))
    q_desc = _unit(np.cos(q_utm @ w + b) + 1.2 * rng.normal(size=(60, 64)))
    ns = (1, 5, 10, 20)
    expected, dist = _brute_recall(q_desc, db_desc, q_utm, db_utm, ns)
    positives = [np.flatnonzero(dist[q] <= 25.0) for q in range(len(q_utm))]
    _, ids = search(build_index(db_desc, use_gpu=False), q_desc, 20)
    got = recall_at_n(ids, positives, ns)
    assert set(got) == set(ns)
    for n in ns:
        assert got[n] == pytest.approx(expected[n], abs=1e-12)
    assert 0 < got[1] < got[20] < 1  # a non-trivial case


def test_recall_queries_without_positive_are_wrong_and_warned(caplog):
    ranked = np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8]])
    positives = [np.array([2]), np.array([], dtype=np.int64), np.array([6, 99])]
    with caplog.at_level(logging.WARNING):
        got = recall_at_n(ranked, positives, ns=(1, 3))
    assert got == {1: pytest.approx(1 / 3), 3: pytest.approx(2 / 3)}
    assert "no positive" in caplog.text
    with pytest.raises(ValueError, match="K=3"):
        recall_at_n(ranked, positives, ns=(1, 5))


def test_dedupe_places_hand_made():
    db_utm = np.array([
        [0.0, 0.0], [0.0, 0.0], [0.004, 0.0],  # ids 0-2: one place (within 1 cm)
        [10.0, 0.0], [10.0, 0.0],              # ids 3-4: another place
        [0.0, 0.02],                           # id 5: 2 cm away -> a place of its own
    ])
    ranked = np.array([[1, 0, 3, 2, 5, 4], [4, 3, 2, 1, 0, 5]])
    assert dedupe_places(ranked, db_utm, 3).tolist() == [[1, 3, 5], [4, 2, 5]]
    assert dedupe_places(ranked, db_utm, 2).tolist() == [[1, 3], [4, 2]]
    assert dedupe_places(ranked, db_utm, 4).tolist() == [[1, 3, 5, -1], [4, 2, 5, -1]]


# ---------------------------------------------------------------- index


def test_flat_search_equals_numpy_argsort():
    rng = np.random.default_rng(1)
    db, q = _unit(rng.normal(size=(500, 48))), _unit(rng.normal(size=(40, 48)))
    sims, ids = search(build_index(db, use_gpu=False), q, 10)
    full = q.astype(np.float64) @ db.T.astype(np.float64)
    order = np.argsort(-full, axis=1)[:, :10]
    assert ids.dtype == np.int64 and sims.dtype == np.float32
    np.testing.assert_array_equal(ids, order)
    np.testing.assert_allclose(sims, np.take_along_axis(full, order, axis=1), atol=1e-5)
    assert search(build_index(db[:5], use_gpu=False), q, 10)[1].shape == (40, 5)  # k capped
    with pytest.raises(ValueError, match="dimension"):
        search(build_index(db, use_gpu=False), q[:, :10], 3)


def _clustered(rng, n, dim=64, centers=40, noise=0.08):
    c = _unit(rng.normal(size=(centers, dim)))
    x = c[rng.integers(0, centers, n)] + noise * rng.normal(size=(n, dim))
    return _unit(x)


def test_ivfpq_finds_true_nearest_neighbour_mostly():
    rng = np.random.default_rng(2)
    db = _clustered(rng, 3000)
    q = _unit(db[rng.choice(3000, 100, replace=False)] + 0.03 * rng.normal(size=(100, 64)))
    index = build_index(db, "ivfpq", use_gpu=False)
    assert index.nlist == default_nlist(3000) and index.pq.M == default_m(64)
    _, ids = search(index, q, 5)
    true_nn = np.argmax(q @ db.T, axis=1)
    assert np.mean(ids[:, 0] == true_nn) >= 0.8
    assert np.mean((ids == true_nn[:, None]).any(axis=1)) >= 0.9


def test_ivfpq_clear_errors():
    rng = np.random.default_rng(3)
    with pytest.raises(ValueError, match="too few vectors"):
        build_index(_unit(rng.normal(size=(100, 16))), "ivfpq", use_gpu=False)
    with pytest.raises(ValueError, match="divide"):
        build_index(_unit(rng.normal(size=(400, 16))), "ivfpq", m=5, use_gpu=False)
    with pytest.raises(ValueError, match="unknown index kind"):
        build_index(_unit(rng.normal(size=(10, 16))), "lsh")


@pytest.mark.skipif(faiss_gpu_available(), reason="faiss has a GPU here")
def test_use_gpu_true_without_gpu_faiss_errors():
    with pytest.raises(RuntimeError, match="faiss"):
        build_index(np.eye(4, dtype=np.float32), use_gpu=True)


@pytest.mark.parametrize("kind", ["flat", "ivfpq"])
def test_index_save_load_round_trip(tmp_path, kind):
    rng = np.random.default_rng(4)
    db, q = _clustered(rng, 1200, dim=32), _clustered(rng, 30, dim=32)
    index = build_index(db, kind, use_gpu=False)
    path = save_index(index, tmp_path / "sub" / "db.faiss")
    assert sorted(p.name for p in path.parent.iterdir()) == ["db.faiss"]  # no temp file left
    loaded = load_index(path)
    assert loaded.ntotal == 1200 and type(loaded) is type(index)
    s0, i0 = search(index, q, 10)
    s1, i1 = search(loaded, q, 10)
    np.testing.assert_array_equal(i0, i1)
    np.testing.assert_array_equal(s0, s1)
    save_index(index, path)  # overwrite in place
    assert sorted(p.name for p in path.parent.iterdir()) == ["db.faiss"]


def test_load_index_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.faiss"):
        load_index(tmp_path / "missing.faiss")
    bad = tmp_path / "bad.faiss"
    bad.write_bytes(b"this is not a faiss index")
    with pytest.raises(ValueError, match="bad.faiss"):
        load_index(bad)


# ---------------------------------------------------------------- device


def test_pick_device():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device(None).type == ("cuda" if cuda_available() else "cpu")
    assert pick_device("auto") == pick_device(None)
    if cuda_available():
        assert pick_device("cuda").index is not None
    with pytest.raises(ValueError, match="unknown device"):
        pick_device("gpu0")
    if not cuda_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            pick_device("cuda")
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            pick_device(torch.device("cuda", 0))


# ---------------------------------------------------------------- extraction


def test_extract_equals_direct_model_and_is_batch_invariant(model, tiny_test):
    db = tiny_test.database
    transform = ImageTransform(None, model.normalization)
    idx = [7, 0, 3, 11, 5, 2]
    model.train()  # extraction must switch to eval and restore this afterwards
    modes = {name: m.training for name, m in model.named_modules()}
    got = {bs: extract_descriptors(model, db, transform, batch_size=bs, device="cpu", progress=False, indices=idx)
           for bs in (1, 4, 32)}
    assert {name: m.training for name, m in model.named_modules()} == modes
    model.eval()
    with torch.no_grad():
        expected = model(torch.stack([transform(db.image_path(i)) for i in idx])).numpy()
    for bs, desc in got.items():
        assert desc.dtype == np.float32 and desc.shape == (len(idx), model.descriptor_dim)
        np.testing.assert_allclose(desc, expected, atol=1e-5, err_msg=f"batch_size={bs}")


def test_extract_regions_shape(model, tiny_test):
    transform = ImageTransform(None, model.normalization)
    idx = [1, 4, 9]
    regions = extract_descriptors(model, tiny_test.queries, transform, batch_size=2, device="cpu",
                                  progress=False, regions=True, indices=idx)
    glob = extract_descriptors(model, tiny_test.queries, transform, batch_size=2, device="cpu",
                               progress=False, indices=idx)
    assert regions.shape == (3, 9, model.descriptor_dim) and regions.dtype == np.float32
    np.testing.assert_allclose(regions[:, 0], glob, atol=1e-5)  # region 0 is the global descriptor


# ---------------------------------------------------------------- evaluation and results


@pytest.fixture(scope="module")
def tiny_results(model, tiny_test):
    return evaluate(model, tiny_test, k=20, batch_size=16, device="cpu", progress=False, run="random-mnv2")


def test_evaluate_end_to_end(model, tiny_test, tiny_results):
    r, split = tiny_results, tiny_test
    nq, ndb = len(split.queries), len(split.database)
    assert r.ids.shape == r.similarities.shape == r.distances_m.shape == r.correct.shape == (nq, 20)
    assert r.k == 20 and len(r) == nq and r.split == "test" and r.run == "random-mnv2"
    assert r.ids.min() >= 0 and r.ids.max() < ndb
    assert all(len(set(row)) == 20 for row in r.ids.tolist())
    np.testing.assert_array_equal(r.queries, np.arange(nq))
    expected_dist = np.linalg.norm(split.database.utm[r.ids] - split.queries.utm[:, None, :], axis=-1)
    np.testing.assert_allclose(r.distances_m, expected_dist, rtol=1e-6, atol=1e-4)
    np.testing.assert_array_equal(r.correct, expected_dist <= 25.0)
    assert np.all(np.diff(r.similarities, axis=1) <= 1e-6)  # best first
    # recall: independently from the dataset's KD-tree positives and from brute-force numpy
    assert sorted(r.recall) == [1, 5, 10, 20]
    kd = recall_at_n(r.ids, split.eval_positives)
    db_desc = extract_descriptors(model, split.database, ImageTransform(None, model.normalization),
                                  device="cpu", progress=False)
    q_desc = extract_descriptors(model, split.queries, ImageTransform(None, model.normalization),
                                 device="cpu", progress=False)
    brute, _ = _brute_recall(q_desc, db_desc, split.queries.utm, split.database.utm, (1, 5, 10, 20))
    for n in (1, 5, 10, 20):
        assert r.recall[n] == pytest.approx(kd[n]) == pytest.approx(brute[n])
    np.testing.assert_allclose(r.similarities, np.take_along_axis(q_desc @ db_desc.T, r.ids, axis=1), atol=1e-5)
    # precomputed database descriptors give the same results
    again = evaluate(model, split, k=20, device="cpu", progress=False, db_descriptors=db_desc)
    np.testing.assert_array_equal(again.ids, r.ids)
    with pytest.raises(ValueError, match="database descriptors"):
        evaluate(model, split, device="cpu", progress=False, db_descriptors=db_desc[:5])


def test_evaluate_dedupe_keeps_one_hit_per_place(model, tiny_test):
    split = tiny_test
    db_desc = extract_descriptors(model, split.database, ImageTransform(None, model.normalization),
                                  device="cpu", progress=False)
    r = evaluate(model, split, k=10, dedupe=True, device="cpu", progress=False, db_descriptors=db_desc)
    places = np.round(split.database.utm[r.ids], 2)
    for row in places:
        assert len({tuple(p) for p in row}) == r.k
    plain = evaluate(model, split, k=len(split.database), device="cpu", progress=False, db_descriptors=db_desc)
    np.testing.assert_array_equal(r.ids, dedupe_places(plain.ids, split.database.utm, r.k))


def test_query_results_round_trip(tmp_path, tiny_results):
    path = tiny_results.save(tmp_path / "results.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.npz"]
    loaded = QueryResults.load(path)
    for name in ("queries", "ids", "similarities", "distances_m", "correct"):
        a, b = getattr(tiny_results, name), getattr(loaded, name)
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    assert loaded.recall == tiny_results.recall
    assert (loaded.split, loaded.dataset_root, loaded.run, loaded.k, loaded.meta) == (
        tiny_results.split, tiny_results.dataset_root, tiny_results.run, tiny_results.k, tiny_results.meta)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="bad.npz"):
        QueryResults.load(bad)


def test_inference_state_restores_memory_format_and_modes(model):
    from sfrs_core.retrieval.extract import inference_state

    model.train()
    modes = {name: m.training for name, m in model.named_modules()}
    with inference_state(model, torch.device("cpu"), channels_last=True) as net:
        assert not net.training
        conv = next(p for p in net.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[2] > 1)
        assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert all(p.is_contiguous() for p in model.parameters())
    assert {name: m.training for name, m in model.named_modules()} == modes
    model.eval()


@pytest.mark.skipif(not cuda_available(), reason="needs CUDA")
def test_extract_on_cuda_matches_cpu_and_restores_model(model, tiny_test):
    transform = ImageTransform(None, model.normalization)
    idx = list(range(8))
    cpu = extract_descriptors(model, tiny_test.database, transform, device="cpu", progress=False, indices=idx)
    gpu = extract_descriptors(model, tiny_test.database, transform, device="cuda", progress=False, indices=idx)
    fp32 = extract_descriptors(model, tiny_test.database, transform, device="cuda", progress=False,
                               indices=idx, amp=False)
    assert gpu.dtype == np.float32
    assert next(model.parameters()).device.type == "cpu"
    assert all(p.is_contiguous() for p in model.parameters())
    np.testing.assert_allclose(fp32, cpu, atol=1e-3)
    assert np.min(np.sum(gpu * cpu, axis=1)) > 0.99  # AMP: same descriptors up to half precision
