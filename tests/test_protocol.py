"""OpenIBL's training protocol on the tiny SynthCity: generation 0's epochs, the negative cache
across generations, model selection by validation recall@5, the teacher, PCA samples, k-means
images, ColorJitter and the similarity form of the SARE logits."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sfrs_core.losses import sare_ind_loss
from sfrs_core.retrieval.evaluate import evaluate
from sfrs_core.training import train
from sfrs_core.training.checkpoint import load_checkpoint, load_model
from sfrs_core.training.feature_cache import local_features
from sfrs_core.training.metrics_log import read_metrics
from sfrs_core.training.mining import TupleMiner
from sfrs_core.training.presets import paper_config, tiny_config
from sfrs_core.training.trainer import Trainer


@pytest.fixture(scope="module")
def protocol_run(tiny_city, tmp_path_factory) -> tuple[Path, list]:
    """A 2-generation run with generation 0 one epoch and generation 1 two, recording what the
    miner's negative cache held at every hard-negative choice."""
    visits = []
    original = TupleMiner.hard_negatives

    def recording(self, q, pool):
        visits.append((int(q), self.negative_cache[q].copy()))
        return original(self, q, pool)

    mp = pytest.MonkeyPatch()
    mp.setattr(TupleMiner, "hard_negatives", recording)
    try:
        cfg = tiny_config(str(tiny_city), "protocol").replace(
            runs_dir=str(tmp_path_factory.mktemp("runs")), gen0_epochs=1, epochs=2, select_recall_n=5)
        run = train(cfg, progress=False)
    finally:
        mp.undo()
    return run, visits


def test_paper_preset_equals_openibl():
    cfg = paper_config("data")
    assert (cfg.gen0_epochs, cfg.epochs, cfg.generations) == (1, 5, 4)
    assert cfg.color_jitter == (0.7, 0.7, 0.7, 0.5) and cfg.select_recall_n == 5 and cfg.teacher == "last"
    assert cfg.pca_samples == 10000 and cfg.margin == pytest.approx(0.1**0.5) and cfg.similarity == "dot"
    assert (cfg.mining.pos_num, cfg.mining.pos_pool, cfg.mining.neg_num, cfg.mining.neg_pool) == (10, 20, 10, 1000)
    assert (cfg.kmeans_images * cfg.kmeans_per_image, cfg.cache_size, cfg.lr, cfg.lr_step_epochs) == (50000, 1000, 0.001, 5)


def test_generation_0_trains_gen0_epochs(protocol_run):
    run, _ = protocol_run
    steps = [r for r in read_metrics(run / "metrics.jsonl") if r["event"] == "step"]
    epochs = {g: sorted({r["epoch"] for r in steps if r["generation"] == g}) for g in (0, 1)}
    assert epochs == {0: [0], 1: [0, 1]}
    per_epoch = sum(1 for r in steps if r["generation"] == 0)
    assert sum(1 for r in steps if r["generation"] == 1) == 2 * per_epoch
    assert json.loads((run / "progress.json").read_text())["total_iterations"] == 3 * per_epoch


def test_negative_cache_persists_across_generations(protocol_run):
    """Generation 1's first visit of a query competes with the negatives generation 0 chose."""
    run, visits = protocol_run
    cfg = json.loads((run / "config.json").read_text())
    per_generation_0 = len({q for q, _ in visits})  # one epoch: every trainable query once
    gen0, gen1 = visits[:per_generation_0], visits[per_generation_0:2 * per_generation_0]
    assert all((cached == -1).all() for _, cached in gen0)  # the run starts with an empty cache
    assert len(gen1) == per_generation_0 and all((cached >= 0).all() for _, cached in gen1)
    assert all(len(cached) == cfg["mining"]["neg_num"] for _, cached in gen1)


def test_each_generation_keeps_its_best_validation_recall5_epoch(protocol_run, tiny_city):
    run, _ = protocol_run
    records = read_metrics(run / "metrics.jsonl")
    best_value = -1.0
    for g in (0, 1):
        per_epoch = [r for r in records if r["event"] == "eval" and r["generation"] == g and not r.get("final")]
        assert [r["epoch"] for r in per_epoch] == list(range(len(per_epoch)))  # validation every epoch
        scores = [r["recall@5"] for r in per_epoch]
        chosen = int(np.argmax(scores))  # first maximum: ties keep the earlier epoch
        payload = load_checkpoint(run / f"gen{g}.pt")
        assert payload["selected_epoch"] == chosen
        assert payload["selection"]["value"] == pytest.approx(scores[chosen], abs=1e-6)
        assert all(r["selected_epoch"] == chosen for r in records if r.get("final") and r["generation"] == g)
        # the kept weights really are that epoch's: their validation recall@5 (no PCA) is the logged one
        model, _ = load_model(run / f"gen{g}.pt")
        model.pca = None
        from sfrs_core.data import load_dataset

        res = evaluate(model, load_dataset(str(tiny_city))["val"], k=20, progress=False)
        assert res.recall[5] == pytest.approx(scores[chosen], abs=1e-6)
        last_epoch = len(per_epoch) - 1
        assert (run / f"gen{g}_last.pt").is_file() == (chosen != last_epoch and g == 0)
        if scores[chosen] > best_value:
            best_value, best_gen = scores[chosen], g
    best = json.loads((run / "best.json").read_text())
    assert (best["generation"], best["checkpoint"]) == (best_gen, f"gen{best_gen}.pt")
    assert best["value"] == pytest.approx(best_value, abs=1e-6)


