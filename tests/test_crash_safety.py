"""Crash safety of training: SIGKILL at random moments (and in the window between a generation's
final evaluation and its next ``latest.pt``), resumed each time; checkpoints checked against the
run's manifest, with a fall-back to the previous ``latest.pt``."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from sfrs_core.errors import CheckpointError
from sfrs_core.training.checkpoint import (MANIFEST, load_checkpoint, load_checkpoint_or_previous, previous_path,
                                           save_checkpoint)
from sfrs_core.training.metrics_log import read_metrics

ROOT = Path(__file__).resolve().parents[1]


def _train_until_killed(cfg_dict: dict, resume: bool, kill_at_records: int | None, kill_in_window: bool,
                        threads: int) -> None:
    """Child process: train (or resume) and SIGKILL itself when the metrics log reaches
    ``kill_at_records`` records, or just before the generation-boundary ``latest.pt``. ``threads``
    is the test process's torch thread count: the same reductions give the reference's numbers."""
    torch.set_num_threads(threads)
    from sfrs_core.training import metrics_log, trainer
    from sfrs_core.training.config import TrainConfig

    if kill_at_records is not None:
        write = metrics_log.MetricsLog.write

        def write_then_die(self, record):
            write(self, record)
            if self.records >= kill_at_records:
                os.kill(os.getpid(), signal.SIGKILL)

        metrics_log.MetricsLog.write = write_then_die
    if kill_in_window:
        save = trainer.save_checkpoint

        def die_before_boundary_latest(path, payload=None, **kw):
            if Path(path).name == "latest.pt" and "student" not in payload:  # after the final evaluation
                os.kill(os.getpid(), signal.SIGKILL)
            return save(path, payload, **kw)

        trainer.save_checkpoint = die_before_boundary_latest
    cfg = TrainConfig.from_dict(cfg_dict)
    if resume:
        trainer.resume_run(Path(cfg.runs_dir) / cfg.run, progress=False)
    else:
        trainer.train(cfg, progress=False)


def _run_child(cfg_dict: dict, resume: bool, kill_at_records: int | None = None, kill_in_window: bool = False) -> int:
    """Run :func:`_train_until_killed` in a fresh interpreter (not multiprocessing: a spawned child
    would re-run whatever script an earlier test left as ``__main__``); its exit code, -9 if killed."""
    args = json.dumps([cfg_dict, resume, kill_at_records, kill_in_window, torch.get_num_threads()])
    code = "import json, sys; from tests.test_crash_safety import _train_until_killed; _train_until_killed(*json.loads(sys.argv[1]))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    done = subprocess.run([sys.executable, "-c", code, args], cwd=ROOT, env=env, timeout=600,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert done.returncode in (0, -signal.SIGKILL), done.stderr[-2000:]
    return done.returncode


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(trained_run_reference, tiny_city, tmp_path):
    reference, cfg = trained_run_reference
    cfg = {**cfg, "runs_dir": str(tmp_path), "run": "killed"}
    total = len(read_metrics(reference / "metrics.jsonl"))
    rng = np.random.default_rng(2026)
    targets = sorted(rng.choice(np.arange(3, total - 2), size=5, replace=False).tolist())
    kills = 0
    assert _run_child(cfg, resume=False, kill_in_window=True) == -signal.SIGKILL  # gen 0 final eval, no latest yet
    kills += 1
    boundary = json.loads((tmp_path / "killed" / "progress.json").read_text())
    assert (tmp_path / "killed" / "gen0.pt").is_file() and boundary["generation"] == 0
    for target in targets:
        code = _run_child(cfg, resume=True, kill_at_records=target)
        kills += code == -signal.SIGKILL
    assert kills >= 5
    assert _run_child(cfg, resume=True) == 0
    run = tmp_path / "killed"
    records = read_metrics(run / "metrics.jsonl")
    steps = [r["iteration"] for r in records if r["event"] == "step"]
    assert steps == sorted(set(steps)) and steps == list(range(1, len(steps) + 1))
    evals = Counter((r["generation"], r["epoch"], r["split"], bool(r.get("final"))) for r in records if r["event"] == "eval")
    assert evals and max(evals.values()) == 1, [k for k, n in evals.items() if n > 1]
    ref_records = read_metrics(reference / "metrics.jsonl")
    assert len(records) == len(ref_records)
    assert set(evals) == {(r["generation"], r["epoch"], r["split"], bool(r.get("final")))
                          for r in ref_records if r["event"] == "eval"}
    final = load_checkpoint(run / "gen1.pt")["state_dict"]  # valid, and the uninterrupted run's weights
    for name, value in load_checkpoint(reference / "gen1.pt")["state_dict"].items():
        torch.testing.assert_close(final[name], value, atol=1e-5, rtol=1e-4, msg=name)


@pytest.fixture(scope="module")
def trained_run_reference(tiny_city, tmp_path_factory):
    from sfrs_core.training import train
    from sfrs_core.training.presets import tiny_config

    cfg = tiny_config(str(tiny_city), "reference").replace(runs_dir=str(tmp_path_factory.mktemp("runs")))
    return train(cfg, progress=False), cfg.to_dict()


def test_a_corrupt_latest_falls_back_to_the_previous_one_with_a_warning(tmp_path, caplog):
    latest = tmp_path / "latest.pt"
    save_checkpoint(latest, {"step": torch.tensor(1)}, keep_previous=True)
    save_checkpoint(latest, {"step": torch.tensor(2)}, keep_previous=True)
    assert load_checkpoint(previous_path(latest))["step"] == 1 and load_checkpoint(latest)["step"] == 2
    manifest = json.loads((tmp_path / MANIFEST).read_text())["files"]
    assert manifest["latest.pt"]["bytes"] == latest.stat().st_size and "latest.prev.pt" in manifest
    data = latest.read_bytes()
    latest.write_bytes(data[: len(data) // 2])  # truncated after it was written
    with pytest.raises(CheckpointError, match=r"latest.pt: \d+ bytes, but \d+ were written"):
        load_checkpoint(latest)
    with caplog.at_level("WARNING"):
        assert load_checkpoint_or_previous(latest)["step"] == 1
    assert "latest.pt" in caplog.text and "latest.prev.pt" in caplog.text
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 0xFF  # same size, other bytes
    latest.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="contents differ from the checksum"):
        load_checkpoint(latest)
    previous_path(latest).unlink()
    with pytest.raises(CheckpointError):
        load_checkpoint_or_previous(latest)


def test_checkpoint_errors_are_one_line_and_never_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": Evil()}, evil)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    for path in (evil, empty, tmp_path / "missing.pt"):
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(path)
        message = str(err.value)
        assert "\n" not in message and str(path) in message and "weights_only=False" not in message
        assert len(message) < 300
    assert not (tmp_path / "pwned").exists()
