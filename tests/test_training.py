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
    names = {"config.json", "metrics.jsonl", "progress.json", "init.pt", "gen0.pt", "gen1.pt", "latest.pt",
             "best.json", "environment.json"}
    assert names <= {p.name for p in trained_run.iterdir()}
    from importlib.metadata import version

    session = json.loads((trained_run / "environment.json").read_text())["sessions"][0]
    assert session["packages"]["torch"] == version("torch") and session["packages"]["numpy"] == version("numpy")
    assert session["torch_threads"] == torch.get_num_threads() and session["device"] == "cpu"
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


def test_sare_baseline_is_generation_0_and_exports_compactly(trained_run, tiny_city, tmp_path):
    from sfrs_core.training.export import checkpoint_state_equal, export_run

    cfg = tiny_config(str(tiny_city), "sare").replace(runs_dir=str(tmp_path), generations=1)
    sare = train(cfg, progress=False)
    assert checkpoint_state_equal(sare / "gen0.pt", trained_run / "gen0.pt")

    out = export_run(trained_run, tmp_path / "export" / "sare", generations=1)
    assert {p.name for p in out.iterdir()} == {"config.json", "metrics.jsonl", "gen0.pt", "results", "soft_labels",
                                               "environment.json", "trunk_weights.json", "best.json", "manifest.json"}
    assert json.loads((out / "config.json").read_text())["generations"] == 1
    assert {r["generation"] for r in read_metrics(out / "metrics.jsonl")} == {0}
    assert (out / "gen0.pt").stat().st_size < 0.6 * (trained_run / "gen0.pt").stat().st_size  # fp16
    half, _ = load_model(out / "gen0.pt")
    full, _ = load_model(trained_run / "gen0.pt")
    x = torch.rand(2, 3, 120, 160)
    with torch.no_grad():
        cos = (half(x) * full(x)).sum(1)
    assert (cos > 0.999).all()  # fp16 storage barely moves the descriptors


def test_runs_are_discovered_and_read(trained_run):
    from sfrs_core.runs import discover_runs, open_run

    runs = discover_runs((str(trained_run.parent), "/nonexistent"))
    assert [r.name for r in runs] == ["tiny"]
    run = open_run(trained_run)
    assert run.generations == [0, 1] and run.last_generation == 1 and run.kind == "SFRS"
    assert run.recall("test") == pytest.approx(run.results("test").recall, abs=1e-6)
    assert [s.generation for s in run.soft_labels()] == [0, 1]
    assert run.model(0) is run.model(0)  # loaded once
    assert run.temperature(1) == 0.07 and run.temperature(9) == 0.05
    with pytest.raises(FileNotFoundError):
        open_run("no-such-run", dirs=(str(trained_run.parent),))


def test_export_figure_set_and_explain_cli(trained_run, tmp_path):
    from sfrs_core.cli import main
    from sfrs_core.explain.figure_set import export_figure_set
    from sfrs_core.training.export import export_run

    sare = export_run(trained_run, tmp_path / "runs" / "sare", generations=1)
    written = export_figure_set([str(sare), str(trained_run)], tmp_path / "figs", attention_queries=4, progress=False)
    names = {p.name for p in written}
    for stem in ("recall_curves", "retrieval_grid", "heatmaps_decomp", "soft_label_evolution", "attention_decomp"):
        assert {f"{stem}.pdf", f"{stem}.svg", f"{stem}.png"} <= names, stem
    summary = json.loads((tmp_path / "figs" / "summary.json").read_text())
    for table in summary["attention"].values():
        assert sum(table["shares"].values()) == pytest.approx(1.0) and table["images"] == 4
    out = tmp_path / "explain"
    assert main(["explain", "--run", str(trained_run), "--query", "0", "--method", "gradcam", "--out", str(out),
                 "--formats", "png"]) == 0
    assert (tmp_path / "explain.png").stat().st_size > 1000
    assert main(["explain", "--run", str(trained_run), "--query", "9999", "--out", str(out)]) == 2


