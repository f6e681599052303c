"""Multi-process training: ``torchrun`` (gloo, CPU) on the tiny SynthCity, then a one-process resume.

The ranks record what they did through the trainer's test hook (``SFRS_TRAIN_DEBUG_DIR``: the
queries of each of their steps, a digest of their weights at every ``latest.pt``); a second hook
(``SFRS_TRAIN_STOP_AT_ITERATION``) stops the two-process run at a chunk boundary, like a SIGTERM
would, so that one process resumes it mid-generation.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from sfrs_core.data import load_dataset
from sfrs_core.training.checkpoint import load_checkpoint
from sfrs_core.training.distributed import (DistContext, batches_per_chunk, state_digest, strided_batches)
from sfrs_core.training.metrics_log import read_metrics

ROOT = Path(__file__).resolve().parents[1]


def _env(debug_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT", "SFRS_TRAIN_STOP_AT_ITERATION")}
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**env, "PYTHONPATH": pythonpath, "OMP_NUM_THREADS": "1", "SFRS_TRAIN_DEBUG_DIR": str(debug_dir), **extra}


def _torchrun(args: list[str], env: dict[str, str], nproc: int = 2) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --standalone --nproc_per_node=N -m sfrs_core train ARGS``."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "sfrs_core", "train", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, timeout=600, capture_output=True, text=True)


def _train(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """A plain one-process ``python -m sfrs_core train ARGS``."""
    return subprocess.run([sys.executable, "-m", "sfrs_core", "train", *args], cwd=ROOT, env=env, timeout=600,
                          capture_output=True, text=True)


def _debug(folder: Path, rank: int) -> list[dict]:
    return [json.loads(line) for line in (folder / f"rank{rank}.jsonl").read_text().splitlines()]


def _chunk_order(city: Path, seed: int, generation: int, epoch: int) -> np.ndarray:
    """The epoch's query order, as docs/design.md §1 defines it: the trainable queries (a positive within
    10 m) permuted by a generator seeded with (seed, generation, epoch)."""
    positives = load_dataset(city)["train"].positives(10.0)
    trainable = np.array([i for i, p in enumerate(positives) if len(p)], dtype=np.int64)
    return np.random.default_rng([seed, generation, epoch]).permutation(trainable)


def test_strided_batches_split_a_chunk_evenly_over_the_ranks():
    chunk = np.arange(100, 110)  # 10 queries, 3 ranks, 2 tuples per batch
    per_rank = [strided_batches(chunk, 2, DistContext(r, 3)) for r in range(3)]
    assert [[len(b) for b in batches] for batches in per_rank] == [[2, 2]] * 3  # every rank in every step
    assert batches_per_chunk(10, 2, 3) == 2 and batches_per_chunk(10, 2, 1) == 5 and batches_per_chunk(20, 4, 2) == 3
    seen = Counter(int(q) for batches in per_rank for b in batches for q in b)
    assert set(seen) == set(chunk.tolist())
    assert sorted(q for q, n in seen.items() if n > 1) == [100, 101]  # the two padding repeats, on other ranks
    # step s of the ranks together covers the single process's queries s*W .. s*W+W*batch-1
    step0 = sorted(int(q) for batches in per_rank for q in batches[0])
    assert step0 == list(range(100, 106))
    alone = strided_batches(chunk, 4, DistContext())
    assert [b.tolist() for b in alone] == [[100, 101, 102, 103], [104, 105, 106, 107], [108, 109]]
    assert DistContext(1, 3).shard(10) == range(3, 6) and DistContext(2, 3).shard(10) == range(6, 10)


def test_two_processes_mine_different_tuples_write_once_and_resume_on_one(tiny_city, tmp_path):
    runs, dbg2, dbg1 = tmp_path / "runs", tmp_path / "debug2", tmp_path / "debug1"
    run = runs / "ddp"
    args = ["--data", str(tiny_city), "--preset", "tiny", "--generations", "1", "--pca-dim", "0",
            "--run-name", "ddp", "--runs-dir", str(runs), "--quiet"]
    # two processes, stopped when the first chunk's 3 steps are done (20 queries, 10 per rank, 4 per batch)
    done = _torchrun(args, _env(dbg2, SFRS_TRAIN_STOP_AT_ITERATION="3"))
    assert done.returncode != 0 and "stopped at iteration 3" in done.stderr, done.stderr[-3000:]
    assert json.loads((run / "progress.json").read_text())["status"] == "stopped"
    order = _chunk_order(tiny_city, seed=0, generation=0, epoch=0)
    first, second = order[:20], order[20:]  # cache_size 20: two chunks

    ranks = [_debug(dbg2, r) for r in (0, 1)]
    steps = [[r for r in records if r["event"] == "step"] for records in ranks]
    assert [[s["iteration"] for s in st] for st in steps] == [[1, 2, 3], [1, 2, 3]]
    assert all(r["world_size"] == 2 for records in ranks for r in records)
    mined = [[q for s in st for q in s["queries"]] for st in steps]
    assert not set(mined[0]) & set(mined[1])  # the ranks trained on different queries ...
    assert sorted(mined[0] + mined[1]) == sorted(first.tolist())  # ... together the whole first chunk, once
    assert mined[0] == first[0::2].tolist() and mined[1] == first[1::2].tolist()

    # one writer: each step once in the log; the checkpoint is the weights both ranks hold
    records = read_metrics(run / "metrics.jsonl")
    assert [r["iteration"] for r in records if r["event"] == "step"] == [1, 2, 3]
    latest = load_checkpoint(run / "latest.pt")
    assert (latest["generation"], latest["epoch"], latest["chunk"], latest["iteration"]) == (0, 0, 1, 3)
    digests = [[r["digest"] for r in records if r["event"] == "latest"] for records in ranks]
    assert digests[0] == digests[1] == [state_digest(latest["student"])]
    # the negative cache holds both ranks' rows (exchanged at the chunk's end), nothing else
    cache = latest["negative_cache"].numpy()
    assert (cache[first] >= 0).all() and (cache[np.setdiff1d(np.arange(len(cache)), first)] == -1).all()
    assert not any(p.name.startswith("rank") for p in run.iterdir())

    # one process resumes the two-process run at the second chunk and finishes it
    done = _train(["--run", "ddp", "--runs-dir", str(runs), "--resume", "--quiet"], _env(dbg1))
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = [r for r in _debug(dbg1, 0) if r["event"] == "step"]
    assert [r["iteration"] for r in resumed] == [4, 5, 6, 7, 8] and {r["world_size"] for r in resumed} == {1}
    assert [q for r in resumed for q in r["queries"]] == second.tolist()
    records = read_metrics(run / "metrics.jsonl")
    assert [r["iteration"] for r in records if r["event"] == "step"] == list(range(1, 9))
    evals = Counter((r["split"], bool(r.get("final"))) for r in records if r["event"] == "eval")
    assert evals == {("val", False): 1, ("val", True): 1, ("test", True): 1}
    assert json.loads((run / "progress.json").read_text())["status"] == "finished"
    final = [r["digest"] for r in _debug(dbg1, 0) if r["event"] == "generation"]
    assert final == [state_digest(load_checkpoint(run / "gen0.pt")["state_dict"])]
    assert json.loads((run / "config.json").read_text())["generations"] == 1  # nothing rank-specific in it


@pytest.mark.slow
def test_two_process_sfrs_generations_then_one_process_extends_the_run(tiny_city, tmp_path):
    """The tiny preset's 2 generations (a teacher, the soft loss, PCA) on 2 processes: every
    generation's weights are equal on both ranks and are what gen{g}.pt holds; then the run is
    extended to 3 generations and one process trains the third from the second's teacher."""
    runs, dbg2, dbg1 = tmp_path / "runs", tmp_path / "debug2", tmp_path / "debug1"
    run = runs / "ddp"
    done = _torchrun(["--data", str(tiny_city), "--preset", "tiny", "--run-name", "ddp", "--runs-dir", str(runs),
                      "--quiet"], _env(dbg2))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("gen split") == 1  # the summary is printed once, by rank 0
    gens = [[r["digest"] for r in _debug(dbg2, rank) if r["event"] == "generation"] for rank in (0, 1)]
    assert gens[0] == gens[1] == [state_digest(load_checkpoint(run / f"gen{g}.pt")["state_dict"]) for g in (0, 1)]
    steps = [[tuple(s["queries"]) for s in _debug(dbg2, rank) if s["event"] == "step"] for rank in (0, 1)]
    assert len(steps[0]) == len(steps[1]) == 12 and not set(steps[0]) & set(steps[1])
    records = read_metrics(run / "metrics.jsonl")
    assert [r["iteration"] for r in records if r["event"] == "step"] == list(range(1, 13))

    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**cfg, "generations": 3}))
    done = _train(["--run", "ddp", "--runs-dir", str(runs), "--resume", "--quiet"], _env(dbg1))
    assert done.returncode == 0, done.stderr[-3000:]
    records = read_metrics(run / "metrics.jsonl")
    steps = [r for r in records if r["event"] == "step"]
    assert [r["iteration"] for r in steps] == list(range(1, 23))  # 12 on two processes, then 10 on one
    assert {r["generation"] for r in steps[12:]} == {2} and all(r["loss_soft"] > 0 for r in steps[12:])
    final = [r["digest"] for r in _debug(dbg1, 0) if r["event"] == "generation"]
    assert final == [state_digest(load_checkpoint(run / "gen2.pt")["state_dict"])]
