"""Training from the app: the background job runner, the Train page and the sidebar panel.

Real training processes on the tiny SynthCity (tiny preset, about 30 s for one generation and
a minute for two on 2 cores); every test leaves no process behind.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from sfrs_core.training import RunExistsError
from sfrs_core.training.background import (NICENESS, TrainingBusyError, job_status, list_jobs, pid_alive,
                                           running_job, start_training, stop_training, wait_for)
from tests.apptest import run_page
from viz_app.access import OUTSIDE_ROOTS
from viz_app.jobs import TrainOptions, parse_temperatures
from viz_app.widgets import md_escape

ROOT = Path(__file__).resolve().parents[1]
ENDED = ("finished", "stopped", "failed", "interrupted")


@pytest.fixture
def train_dir(tmp_path, tmp_path_factory, monkeypatch) -> Path:
    """An empty training folder, the app's only run folder; training processes are killed at the end.
    The tests' temporary folders (the tiny SynthCity among them) are the app's data root."""
    folder = tmp_path / "runs"
    monkeypatch.setenv("SFRS_STUDIO_RUN_DIRS", str(folder))
    monkeypatch.setenv("SFRS_STUDIO_DATA_ROOTS", str(tmp_path_factory.getbasetemp()))
    yield folder
    for s in list_jobs(folder):
        if s.alive:
            stop_training(s.path, force=True)


def _button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def _wait_dead(pid: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        assert time.monotonic() < deadline, f"process {pid} still alive"
        time.sleep(0.2)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_dead_or_reused_pid_reads_as_interrupted(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"generations": 2}))
    progress = {"status": "running", "iteration": 3, "total_iterations": 10, "updated": time.time()}
    (run / "progress.json").write_text(json.dumps({**progress, "pid": _dead_pid()}))
    s = job_status(run)
    assert (s.state, s.alive, s.resumable) == ("interrupted", False, True)
    assert running_job(tmp_path) is None
    # our own pid: alive, unless the report predates the process (then the pid was reused)
    (run / "progress.json").write_text(json.dumps({**progress, "pid": os.getpid()}))
    assert job_status(run).state == "running" and running_job(tmp_path).name == "r"
    (run / "progress.json").write_text(json.dumps({**progress, "pid": os.getpid(), "updated": time.time() - 1e6}))
    assert job_status(run).state == "interrupted"
    # a job whose process died before the trainer reported: failed, with the log to read
    (run / "progress.json").unlink()
    (run / "job.json").write_text(json.dumps({"pid": _dead_pid(), "started": time.time()}))
    (run / "train.log").write_text("Traceback...\nboom\n")
    s = job_status(run)
    assert s.state == "failed" and "train.log" in s.error and s.log_tail().endswith("boom")


def test_invalid_options_are_refused_before_starting(train_dir, tiny_city):
    with pytest.raises(ValueError, match="invalid choice"):
        start_training(train_dir, "x", TrainOptions(str(tiny_city), "tiny", loss="nope").args())
    with pytest.raises(ValueError, match="run name"):
        start_training(train_dir, ".hidden", TrainOptions(str(tiny_city), "tiny").args())
    with pytest.raises(ValueError, match="positive"):
        parse_temperatures("0.07, -1")
    assert parse_temperatures("0.07, 0.06 0.05") == (0.07, 0.06, 0.05)
    assert list_jobs(train_dir) == []


def test_a_background_training_yields_the_cpu_to_the_pages(train_dir, tiny_city):
    """The job runs at NICENESS, its threads too, so a visitor's page is served first (bench/load.py)."""
    s = start_training(train_dir, "nice", TrainOptions(str(tiny_city), "tiny", generations=1).args())
    try:
        assert os.getpriority(os.PRIO_PROCESS, s.pid) == NICENESS == 19
        assert os.getpriority(os.PRIO_PROCESS, os.getpid()) < NICENESS  # the test (a page) keeps its own
        wait_for(s.path, ("running",), timeout=120)
        threads = list(Path(f"/proc/{s.pid}/task").iterdir())
        assert threads and all(int((t / "stat").read_text().rsplit(")", 1)[1].split()[16]) == NICENESS
                                        for t in threads)
    finally:
        stop_training(s.path, force=True)


