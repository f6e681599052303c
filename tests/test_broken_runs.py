"""A broken run (truncated or code-carrying checkpoint, missing results or metrics) is listed with its
problem and skipped; every other run and page keeps working."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from sfrs_core.runs import open_run
from tests.apptest import run_page
from viz_app.widgets import md_escape


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/sfrs_pwned",))


@pytest.fixture
def broken_env(tiny_runs, tmp_path, monkeypatch) -> Path:
    base = tmp_path / "runs"
    shutil.copytree(tiny_runs, base, ignore=shutil.ignore_patterns("cache"))
    for name in ("truncated", "evil", "no-results", "no-metrics"):
        shutil.copytree(base / "tiny-sfrs", base / name)
        cfg = json.loads((base / name / "config.json").read_text())
        (base / name / "config.json").write_text(json.dumps({**cfg, "run": name, "seed": 7}))
    data = (base / "truncated" / "gen1.pt").read_bytes()
    (base / "truncated" / "gen1.pt").write_bytes(data[:1000])
    torch.save({"model_config": {}, "state_dict": _Evil()}, base / "evil" / "gen0.pt")
    (base / "evil" / "manifest.json").unlink()  # no checksum to catch it: the safe load must
    shutil.rmtree(base / "no-results" / "results")
    (base / "no-metrics" / "metrics.jsonl").unlink()
    monkeypatch.setenv("SFRS_STUDIO_RUN_DIRS", str(base))
    return base


def test_problems_name_the_file(broken_env):
    assert open_run(broken_env / "tiny-sfrs").problem() is None
    problems = {name: open_run(broken_env / name).problem() for name in ("truncated", "evil", "no-results", "no-metrics")}
    assert "truncated" in problems["truncated"] and "gen1.pt" in problems["truncated"]
    assert "evil/gen0.pt" in problems["evil"] and "refused" in problems["evil"]
    assert "no evaluation results" in problems["no-results"]
    assert problems["no-metrics"].endswith("metrics.jsonl: missing")
    assert all("\n" not in p for p in problems.values())
    assert not Path("/tmp/sfrs_pwned").exists()


@pytest.mark.parametrize("page", ["overview", "retrieval", "map", "upload", "soft_labels"])
def test_pages_skip_broken_runs_and_keep_working(broken_env, page):
    at = run_page(f"viz_app/app_pages/{page}.py")
    skipped = [e for e in at.get("expander") if "skipped" in e.label]
    assert skipped and skipped[0].label.startswith("4 run(s) skipped")
    text = " ".join(m.value for m in skipped[0].markdown)
    for name in ("truncated", "evil", "no-results", "no-metrics"):
        assert f"**{md_escape(name)}**" in text  # run folder names are shown as themselves
    if page == "overview":
        assert set(at.dataframe[0].value["run"]) == {"tiny-sare", "tiny-sfrs"}