def test_checkpoints_record_the_input_normalisation(protocol_run):
    run, _ = protocol_run
    assert load_checkpoint(run / "gen0.pt")["model_config"]["input_norm"] == "imagenet"  # MobileNetV2, torchvision


@pytest.fixture(scope="module")
def prepared(tiny_city, tmp_path_factory) -> Trainer:
    cfg = tiny_config(str(tiny_city), "prepared").replace(
        runs_dir=str(tmp_path_factory.mktemp("runs")), color_jitter=(0.7, 0.7, 0.7, 0.5), similarity="euclidean")
    trainer = Trainer(cfg, progress=False)
    trainer._open_run_dir()
    trainer._prepare()
    return trainer


def test_pca_and_kmeans_sample_queries_and_database(prepared):
    train_feats = prepared.split_features("train")
    trainable = prepared.miner.trainable
    everything = prepared._training_images(10**6, [0, 1])
    assert everything[0][0] is train_feats.q and everything[1][0] is train_feats.db
    np.testing.assert_array_equal(everything[0][1], trainable)  # queries without a positive are not used
    np.testing.assert_array_equal(everything[1][1], np.arange(len(train_feats.db)))
    (qs, q_idx), (dbs, db_idx) = prepared._training_images(40, [0, 1])
    assert len(q_idx) + len(db_idx) == 40 and len(q_idx) > 0 and len(db_idx) > 0
    assert set(q_idx) <= set(trainable) and len(set(db_idx)) == len(db_idx)
    pca = prepared._pca_descriptors(prepared.model)
    assert pca.shape[0] == len(trainable) + len(train_feats.db)  # pca_samples (10,000) > the tiny set


def test_colorjitter_reaches_the_training_images_seeded(prepared):
    q = prepared.split_features("train").q
    plain = q.get([0, 1])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        a = q.get([0, 1], prepared.jitter)
        torch.manual_seed(3)
        b = q.get([0, 1], prepared.jitter)
    torch.testing.assert_close(a, b)
    assert (a - plain).abs().mean() > 1e-3  # the jitter changed what the trunk sees
    from sfrs_core.training.feature_cache import descriptors

    prepared.miner.refresh(descriptors(prepared.model, prepared.split_features("train").db).numpy(),
                           descriptors(prepared.model, q).numpy(), rerank=False)
    rng = np.random.default_rng(0)
    tuples = [prepared.miner.mine(int(t), rng) for t in prepared.miner.trainable[:2]]
    step = lambda seed: prepared.train_step(prepared.model, None, tuples, 0, seed)["loss"].item()  # noqa: E731
    assert step(7) == step(7) and step(7) != step(None)


def test_euclidean_similarity_reaches_the_loss(prepared):
    """similarity="euclidean": the step's loss is SARE-ind on -||q - x||^2 of its own descriptors."""
    from sfrs_core.training.feature_cache import descriptors

    model, train_feats = prepared.model, prepared.split_features("train")
    prepared.miner.refresh(descriptors(model, train_feats.db).numpy(), descriptors(model, train_feats.q).numpy(), rerank=False)
    rng = np.random.default_rng(1)
    tuples = [prepared.miner.mine(int(t), rng) for t in prepared.miner.trainable[:3]]
    loss = prepared.train_step(model, None, tuples, 0)["loss"]
    with torch.no_grad():
        q = model.aggregate(local_features(model, train_feats.q.get([t.query for t in tuples])), use_pca=False)
        p = model.aggregate(local_features(model, train_feats.db.get([t.easiest for t in tuples])), use_pca=False)
        n = model.aggregate(local_features(model, train_feats.db.get(np.concatenate([t.negatives for t in tuples]))),
                            use_pca=False).view(3, -1, p.shape[1])
    assert loss.item() == pytest.approx(sare_ind_loss(q, p, n, similarity="euclidean").item(), rel=1e-5)
    assert loss.item() != pytest.approx(sare_ind_loss(q, p, n, similarity="dot").item(), rel=1e-3)


def test_train_flags_reach_the_config(tmp_path):
    from sfrs_core.training.options import config_from_argv

    cfg = config_from_argv(["--data", "d", "--trunk-weights", "vd16.pth", "--gen0-epochs", "2", "--similarity",
                            "euclidean", "--color-jitter", "none", "--select-recall-n", "0", "--teacher", "selected",
                            "--pca-samples", "500", "--pos-pool", "12"])
    assert cfg.model.trunk_weights == "vd16.pth" and cfg.gen0_epochs == 2 and cfg.similarity == "euclidean"
    assert cfg.color_jitter is None and cfg.select_recall_n is None and cfg.teacher == "selected"
    assert cfg.pca_samples == 500 and cfg.mining.pos_pool == 12
    assert config_from_argv(["--data", "d", "--color-jitter", "0.1", "0.2", "0.3", "0.4"]).color_jitter == (0.1, 0.2, 0.3, 0.4)
    with pytest.raises(ValueError, match="similarity"):
        config_from_argv(["--data", "d", "--similarity", "cosine"])
    # a config written before these settings existed reads as what it trained with
    from sfrs_core.training.config import TrainConfig

    old = {k: v for k, v in paper_config("d").to_dict().items()
           if k not in ("gen0_epochs", "margin", "color_jitter", "select_recall_n", "teacher", "similarity")}
    legacy = TrainConfig.from_dict(old)
    assert (legacy.gen0_epochs, legacy.margin, legacy.color_jitter, legacy.select_recall_n) == (None, 0.1, None, None)
