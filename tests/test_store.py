"""On-disk descriptor stores: chunked extraction equals the in-RAM one, resumes without
recomputing finished chunks, float16 within its rounding bound, mismatches refused, and
evaluation from a store equals evaluation in RAM."""
from __future__ import annotations

import json

import numpy as np
import pytest

from sfrs_core.data.transforms import ImageTransform
from sfrs_core.models import ModelConfig, build_model
from sfrs_core.retrieval import (
    DescriptorStore,
    StoreError,
    StoreMismatchError,
    descriptor_identity,
    evaluate,
    extract_descriptors,
    extract_to_store,
)
from sfrs_core.retrieval.bundle import IndexBundle
from sfrs_core.retrieval.results import QueryResults
from sfrs_core.retrieval.store import prefetch

FLOAT16_MAX_ABS_ERROR = 2.0 ** -12  # round-to-nearest, values in [-1, 1]: half the spacing below 1


@pytest.fixture(scope="module")
def transform(model):
    return ImageTransform(None, model.normalization)


@pytest.fixture(scope="module")
def reference(model, tiny_test, transform):
    """The in-RAM extraction of the database, batch size 4."""
    return extract_descriptors(model, tiny_test.database, transform, batch_size=4, device="cpu", progress=False)


@pytest.fixture(scope="module")
def q_reference(model, tiny_test, transform):
    """The in-RAM extraction of the queries, batch size 4."""
    return extract_descriptors(model, tiny_test.queries, transform, batch_size=4, device="cpu", progress=False)


@pytest.fixture(scope="module")
def in_ram(model, tiny_test, reference, q_reference):
    """In-RAM evaluation (IndexFlatIP) of the reference descriptors."""
    return evaluate(model, tiny_test, k=20, progress=False, db_descriptors=reference, query_descriptors=q_reference)


class Counter:
    """Wraps ``model.forward``: counts the images it sees, optionally fails at the n-th batch."""

    def __init__(self, model, fail_at_batch: int | None = None):
        self.forward, self.fail_at, self.images, self.batches = model.forward, fail_at_batch, 0, 0

    def __call__(self, x, *args, **kwargs):
        if self.fail_at is not None and self.batches == self.fail_at:
            raise KeyboardInterrupt("simulated interruption")
        self.batches += 1
        self.images += len(x)
        return self.forward(x, *args, **kwargs)


# ---------------------------------------------------------------- the store itself


def test_store_write_read_chunks_rows(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(53, 6)).astype(np.float32)
    store = DescriptorStore.create(tmp_path / "s", 53, 6, identity={"what": "test"}, chunk_rows=10)
    assert store.missing() == [(0, 10), (10, 20), (20, 30), (30, 40), (40, 50), (50, 53)]
    assert (tmp_path / "s" / "descriptors.npy").stat().st_size == store.nbytes + json.loads(
        (tmp_path / "s" / "store.json").read_text())["data_offset"]
    with pytest.raises(StoreError, match="not been written"):
        store.read(0, 5)
    store.write(20, x[20:30])
    store.write(0, x[0:10])
    assert store.done == [[0, 10], [20, 30]] and store.missing()[0] == (10, 20) and not store.complete
    for a, b in store.missing():
        store.write(a, x[a:b])
    assert store.complete and store.done == [[0, 53]]
    reopened = DescriptorStore.open(tmp_path / "s", identity={"what": "test"}, require_complete=True)
    np.testing.assert_array_equal(reopened.read(), x)
    blocks = list(reopened.chunks(rows=7, start=3, stop=40))
    assert [a for a, _ in blocks] == list(range(3, 40, 7))
    np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), x[3:40])
    idx = [52, 0, 7, 7, 31]
    np.testing.assert_array_equal(reopened.rows(idx), x[idx])
    sample = reopened.sample(20, seed=1)
    assert sample.shape == (20, 6) and len({r.tobytes() for r in sample}) == 20
    assert all(any(np.array_equal(r, row) for row in x) for r in sample)
    np.testing.assert_array_equal(np.asarray(reopened.memmap()), x)  # a plain .npy file
    with pytest.raises(ValueError, match="NaN"):
        store.write(0, np.full((2, 6), np.nan, np.float32))
    with pytest.raises(FileExistsError, match="store.json"):
        DescriptorStore.create(tmp_path / "s", 53, 6)


