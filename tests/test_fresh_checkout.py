"""``streamlit run app.py`` on a fresh checkout (no ``data/synthcity``, no prepared caches) sets itself up.

- the set-up job (:mod:`viz_app.bootstrap`): its states read from files, one job for two visitors,
  the render lock, a failure reported, the stages reported in order by a real render + prepare;
- the Overview's set-up panel (:mod:`viz_app.bootstrap_panel`) through AppTest: missing data → the
  button; running → the progress; failed → the error and Retry; done → the populated Overview;
- the trainer's own set-up stages in ``progress.json`` and their words on the Train page;
- the real thing in Chromium: a copy of this checkout's files without ``data/`` or caches, served
  by ``streamlit run app.py``, the button clicked, the Overview populated without a restart. The
  fast variant renders the ``tiny`` preset and prepares tiny runs trained on it; the slow one is
  the default path (the ``demo`` preset and the shipped runs).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.apptest import ROOT, run_page
from viz_app import bootstrap
from viz_app.bootstrap import (JOB_FILE, RENDER_LOCK, STATUS_FILE, BootstrapStatus, bootstrap_status, run_bootstrap,
                               start_bootstrap, state_dir)
from viz_app.bootstrap_panel import START_LABEL

SHOTS = ROOT / "test-artifacts" / "screenshots"


# ---------------------------------------------------------------------------- helpers


def _write(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _wait(condition, timeout_s: float, what: str, poll: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"{what} not within {timeout_s:.0f} s")


def _end(pid: int | None) -> None:
    """Stop a set-up process this test started (by its pid) and wait until it is gone."""
    if pid is None:
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    _wait(lambda: not bootstrap._alive(pid, None), 30, f"process {pid} to end")


def _relocated_runs(runs: Path, dest: Path, data: str = "data/synthcity") -> Path:
    """Copies of the tiny runs whose config names ``data`` (as the shipped runs name theirs)."""
    dest.mkdir(parents=True, exist_ok=True)
    for run in runs.iterdir():
        if (run / "config.json").is_file():
            target = dest / run.name
            shutil.copytree(run, target, ignore=shutil.ignore_patterns("cache", "*.lock", ".lock"))
            config = json.loads((target / "config.json").read_text())
            (target / "config.json").write_text(json.dumps({**config, "data": data}, indent=2))
    return dest


@pytest.fixture
def fresh_dir(tiny_runs, tmp_path, monkeypatch) -> Iterator[Path]:
    """A working directory like a fresh checkout's: runs naming ``data/synthcity``, which is missing.
    The app's caches are emptied before and after: they key datasets by path, and ``data/synthcity``
    names another folder in each working directory."""
    import streamlit as st

    monkeypatch.chdir(tmp_path)
    _relocated_runs(tiny_runs, tmp_path / "runs")
    monkeypatch.setenv("SFRS_STUDIO_RUN_DIRS", str(tmp_path / "runs"))
    st.cache_resource.clear()
    st.cache_data.clear()
    yield tmp_path
    st.cache_resource.clear()
    st.cache_data.clear()


# ---------------------------------------------------------------------------- the job's states


def test_status_is_read_from_the_files(tmp_path):
    folder = tmp_path / ".bootstrap"
    assert bootstrap_status(folder).state == "idle"
    now = time.time()
    _write(folder / JOB_FILE, {"pid": os.getpid(), "started": now})  # alive (this process), not reported yet
    assert bootstrap_status(folder).state == "starting" and bootstrap_status(folder).alive
    _write(folder / STATUS_FILE, {"state": "running", "stage": "render", "done": 134, "total": 536, "pid": os.getpid(),
                                  "preset": "tiny", "steps": ["render", "index", "attention"], "updated": now})
    s = bootstrap_status(folder)
    assert (s.state, s.step, s.fraction) == ("running", (1, 3), 0.25)
    assert s.text == "Rendering SynthCity (tiny preset): image 134 of 536"
    _write(folder / STATUS_FILE, {"state": "running", "stage": "attention", "done": 1.5, "total": 2,
                                  "item": "sfrs gen 3", "pid": os.getpid(), "steps": ["index", "attention"],
                                  "updated": now})
    s = bootstrap_status(folder)
    assert s.step == (2, 2) and s.fraction == 0.75
    assert s.text == "Attention summaries (Grad-CAM by semantic class): model 2 of 2 — sfrs gen 3, 50 %"
    # a report of an older job (before job.json's start) is not this job's
    _write(folder / JOB_FILE, {"pid": os.getpid(), "started": now + 1})
    assert bootstrap_status(folder).state == "starting"
    # a "running" report whose process is gone: failed, and says so
    dead = subprocess.Popen(["true"])
    dead.wait()
    _write(folder / STATUS_FILE, {"state": "running", "stage": "index", "pid": dead.pid, "updated": now + 2})
    s = bootstrap_status(folder)
    assert s.state == "failed" and not s.alive and "ended without finishing" in s.error
    _write(folder / STATUS_FILE, {"state": "finished", "stage": None, "pid": dead.pid, "updated": now + 3})
    assert bootstrap_status(folder).state == "finished" and bootstrap_status(folder).fraction == 1.0


def test_two_visitors_starting_at_once_start_one_process(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    got: list[BootstrapStatus] = []
    threads = [threading.Thread(target=lambda: got.append(start_bootstrap(run_dirs=("runs",), preset="tiny")))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert len(got) == 2 and all(s.alive for s in got), got
        assert got[0].pid == got[1].pid  # the second saw the first's process and started none
        assert start_bootstrap(run_dirs=("runs",), preset="tiny").pid == got[0].pid  # nor does a later visitor
    finally:
        _end(got[0].pid if got else None)
    s = bootstrap_status(state_dir())
    assert s.state == "failed" and not s.alive  # killed: reported as failed, with a retry offered by the page


def test_a_second_worker_does_not_render_while_one_holds_the_lock(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = state_dir()
    folder.mkdir(parents=True)
    with bootstrap._flock(folder / RENDER_LOCK):  # as a worker at work holds it
        assert run_bootstrap(preset="tiny", run_dirs=("runs",)) is False
    assert not Path("data/synthcity").exists() and not (folder / STATUS_FILE).exists()


def test_a_failing_worker_reports_its_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="unknown SynthCity preset"):
        run_bootstrap(preset="no-such-preset", run_dirs=("runs",))
    s = bootstrap_status(state_dir())
    assert (s.state, s.stage) == ("failed", "render")
    assert "unknown SynthCity preset 'no-such-preset'" in s.error


def test_the_worker_renders_then_prepares_reporting_each_stage(fresh_dir, monkeypatch):
    from sfrs_core.prepare import attention_file, index_folder
    from sfrs_core.runs import discover_runs

    reports = []
    write = bootstrap.atomic_write_json
    monkeypatch.setattr(bootstrap, "WRITE_EVERY_S", 0.0)
    monkeypatch.setattr(bootstrap, "atomic_write_json", lambda path, obj: (reports.append(obj), write(path, obj)))
    assert run_bootstrap(preset="tiny", run_dirs=("runs",)) is True
    assert (fresh_dir / "data/synthcity/synthcity.json").is_file()
    for run in discover_runs(("runs",)):
        assert all((index_folder(run, g, "test") / "bundle.json").is_file() for g in run.generations)
        assert attention_file(run, run.last_generation, "test", "gradcam").is_file()
    stages = [r["stage"] for r in reports]
    assert [s for i, s in enumerate(stages) if i == 0 or s != stages[i - 1]] == ["render", "index", "attention", "positives", None]
    renders = [r for r in reports if r["stage"] == "render" and r["total"]]
    assert renders[-1]["done"] == renders[-1]["total"] == 536  # every image of the tiny preset, counted
    assert [r["done"] for r in renders] == sorted(r["done"] for r in renders)
    indexes = [r for r in reports if r["stage"] == "index" and r["total"]]
    assert indexes[-1]["done"] == indexes[-1]["total"] == 3  # tiny-sfrs gen 0 and 1, tiny-sare gen 0
    assert reports[-1]["state"] == "finished" and bootstrap_status(state_dir()).state == "finished"


# ---------------------------------------------------------------------------- the Overview's panel (AppTest)


def _texts(at, kind: str) -> list[str]:
    return [e.value for e in getattr(at, kind)]


def test_overview_offers_the_set_up_then_shows_progress_error_and_the_runs(fresh_dir, tiny_city, monkeypatch):
    folder = state_dir()
    # missing data: the offer, no table
    at = run_page("viz_app/app_pages/overview.py")
    assert [b.label for b in at.button if b.key == "bs_start"] == [START_LABEL]
    assert not at.dataframe and "not rendered here yet" in " ".join(_texts(at, "info"))
    # another page points to the Overview
    other = run_page("viz_app/app_pages/soft_labels.py")
    assert any("Open the **Overview** page" in t for t in _texts(other, "info"))
    # running: the stage and its progress, no button
    now = time.time()
    _write(folder / JOB_FILE, {"pid": os.getpid(), "started": now - 1})
    _write(folder / STATUS_FILE, {"state": "running", "stage": "render", "done": 268, "total": 536, "pid": os.getpid(),
                                  "preset": "tiny", "steps": ["render", "index", "attention"], "started": now - 1,
                                  "updated": now})
    at = run_page("viz_app/app_pages/overview.py")
    bars = at.get("progress")
    assert len(bars) == 1 and bars[0].proto.value == 50
    assert "image 268 of 536" in bars[0].proto.text
    assert any("Step 1 of 3: Rendering SynthCity" in t for t in _texts(at, "markdown"))
    assert not [b for b in at.button if b.key == "bs_start"] and not at.dataframe
    # failed: the error, the log and Retry
    _write(folder / STATUS_FILE, {"state": "failed", "stage": "render", "error": "OSError: disk full",
                                  "pid": os.getpid(), "updated": now + 1})
    (folder / "bootstrap.log").write_text("Traceback ...\nOSError: disk full\n")
    at = run_page("viz_app/app_pages/overview.py")
    assert any("disk full" in t for t in _texts(at, "error"))
    assert any("OSError: disk full" in c.value for c in at.code)
    assert [b.label for b in at.button if b.key == "bs_retry"] == ["Retry"]
    # done: the data is there, the Overview is populated
    (fresh_dir / "data").mkdir(exist_ok=True)
    (fresh_dir / "data/synthcity").symlink_to(tiny_city)
    _write(folder / STATUS_FILE, {"state": "finished", "stage": None, "pid": os.getpid(), "updated": now + 2})
    at = run_page("viz_app/app_pages/overview.py")
    assert set(at.dataframe[0].value["run"]) == {"tiny-sare", "tiny-sfrs"}
    assert not [b for b in at.button if b.key in ("bs_start", "bs_retry")]
    # rendered, but preparing the runs failed: the Overview shows the runs, the error and Retry
    _write(folder / STATUS_FILE, {"state": "failed", "stage": "attention", "error": "RuntimeError: out of memory",
                                  "pid": os.getpid(), "updated": now + 3})
    at = run_page("viz_app/app_pages/overview.py")
    assert set(at.dataframe[0].value["run"]) == {"tiny-sare", "tiny-sfrs"}
    assert any("out of memory" in t for t in _texts(at, "error"))
    assert [b.label for b in at.button if b.key == "bs_retry"] == ["Retry"]


def test_clicking_starts_the_job_and_a_failure_offers_retry(fresh_dir, monkeypatch):
    monkeypatch.setenv(bootstrap.PRESET_ENV, "no-such-preset")  # fails fast, in the real process
    at = run_page("viz_app/app_pages/overview.py")
    at.button(key="bs_start").click().run()
    assert not at.exception
    first = _wait(lambda: (s := bootstrap_status(state_dir())).state == "failed" and s, 120, "the job to fail")
    assert "unknown SynthCity preset" in first.error
    at.run()
    assert any("unknown SynthCity preset" in t for t in _texts(at, "error"))
    at.button(key="bs_retry").click().run()
    second = _wait(lambda: (s := bootstrap_status(state_dir())).state == "failed" and s.pid != first.pid and s, 120,
                   "the retried job to fail")
    assert second.started > first.started


# ---------------------------------------------------------------------------- training's own set-up stages


def test_the_trainer_reports_its_set_up_stages(tiny_city, tmp_path, monkeypatch):
    from sfrs_core.training import trainer as trainer_module
    from sfrs_core.training.presets import tiny_config
    from viz_app.train_panel import setup_step, stage_text

    reports = []
    write = trainer_module.atomic_write_json

    def spy(path, obj):
        if Path(path).name == "progress.json":
            reports.append(obj)
        return write(path, obj)

    monkeypatch.setattr(trainer_module, "atomic_write_json", spy)
    cfg = tiny_config(str(tiny_city), "stages").replace(runs_dir=str(tmp_path), generations=1)
    trainer_module.train(cfg, progress=False)
    stages = [r["stage"] for r in reports]
    changes = [s for i, s in enumerate(stages) if i == 0 or s != stages[i - 1]]
    assert changes[:6] == [None, "reading the dataset", None, "frozen features of the train split", None,
                           "k-means initialisation of NetVLAD"]
    assert "PCA whitening" in changes and "frozen features of the val split" in changes
    setup = [r for r in reports if r["stage"] and not r["total_iterations"]]
    assert [setup_step(r)[1] for r in setup] == ["set-up step 1 of 3", "set-up step 2 of 3", "set-up step 3 of 3"]
    assert all(r["stage_started"] <= r["updated"] for r in setup)
    during_training = {r["stage"] for r in reports if r["total_iterations"]}  # no set-up stage leaks into training
    assert during_training == {None, "frozen features of the val split", "PCA whitening",
                               "frozen features of the test split"}
    assert reports[-1]["status"] == "finished" and reports[-1]["stage"] is None
    assert stage_text({"stage": "k-means initialisation of NetVLAD", "stage_started": 100.0}, now=165.0) == \
        "k-means initialisation of NetVLAD, for 1 min 05 s"
    assert setup_step({"stage": "PCA whitening", "total_iterations": 40}) is None  # training: the bars say it


def test_train_page_names_the_set_up_stage_instead_of_a_bare_preparing(tmp_path, monkeypatch):
    run, now = tmp_path / "runs" / "demo-sfrs", time.time()
    _write(run / "job.json", {"pid": os.getpid(), "started": now - 1, "argv": []})  # "trained" by this process
    _write(run / "progress.json", {"status": "running", "pid": os.getpid(), "generation": 0, "generations": 4,
                                   "epoch": 0, "epochs": 3, "iteration": 0, "total_iterations": 0,
                                   "stage": "k-means initialisation of NetVLAD", "stage_started": now - 65,
                                   "updated": now})
    monkeypatch.setenv("SFRS_STUDIO_RUN_DIRS", str(tmp_path / "runs"))
    at = run_page("viz_app/app_pages/train.py")
    states = [t for t in _texts(at, "markdown") if "preparing" in t]
    assert states and all(re.search(r"preparing: k-means initialisation of NetVLAD, for 1 min \d\d s", t)
                          for t in states)
    assert len(states) == 2  # the sidebar's panel and the page's live view
    assert [b.proto.text for b in at.get("progress")] == ["set-up step 3 of 3"] * 2
    assert [b.proto.value for b in at.get("progress")] == [66] * 2  # 2 of 3 steps done (Streamlit truncates)


# ---------------------------------------------------------------------------- the real thing, in Chromium


def copy_checkout(dest: Path) -> Path:
    """This checkout's files as a fresh clone has them (tracked, plus new files git does not ignore, as
    they are now in the working tree): no ``data/``, no ``runs/``, no caches."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    assert not (dest / "data").exists() and not list(dest.glob("assets/demo/*/cache"))
    return dest


def _set_up_in_chromium(root: Path, env: dict[str, str], timeout_s: float) -> dict:
    """Serve ``root`` with ``streamlit run app.py``; on the Overview click the set-up button, watch the
    progress (and a second visitor's tab), wait for the populated Overview; what was seen."""
    from playwright.sync_api import Error as PlaywrightError, sync_playwright

    from tests.browser import CHROMIUM, ERRORS, serve_app, wait_rendered

    seen: dict = {}
    (SHOTS / "fresh_checkout_progress.png").unlink(missing_ok=True)
    with serve_app(env, root=root) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu",
                                                                      "--disable-dev-shm-usage"])
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(180_000)  # the set-up job shares the CPUs with the server and the browser
        try:
            page = context.new_page()
            page.goto(url)
            wait_rendered(page, 180)
            button = page.get_by_role("button", name=START_LABEL)
            seen["offered"] = button.count() == 1
            SHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SHOTS / "fresh_checkout_offer.png"))
            t0 = time.time()
            button.click()
            page.wait_for_selector("[data-testid=stProgress]", timeout=120_000)
            second = context.new_page()  # another visitor meanwhile: the same job's progress, no second button
            second.goto(url)
            second.wait_for_selector("[data-testid=stProgress], [data-testid=stDataFrame]", timeout=120_000)
            seen["second_button"] = second.get_by_role("button", name=START_LABEL).count()
            second.close()
            seen["progress"] = []  # every progress text shown, in order, until the Overview fills in
            deadline = time.time() + timeout_s
            while not page.locator("[data-testid=stDataFrame]").count():
                assert time.time() < deadline, f"not set up within {timeout_s} s; seen: {seen['progress'][-5:]}"
                with contextlib.suppress(PlaywrightError):  # the fragment replaced it meanwhile
                    text = page.locator("[data-testid=stProgress]").first.inner_text(timeout=1000)
                    if text and (not seen["progress"] or text != seen["progress"][-1]):
                        seen["progress"].append(text)
                        if "image" in text and not (SHOTS / "fresh_checkout_progress.png").exists():
                            page.screenshot(path=str(SHOTS / "fresh_checkout_progress.png"))
                page.wait_for_timeout(200)
            wait_rendered(page, 180)
            seen["seconds"] = time.time() - t0
            seen["errors"] = [e.inner_text()[:500] for e in page.locator(ERRORS).all()]
            seen["headings"] = [h.inner_text() for h in page.locator("[data-testid=stMain] h3").all()]
            page.screenshot(path=str(SHOTS / "fresh_checkout.png"), full_page=True)
        finally:
            browser.close()
            _end(bootstrap_status(root / "data/.bootstrap").pid if bootstrap_status(root / "data/.bootstrap").alive
                 else None)  # a job left running by a failed test
    return seen


def _check_set_up(root: Path, seen: dict, runs_dir: str) -> None:
    from sfrs_core.prepare import index_folder
    from sfrs_core.runs import discover_runs

    assert seen["offered"], seen
    shown = " | ".join(seen["progress"])
    assert re.search(r"Rendering SynthCity \(\w+ preset\): image \d+ of \d+", shown), shown  # the render's counts
    assert "Indexing the databases: model" in shown, shown  # then each model prepared
    assert seen["second_button"] == 0, seen
    assert not seen["errors"], seen["errors"]
    assert any(h.startswith("Recall on") for h in seen["headings"]), seen["headings"]
    assert (root / "data/synthcity/synthcity.json").is_file()
    assert bootstrap_status(root / "data/.bootstrap").state == "finished"
    prepared = [r for r in discover_runs((str(root / runs_dir),)) if (index_folder(r, r.last_generation, "test")
                                                                      / "bundle.json").is_file()]
    assert prepared, "no run was prepared"


def test_a_fresh_checkout_sets_itself_up_in_chromium(tiny_runs, tmp_path):
    """The fast variant: the ``tiny`` preset ($SFRS_STUDIO_SYNTH_PRESET) and tiny runs trained on it,
    in place of the shipped runs (which need the ``demo`` preset: the slow variant below)."""
    root = copy_checkout(tmp_path / "checkout")
    _relocated_runs(tiny_runs, root / "tiny-runs")
    seen = _set_up_in_chromium(root, {"SFRS_STUDIO_RUN_DIRS": "tiny-runs:runs", bootstrap.PRESET_ENV: "tiny"}, 600)
    _check_set_up(root, seen, "tiny-runs")
    print(f"fresh checkout set up (tiny) in {seen['seconds']:.0f} s; progress shown: {seen['progress']}")


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_a_fresh_checkout_renders_the_demo_city_and_prepares_the_shipped_runs(tmp_path, monkeypatch):
    """The default path, as a user meets it: ``demo`` preset, the shipped runs (several minutes)."""
    monkeypatch.delenv("SFRS_STUDIO_RUN_DIRS", raising=False)
    monkeypatch.delenv(bootstrap.PRESET_ENV, raising=False)
    root = copy_checkout(tmp_path / "checkout")
    seen = _set_up_in_chromium(root, {}, 3600)
    _check_set_up(root, seen, "assets/demo")
    print(f"fresh checkout set up (demo) in {seen['seconds']:.0f} s")