def test_start_refuse_stop_from_sidebar_and_resume_from_page(train_dir, tiny_city):
    args = TrainOptions(str(tiny_city), "tiny", generations=1).args()
    run = train_dir / "one"
    s = start_training(train_dir, "one", args)
    assert s.alive
    with pytest.raises(TrainingBusyError, match="'one' is being trained"):
        start_training(train_dir, "two", args)
    s = wait_for(run, ("running",), 60)  # the trainer holds the run (stopping now is a stop during its set-up)
    # the sidebar of another page shows the job and stops it
    at = run_page("viz_app/app_pages/overview.py", timeout=60)
    assert any("one" in m.value for m in at.sidebar.markdown)
    at.button(key="tp_stop").click().run()
    assert not at.exception
    s = wait_for(run, ENDED, 60)
    assert s.state == "stopped" and s.resumable, s.log_tail()
    _wait_dead(s.pid)
    assert json.loads((run / "progress.json").read_text())["status"] == "stopped"
    with pytest.raises(RunExistsError, match="already exists"):
        start_training(train_dir, "one", args)
    # the Train page offers Resume; the run then goes to its end
    at = run_page("viz_app/app_pages/train.py", timeout=60)
    _button(at, "Resume").click().run()
    assert not at.exception
    s = wait_for(run, ENDED, 180)
    assert s.state == "finished", s.log_tail()
    assert (run / "gen0.pt").is_file() and not s.alive


def test_train_page_trains_tiny_preset_and_overview_lists_the_run(train_dir, tiny_city):
    at = run_page("viz_app/app_pages/train.py", timeout=60)
    assert at.selectbox(key="tr_preset").value == "tiny"
    at.selectbox(key="tr_data").set_value("Another path…").run()
    at.text_input(key="tr_data_path").input("/no/such/dataset").run()  # outside the data roots: not looked at
    assert [e.value for e in at.error] == [md_escape(OUTSIDE_ROOTS)]
    at.text_input(key="tr_data_path").input(str(tiny_city.parent / "no-such-dataset")).run()
    assert any("not found" in e.value for e in at.error)
    at.text_input(key="tr_data_path").input(str(tiny_city)).run()
    assert not at.error
    assert at.number_input(key="tr_gens_tiny").value == 2 and at.number_input(key="tr_epochs_tiny").value == 1
    at.text_input(key="tr_name").input("app-tiny")
    _button(at, "Start training").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    run = train_dir / "app-tiny"
    assert job_status(run).alive
    # a second run is refused while this one trains, naming it
    at.text_input(key="tr_name").input("second")
    _button(at, "Start training").click().run()
    assert any(md_escape("'app-tiny' is being trained") in e.value for e in at.error)  # escaped: a typed name
    assert not (train_dir / "second").exists()
    # the sidebar of another page follows the job
    other = run_page("viz_app/app_pages/overview.py", timeout=60)
    assert any(md_escape("app-tiny") in m.value for m in other.sidebar.markdown)
    s = wait_for(run, ENDED, 240)
    assert s.state == "finished", s.log_tail()
    at.run()
    assert not at.exception
    assert at.selectbox(key="tr_watch").value == "app-tiny"
    assert at.dataframe[-1].value["state"].tolist() == ["finished"]
    overview = run_page("viz_app/app_pages/overview.py", timeout=60)
    table = overview.dataframe[0].value
    assert set(table["run"]) == {"app-tiny"} and sorted(table["generation"]) == [0, 1]


def test_sidebar_panel_without_any_run(train_dir, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no data/synthcity here: the panel asks for a dataset path
    at = AppTest.from_file(str(ROOT / "viz_app/app_pages/overview.py"), default_timeout=60)
    at.run()
    assert not at.exception
    at.sidebar.text_input(key="tp_data_path").input(str(tmp_path / "nothing"))
    at.button(key="tp_start").click().run()
    assert not at.exception
    assert any("not found" in e.value for e in at.sidebar.error)
    assert list_jobs(train_dir) == []