def test_store_refuses_damaged_files(tmp_path):
    store = DescriptorStore.create(tmp_path / "s", 10, 4, chunk_rows=5)
    with open(store.data_path, "r+b") as fh:
        fh.truncate(store.data_path.stat().st_size - 8)
    with pytest.raises(StoreError, match=r"descriptors\.npy.*truncated"):
        DescriptorStore.open(tmp_path / "s")
    header = tmp_path / "s" / "store.json"
    header.write_text(json.dumps({**json.loads(header.read_text()), "format_version": 99}))
    with pytest.raises(StoreError, match=r"store\.json.*version 99"):
        DescriptorStore.open(tmp_path / "s")
    with pytest.raises(FileNotFoundError, match="no descriptor store"):
        DescriptorStore.open(tmp_path / "nothing")


# ---------------------------------------------------------------- extraction into a store


def test_chunked_store_equals_in_ram_extraction(model, tiny_test, transform, reference, tmp_path):
    db = tiny_test.database
    assert len(db) > 20  # several chunks, batches straddling chunk ends
    store = extract_to_store(model, db, transform, tmp_path / "db", chunk_rows=7, batch_size=4,
                             device="cpu", progress=False)
    assert store.complete and store.shape == reference.shape and store.dtype == np.float32
    assert store.chunk_rows == 7 and len(store.chunk_ranges()) == -(-len(db) // 7)
    np.testing.assert_array_equal(store.read(), reference)  # same batches, same numbers
    # a complete store is returned as it is: the model is not run again
    counter = Counter(model)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(model, "forward", counter)
        again = extract_to_store(model, db, transform, tmp_path / "db", chunk_rows=7, batch_size=4,
                                 device="cpu", progress=False)
    assert counter.images == 0 and again.complete


def test_resume_after_interruption_computes_only_missing_chunks(model, tiny_test, transform, reference, tmp_path):
    db = tiny_test.database
    n, chunk, batch = len(db), 8, 3
    failing = Counter(model, fail_at_batch=5)  # 5 batches = 15 images: chunk 0 done, chunk 1 half done
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(model, "forward", failing)
        with pytest.raises(KeyboardInterrupt):
            extract_to_store(model, db, transform, tmp_path / "db", chunk_rows=chunk, batch_size=batch,
                             device="cpu", progress=False)
    partial = DescriptorStore.open(tmp_path / "db")
    assert failing.images == 15
    assert partial.done == [[0, 8]]  # the chunk in progress at the interruption is not recorded
    assert partial.missing()[0] == (8, 16)
    with pytest.raises(StoreError, match="incomplete"):
        DescriptorStore.open(tmp_path / "db", require_complete=True)
    counter = Counter(model)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(model, "forward", counter)
        store = extract_to_store(model, db, transform, tmp_path / "db", chunk_rows=chunk, batch_size=batch,
                                 device="cpu", progress=False)
    assert counter.images == n - 8  # finished chunk 0 was not recomputed
    assert store.complete
    # batches differ from the reference run (they start at image 8), so allow float rounding
    np.testing.assert_allclose(store.read(), reference, atol=1e-5)


def test_a_second_writer_is_refused_while_one_extracts(model, tiny_test, transform, reference, tmp_path):
    """Two extractions into one store would each record only their own rows as done: while one
    holds the writer lock (here: this test), another is refused at once and writes nothing; the
    lock goes with its holder, and the extraction then runs."""
    from sfrs_core.retrieval.store import StoreBusyError, writer_lock

    folder = tmp_path / "db"
    with writer_lock(folder):
        with pytest.raises(StoreBusyError, match="another extraction is writing"):
            extract_to_store(model, tiny_test.database, transform, folder, chunk_rows=8, batch_size=4,
                             device="cpu", progress=False)
        assert not (folder / "store.json").exists()
    store = extract_to_store(model, tiny_test.database, transform, folder, chunk_rows=8, batch_size=4,
                             device="cpu", progress=False)
    np.testing.assert_allclose(store.read(), reference, atol=1e-5)
    with writer_lock(folder):  # released after the extraction
        pass


def test_float16_store_within_rounding_bound(model, tiny_test, transform, reference, tmp_path):
    store = extract_to_store(model, tiny_test.database, transform, tmp_path / "db16", dtype="float16",
                             chunk_rows=16, batch_size=4, device="cpu", progress=False)
    assert store.dtype == np.float16 and store.nbytes == reference.size * 2
    got = store.read()
    assert got.dtype == np.float32
    err = np.abs(got - reference)
    assert 0 < err.max() <= FLOAT16_MAX_ABS_ERROR + 1e-9
    np.testing.assert_array_equal(got, reference.astype(np.float16).astype(np.float32))
    # cosine similarities survive: top-1 of each database image against the rest is unchanged
    sims16, sims32 = got @ got.T, reference @ reference.T
    np.fill_diagonal(sims16, -2)
    np.fill_diagonal(sims32, -2)
    assert np.abs(sims16 - sims32).max() < 2e-3


def test_mismatched_store_is_refused(model, tiny_test, transform, tmp_path):
    db = tiny_test.database
    folder = tmp_path / "db"
    extract_to_store(model, db, transform, folder, chunk_rows=64, batch_size=8, device="cpu", progress=False)
    other = build_model(ModelConfig(trunk="mobilenet_v2", pretrained=False, num_clusters=8))  # other weights
    with pytest.raises(StoreMismatchError, match=r"store\.json: descriptor store made for model="):
        extract_to_store(other, db, transform, folder, device="cpu", progress=False)
    with pytest.raises(StoreMismatchError, match="image_size=null, not \\[60, 80\\]"):
        extract_to_store(model, db, ImageTransform((60, 80), model.normalization), folder, device="cpu",
                         progress=False)
    with pytest.raises(StoreMismatchError, match="images_count"):
        extract_to_store(model, tiny_test.queries, transform, folder, device="cpu", progress=False)
    with pytest.raises(StoreMismatchError, match="dtype=float32, not float16"):
        extract_to_store(model, db, transform, folder, dtype="float16", device="cpu", progress=False)
    with pytest.raises(StoreMismatchError, match="model"):
        DescriptorStore.open(folder, identity=descriptor_identity(other, db, transform))
    assert DescriptorStore.open(folder, identity=descriptor_identity(model, db, transform)).complete


# ---------------------------------------------------------------- evaluation and index from a store


def test_evaluate_from_store_equals_in_ram(model, tiny_test, reference, q_reference, in_ram, tmp_path):
    stored = evaluate(model, tiny_test, k=20, batch_size=4, device="cpu", progress=False, store=tmp_path / "st")
    assert DescriptorStore.open(tmp_path / "st" / "database").complete
    assert DescriptorStore.open(tmp_path / "st" / "queries").count == len(tiny_test.queries)
    np.testing.assert_array_equal(stored.ids, in_ram.ids)
    np.testing.assert_allclose(stored.similarities, in_ram.similarities, atol=1e-6)
    np.testing.assert_array_equal(stored.correct, in_ram.correct)
    assert stored.recall == in_ram.recall
    assert stored.meta["descriptor_store"] == str(tmp_path / "st")
    # spatial NMS from the store too, with the stores passed as descriptors (no model needed)
    db_store = DescriptorStore.open(tmp_path / "st" / "database")
    q_store = DescriptorStore.open(tmp_path / "st" / "queries")
    nms_ram = evaluate(model, tiny_test, k=5, dedupe=True, progress=False, db_descriptors=reference,
                       query_descriptors=q_reference)
    nms_store = evaluate(None, tiny_test, k=5, dedupe=True, progress=False, db_descriptors=db_store,
                         query_descriptors=q_store)
    np.testing.assert_array_equal(nms_store.ids, nms_ram.ids)
    with pytest.raises(ValueError, match="needs a model"):
        evaluate(None, tiny_test, progress=False, db_descriptors=db_store)


def test_cli_evaluate_and_index_with_a_store(model, tiny_test, tiny_city, in_ram, tmp_path, monkeypatch):
    import sfrs_core.training.checkpoint as checkpoint
    from sfrs_core.cli import main

    monkeypatch.setattr(checkpoint, "load_model", lambda path, device="cpu": (model, {}))
    out = tmp_path / "res.npz"
    args = ["evaluate", "--checkpoint", "m.pt", "--data", str(tiny_city), "--device", "cpu", "--quiet",
            "--batch-size", "4", "--store", str(tmp_path / "st"), "--save", str(out)]
    assert main(args) == 0
    res = QueryResults.load(out)
    np.testing.assert_array_equal(res.ids, in_ram.ids)
    assert res.meta["descriptor_store"] == str(tmp_path / "st")
    assert main([*args, "--store-dtype", "float16"]) == 2  # the store holds float32: refused, exit 2
    assert main(["index", "--checkpoint", "m.pt", "--data", str(tiny_city), "--device", "cpu", "--quiet",
                 "--store", str(tmp_path / "st" / "database"), "--kind", "hnsw", "--out", str(tmp_path / "idx")]) == 0
    bundle = IndexBundle.load(tmp_path / "idx")
    assert bundle.meta["kind"] == "hnsw" and bundle.index.ntotal == len(tiny_test.database)
    q = DescriptorStore.open(tmp_path / "st" / "queries").read(0, 5)
    top1 = [m[0].db_index for m in bundle.search(q, k=1)]
    assert top1 == in_ram.ids[:5, 0].tolist()


def test_cli_index_settings_reach_the_index(model, tiny_test, tiny_city, in_ram, tmp_path, monkeypatch, capsys):
    import faiss

    import sfrs_core.training.checkpoint as checkpoint
    from sfrs_core.cli import main

    monkeypatch.setattr(checkpoint, "load_model", lambda path, device="cpu": (model, {}))
    base = ["--checkpoint", "m.pt", "--data", str(tiny_city), "--device", "cpu", "--quiet"]
    assert main(["index", *base, "--kind", "hnsw", "--hnsw-m", "8", "--ef-search", "7", "--hnsw-storage", "sq8",
                 "--out", str(tmp_path / "idx")]) == 0
    bundle = IndexBundle.load(tmp_path / "idx")
    hnsw = faiss.downcast_index(bundle.index)
    assert isinstance(hnsw, faiss.IndexHNSWSQ) and hnsw.hnsw.efSearch == 7
    assert bundle.meta["index_config"]["hnsw_m"] == 8 and bundle.meta["kind"] == "hnsw"
    # a setting of another kind, or --rerank for a bundle: a one-line error, exit 2
    assert main(["index", *base, "--kind", "hnsw", "--nprobe", "4", "--out", str(tmp_path / "x")]) == 2
    assert "--nprobe applies to --kind ivfpq, not hnsw" in capsys.readouterr().err
    assert main(["index", *base, "--kind", "flat", "--rerank", "10", "--out", str(tmp_path / "x")]) == 2
    out = tmp_path / "res.npz"
    assert main(["evaluate", *base, "--batch-size", "4", "--kind", "hnsw", "--ef-search", "64", "--rerank", "20",
                 "--save", str(out)]) == 0
    res = QueryResults.load(out)  # re-ranked exactly from a shortlist of 20 on this tiny database: the exact top-1
    np.testing.assert_array_equal(res.ids[:, 0], in_ram.ids[:, 0])


def test_prefetch_keeps_order_raises_and_stops_early():
    import threading

    assert list(prefetch(iter(range(50)), depth=2)) == list(range(50))

    def failing():
        yield 1
        raise OSError("disk gone")

    got = []
    with pytest.raises(OSError, match="disk gone"):
        for item in prefetch(failing()):
            got.append(item)
    assert got == [1]
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    for item in prefetch(endless()):
        if item == 3:
            break
    assert len(produced) <= 3 + 3  # the producer ran at most depth + 1 items ahead, then stopped
    assert not any(t.name == "store-prefetch" for t in threading.enumerate())
