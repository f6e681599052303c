"""A 2-generation SFRS run on the tiny SynthCity: every file it writes, and kill + resume."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sfrs_core.retrieval.results import QueryResults
from sfrs_core.training import RunExistsError, TrainConfig, train
from sfrs_core.training.checkpoint import load_checkpoint, load_model
from sfrs_core.training.metrics_log import read_metrics
from sfrs_core.training.presets import tiny_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained_run(tiny_city, tmp_path_factory) -> Path:
    cfg = tiny_config(str(tiny_city), "tiny").replace(runs_dir=str(tmp_path_factory.mktemp("runs")))
    return train(cfg, progress=False)


def _iterations(run: Path) -> list[int]:
    return [r["iteration"] for r in read_metrics(run / "metrics.jsonl") if r["event"] == "step"]


def test_run_writes_every_file(trained_run):
    names = {"config.json", "metrics.jsonl", "progress.json", "init.pt", "gen0.pt", "gen1.pt", "latest.pt"}
    assert names <= {p.name for p in trained_run.iterdir()}
    cfg = TrainConfig.from_dict(json.loads((trained_run / "config.json").read_text()))
    assert cfg.generations == 2 and cfg.model.trunk == "mobilenet_v2"
    assert json.loads((trained_run / "progress.json").read_text())["status"] == "finished"
    for g in (0, 1):
        model, payload = load_model(trained_run / f"gen{g}.pt")
        assert payload["generation"] == g and model.pca.is_fitted
        for split in ("val", "test"):
            res = QueryResults.load(trained_run / "results" / f"{split}_gen{g}.npz")
            assert res.recall[1] == pytest.approx(payload["recall"][split]["1"])
            assert res.recall[1] <= res.recall[5] <= res.recall[10]
        snap = np.load(trained_run / "soft_labels" / f"gen{g}.npz")
        assert snap["soft_labels"].shape == (4, 4, 9)
        np.testing.assert_allclose(snap["soft_labels"].reshape(4, -1).sum(1), 1.0, atol=1e-5)
        assert float(snap["temperature"]) == cfg.temperature(g + 1)


def test_metrics_log_has_losses_lr_and_recalls(trained_run):
    records = read_metrics(trained_run / "metrics.jsonl")
    steps = [r for r in records if r["event"] == "step"]
    per_gen = len(steps) // 2
    assert _iterations(trained_run) == list(range(1, len(steps) + 1))
    for r in steps:
        assert {"iteration", "generation", "epoch", "loss_hard", "loss_soft", "lr", "seconds"} <= set(r)
    assert all(r["loss_soft"] == 0.0 for r in steps[:per_gen])  # generation 0: hard loss only
    assert all(r["loss_soft"] > 0.0 for r in steps[per_gen:])
    finals = [(r["generation"], r["split"]) for r in records if r.get("final")]
    assert finals == [(0, "val"), (0, "test"), (1, "val"), (1, "test")]


def test_generations_restart_from_the_same_initial_weights(trained_run):
    init = load_checkpoint(trained_run / "init.pt")["state_dict"]
    g0, g1 = (load_checkpoint(trained_run / f"gen{g}.pt")["state_dict"] for g in (0, 1))
    frozen = "trunk.body.0.0.weight"  # a frozen trunk layer never moves
    assert torch.equal(init[frozen], g0[frozen]) and torch.equal(init[frozen], g1[frozen])
    trained = "net_vlad.centroids"
    assert not torch.equal(init[trained], g0[trained]) and not torch.equal(g0[trained], g1[trained])


def test_an_existing_run_is_not_overwritten(trained_run):
    cfg = TrainConfig.from_dict(json.loads((trained_run / "config.json").read_text()))
    with pytest.raises(RunExistsError):
        train(cfg.replace(runs_dir=str(trained_run.parent), run=trained_run.name), progress=False)


def test_killing_mid_generation_and_resuming_gives_the_uninterrupted_result(trained_run, tiny_city, tmp_path):
    steps_total = len(_iterations(trained_run))
    kill_at = steps_total // 2 + steps_total // 4  # well inside generation 1
    cmd = [sys.executable, "-m", "sfrs_core", "train", "--preset", "tiny", "--data", str(tiny_city),
           "--run", "tiny", "--runs-dir", str(tmp_path), "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics = tmp_path / "tiny" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if metrics.is_file() and len(_iterations(tmp_path / "tiny")) >= kill_at:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "tiny" / "gen1.pt").exists()

    done = subprocess.run(cmd + ["--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    run = tmp_path / "tiny"
    assert _iterations(run) == list(range(1, steps_total + 1))
    model, _ = load_model(run / "gen1.pt")
    reference = load_checkpoint(trained_run / "gen1.pt")["state_dict"]
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, reference[name], atol=1e-5, rtol=1e-4, msg=name)
