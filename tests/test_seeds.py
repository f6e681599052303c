"""Runs that differ only in their seed: grouping, mean ± std per condition (by hand), the CLI
table and the Overview page."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sfrs_core.data.vpr_folder import read_vpr_folder
from sfrs_core.retrieval.results import QueryResults
from sfrs_core.runs import Run, open_run
from sfrs_core.seeds import condition_recall, experiment_key, seed_groups, seed_summary, summary_rows
from tests.apptest import run_page


def _fake_run(root: Path, name: str, seed: int, correct: np.ndarray, generations: int = 1, lr: float = 0.001) -> Run:
    """A run folder with a config and per-query results whose top-1 correctness is ``correct``."""
    path = root / name
    (path / "results").mkdir(parents=True)
    cfg = {"data": "somewhere", "run": name, "runs_dir": str(root), "seed": seed, "loss": "sare_ind",
           "generations": generations, "lr": lr}
    (path / "config.json").write_text(json.dumps(cfg))
    q = len(correct)
    hits = np.zeros((q, 10), dtype=bool)
    hits[:, 0] = correct
    hits[:, 3] = True  # everything right at N = 4..
    for g in range(generations):
        (path / f"gen{g}.pt").write_bytes(b"")
        QueryResults(np.arange(q), np.zeros((q, 10)), np.zeros((q, 10)), np.zeros((q, 10)), hits,
                     {1: float(correct.mean())}, split="test").save(path / "results" / f"test_gen{g}.npz")
    return Run(path)


def test_grouping_ignores_seed_name_and_folder_only(tmp_path):
    a = _fake_run(tmp_path / "x", "sfrs", 0, np.ones(4, bool))
    b = _fake_run(tmp_path / "y", "sfrs-seed1", 1, np.ones(4, bool))
    c = _fake_run(tmp_path / "x", "other-lr", 2, np.ones(4, bool), lr=0.01)
    d = _fake_run(tmp_path / "x", "sfrs-again", 0, np.ones(4, bool))  # a seed twice: the first one counts
    assert experiment_key(a) == experiment_key(b) != experiment_key(c)
    groups = seed_groups([a, b, c, d])
    assert [[r.name for r in g.runs] for g in groups] == [["sfrs", "sfrs-seed1"], ["other-lr"]]
    assert groups[0].seeds == [0, 1]


def test_mean_and_std_per_condition_by_hand(tmp_path):
    conditions = ["day", "day+blur", "night", "night+occluder", "dusk"]
    # top-1 right: seed 0 on queries 0, 2; seed 1 on 0, 1, 2, 3; seed 2 on 0, 1, 4
    runs = [_fake_run(tmp_path, f"r{s}", s, np.array(c, bool)) for s, c in
            enumerate([[1, 0, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 0, 0, 1]])]
    group = seed_groups(runs)[0]
    stats = {(s.condition, s.n): s for s in seed_summary(group, "test", conditions)}
    all1 = stats[("all", 1)]
    assert all1.values == pytest.approx((0.4, 0.8, 0.6))
    assert all1.mean == pytest.approx(0.6) and all1.std == pytest.approx(0.2)  # sample std of 40, 80, 60 %
    assert stats[("day", 1)].values == pytest.approx((0.5, 1.0, 1.0))
    assert stats[("night", 1)].values == pytest.approx((0.5, 1.0, 0.0))
    assert stats[("dusk", 1)].values == pytest.approx((0.0, 0.0, 1.0))
    assert stats[("all", 5)].values == (1.0, 1.0, 1.0) and stats[("all", 5)].std == 0.0
    assert list(dict.fromkeys(c for c, _ in stats)) == ["all", "day", "dusk", "night"]
    row = summary_rows(group, list(stats.values()))[0]
    assert row["R@1"] == "60.0 ± 20.0" and row["R@1 night"] == "50.0 ± 50.0" and row["seeds"] == 3
    # no conditions known (e.g. Pittsburgh): only "all"
    assert set(condition_recall(runs[0].results("test", 0), None)) == {"all"}


@pytest.fixture
def seed_env(tiny_runs, tmp_path, monkeypatch) -> Path:
    """The tiny SARE/SFRS pair plus a second seed of the SFRS run whose test results differ."""
    base = tmp_path / "runs"
    shutil.copytree(tiny_runs, base, ignore=shutil.ignore_patterns("cache"))
    twin = base / "tiny-sfrs-seed1"
    shutil.copytree(base / "tiny-sfrs", twin)
    cfg = json.loads((twin / "config.json").read_text())
    (twin / "config.json").write_text(json.dumps({**cfg, "seed": 1, "run": twin.name}))
    for res_file in (twin / "results").glob("test_gen*.npz"):
        res = QueryResults.load(res_file)
        res.correct[: len(res.correct) // 2, 0] = ~res.correct[: len(res.correct) // 2, 0]
        res.save(res_file)
    monkeypatch.setenv("SFRS_STUDIO_RUN_DIRS", str(base))
    return base


def test_overview_shows_mean_and_std_over_seeds(seed_env):
    at = run_page("viz_app/app_pages/overview.py")
    tables = [d.value for d in at.dataframe]
    assert len(tables) == 3 and set(tables[0]["seed"]) == {0, 1}
    paired = tables[2]
    assert list(paired["generation"]) == ["1 − 0 (SARE)"] and paired["seeds"].iloc[0] == 2
    seeds = tables[1]
    last = seeds[seeds["generation"] == 1].iloc[0]
    r1 = [QueryResults.load(seed_env / name / "results" / "test_gen1.npz").correct[:, 0].mean()
          for name in ("tiny-sfrs", "tiny-sfrs-seed1")]
    assert last["R@1"] == f"{100 * np.mean(r1):.1f} ± {100 * np.std(r1, ddof=1):.1f}"
    assert last["seeds"] == 2 and "R@1 night" in seeds.columns
    assert len(at.get("image")) == 2  # recall curves, recall@1 by condition with error bars
    assert [b.label for b in at.get("download_button")] == ["PNG", "SVG", "PDF"] * 2


def test_seeds_command_prints_the_table(seed_env, capsys):
    from sfrs_core.cli import main

    assert main(["seeds", "--runs-dir", str(seed_env), "--split", "test"]) == 0
    out = capsys.readouterr().out
    assert "tiny-sfrs, tiny-sfrs-seed1 (seeds [0, 1])" in out and "| SFRS | 1 | 2 |" in out
    # the paired table: generation 1 minus generation 0, seed by seed and query by query
    from sfrs_core.paired import paired_diff

    hits = {g: np.stack([QueryResults.load(seed_env / n / "results" / f"test_gen{g}.npz").correct[:, 0]
                         for n in ("tiny-sfrs", "tiny-sfrs-seed1")]) for g in (0, 1)}
    expect = paired_diff(hits[1], hits[0], 1)
    assert f"| 1 − 0 (SARE) | {expect.text()} |" in out
    assert "with 2 seeds its smallest p is 0.5" in out


def test_a_seed_without_middle_weights_keeps_its_recall(seed_env):
    from sfrs_core.seeds import paired_diffs
    from sfrs_core.training.export import leave_out_weights

    twin = Run(seed_env / "tiny-sfrs-seed1")
    before = paired_diffs(seed_groups([Run(seed_env / "tiny-sfrs"), twin])[0], "test")
    assert leave_out_weights(twin.path, keep=[1]) == [0]
    assert twin.generations == [1] and twin.result_generations == [0, 1]
    manifest = json.loads((twin.path / "manifest.json").read_text())
    assert "gen0.pt" not in manifest["files"] and manifest["weights_left_out"] == [0]
    group = seed_groups([Run(seed_env / "tiny-sfrs"), twin])[0]
    assert group.generations == [0, 1]
    assert paired_diffs(group, "test")[1][1] == before[1][1]
    data = open_run(seed_env / "tiny-sfrs").data
    assert read_vpr_folder(data)["test"].queries.condition is not None


def test_prepare_skips_other_seeds_unless_asked(seed_env):
    from sfrs_core.prepare import prepare

    done = prepare((str(seed_env),), progress=False, methods=())
    prepared = {p.parent.parent.name for p in done}
    assert prepared == {"tiny-sare", "tiny-sfrs"}  # the seed-1 twin is indexed on demand
    done = prepare((str(seed_env),), progress=False, methods=(), all_seeds=True)
    assert {p.parent.parent.name for p in done} == {"tiny-sare", "tiny-sfrs", "tiny-sfrs-seed1"}


def test_seed_attention_pairs_each_sfrs_seed_with_its_own_sare(seed_env, tmp_path):
    from sfrs_core.explain.attention import attention_by_class
    from sfrs_core.seed_attention import attention_rows, baseline_run, seed_attention
    from sfrs_core.training.export import export_run, leave_out_weights

    runs = [Run(seed_env / n) for n in ("tiny-sfrs", "tiny-sfrs-seed1")]
    group = seed_groups(runs)[0]
    split = read_vpr_folder(runs[0].data)["test"]
    queries = [0, 1, 2]
    summary = seed_attention(group, runs, split, "test", "decomp", queries)
    # an independent path: the single-model summary the app shows, for seed 0's two models
    for g, key in ((0, "sare"), (1, "sfrs")):
        direct = attention_by_class(runs[0].model(g), split, runs[0].results("test", g), "decomp", queries)
        for c in ("facade", "tree", "sign"):
            assert summary["classes"][c][key][0] == pytest.approx(direct["shares"][c])
    for c, v in summary["classes"].items():
        assert v["diff"]["mean"] == pytest.approx(np.mean(v["sfrs"]) - np.mean(v["sare"]))
    assert summary["generation"] == 1 and summary["seeds"] == [0, 1]
    assert {r["class"] for r in attention_rows(summary)} >= {"facade", "sign"}
    # a seed whose generation-0 weights were left out takes them from its SARE run
    sare = export_run(seed_env / "tiny-sfrs", tmp_path / "x-sare", generations=1)
    slim = tmp_path / "x-sfrs"
    shutil.copytree(seed_env / "tiny-sfrs", slim, ignore=shutil.ignore_patterns("cache"))
    leave_out_weights(slim, keep=[1])
    assert baseline_run(Run(slim), [Run(sare)]).path == Run(sare).path
    with pytest.raises(FileNotFoundError, match="no SARE run of seed 0"):
        baseline_run(Run(slim), [])