def test_overwrite_replaces_the_run_and_writes_its_config(tiny_city, tmp_path):
    cfg = tiny_config(str(tiny_city), "again").replace(runs_dir=str(tmp_path), generations=1)
    (tmp_path / "again").mkdir()
    (tmp_path / "again" / "config.json").write_text("{}")
    (tmp_path / "again" / "stale.txt").write_text("old")
    run = train(cfg, overwrite=True, progress=False)
    assert TrainConfig.from_dict(json.loads((run / "config.json").read_text())) == cfg
    assert not (run / "stale.txt").exists()


def test_stopping_at_a_generation_boundary_resumes_to_the_same_result(trained_run, tiny_city, tmp_path):
    from sfrs_core.training import TrainingStopped, resume_run

    per_generation = len(_iterations(trained_run)) // 2
    cfg = tiny_config(str(tiny_city), "tiny").replace(runs_dir=str(tmp_path))
    calls = {"n": 0}

    def stop_at_first_step_of_generation_1() -> bool:
        calls["n"] += 1
        return calls["n"] > per_generation  # checked before every step

    with pytest.raises(TrainingStopped):
        train(cfg, progress=False, should_stop=stop_at_first_step_of_generation_1)
    assert (tmp_path / "tiny" / "gen0.pt").exists() and not (tmp_path / "tiny" / "gen1.pt").exists()
    assert json.loads((tmp_path / "tiny" / "progress.json").read_text())["status"] == "stopped"
    run = resume_run(tmp_path / "tiny", progress=False)
    assert _iterations(run) == _iterations(trained_run)
    ref = load_checkpoint(trained_run / "gen1.pt")["state_dict"]
    for name, value in load_checkpoint(run / "gen1.pt")["state_dict"].items():
        torch.testing.assert_close(value, ref[name], atol=1e-5, rtol=1e-4, msg=name)


def test_demo_command_trains_and_exports_every_seed(tiny_city, tmp_path, monkeypatch):
    from sfrs_core.training import demo

    monkeypatch.setattr(demo, "demo_config", lambda data, run: tiny_config(data, run).replace(generations=1))
    paths = demo.build_demo_models(tiny_city, tmp_path / "assets", tmp_path / "runs", progress=False, seeds=(0, 1))
    names = sorted(p.name for p in (tmp_path / "assets").iterdir())
    assert names == ["sare", "sare-seed1", "sfrs", "sfrs-seed1", "timings.json"]
    configs = {n: json.loads((paths[n] / "config.json").read_text()) for n in ("sare", "sare-seed1")}
    assert configs["sare"]["seed"] == 0 and configs["sare-seed1"]["seed"] == 1
    assert set(json.loads((tmp_path / "assets" / "timings.json").read_text())) == {"0", "1"}
    assert not torch.equal(load_checkpoint(paths["sare"] / "gen0.pt")["state_dict"]["net_vlad.centroids"],
                           load_checkpoint(paths["sare-seed1"] / "gen0.pt")["state_dict"]["net_vlad.centroids"])
    # a second call finds the finished runs and only re-exports
    again = demo.build_demo_models(tiny_city, tmp_path / "assets", tmp_path / "runs", progress=False, seeds=(0, 1))
    assert again == paths


def test_a_stop_wrapped_by_a_library_call_still_counts_as_a_stop(tiny_city, tmp_path, monkeypatch):
    """A stop signal inside e.g. torch's load_state_dict comes out as a RuntimeError: the trainer
    still records the run as stopped (resumable), not failed, when a stop was requested."""
    from sfrs_core.training.trainer import Trainer, TrainingStopped

    def prepare_interrupted(self):
        raise RuntimeError("Error(s) in loading state_dict: ('stopped by SIGTERM',)")

    monkeypatch.setattr(Trainer, "_prepare", prepare_interrupted)
    cfg = tiny_config(str(tiny_city), "wrapped").replace(runs_dir=str(tmp_path))
    with pytest.raises(TrainingStopped, match="stopped during RuntimeError"):
        train(cfg, progress=False, should_stop=lambda: True)
    assert json.loads((tmp_path / "wrapped" / "progress.json").read_text())["status"] == "stopped"
    with pytest.raises(RuntimeError):  # no stop requested: a real failure
        train(cfg, overwrite=True, progress=False)
    assert json.loads((tmp_path / "wrapped" / "progress.json").read_text())["status"] == "failed"
