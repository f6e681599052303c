"""Serving the app to others: the address, viewer mode, the token, data roots, run names, limits.

Unit tests of :mod:`viz_app.access` and :func:`viz_app.serve.server_arguments`, run-name and
data-root refusals that touch nothing on disk, one training from two simultaneous starts, and the
pages in viewer mode (AppTest). The real server and browser are in ``test_serving_live.py``.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from sfrs_core.training.background import (RUN_NAME_RULE, NotYourJobError, TrainingBusyError, check_run_name,
                                           list_jobs, start_training, stop_training, wait_for)
from viz_app import access
from viz_app.access import OUTSIDE_ROOTS, VIEWER_MESSAGE, HeavyLimit, inside_data_roots, policy
from viz_app.serve import server_arguments
from viz_app.widgets import md_escape

ROOT = Path(__file__).resolve().parents[1]
BAD_NAMES = ["../x", "/tmp/x", "a`b", "[x](javascript:y)", "a\nb", "a\x00b", "x" * 200, ".hidden", "", "-x"]


def _args(argv: list[str], **env: str) -> tuple[list[str], str | None, dict[str, str]]:
    environ = dict(env)
    args, problem = server_arguments(argv, environ)
    return args, problem, environ


def _option(args: list[str], name: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == name]


# ---------------------------------------------------------------------------- serve's arguments


def test_serve_listens_on_loopback_by_default_and_answers_to_loopback_names_only():
    args, problem, _ = _args(["--server.port", "8599"])
    assert problem is None
    assert _option(args, "--server.address") == ["127.0.0.1"]
    assert _option(args, "--server.allowedHosts") == ["localhost", "127.0.0.1", "::1"]
    assert _option(args, "--client.showErrorDetails") == []  # the local user sees their tracebacks
    assert args[-2:] == ["--server.port", "8599"]  # Streamlit's own arguments follow
    assert policy("127.0.0.1", {}).mode == "full"


def test_expose_without_token_is_a_viewer_and_hides_tracebacks():
    args, problem, env = _args(["--expose"])
    assert problem is None
    assert _option(args, "--server.address") == ["0.0.0.0"]
    assert _option(args, "--server.allowedHosts") == ["*"]
    assert _option(args, "--client.showErrorDetails") == ["none"]
    assert policy("0.0.0.0", env).mode == "viewer"
    assert _option(_args(["--host", "10.1.2.3"])[0], "--server.address") == ["10.1.2.3"]


def test_expose_in_full_mode_without_token_is_refused():
    args, problem, _ = _args(["--expose"], SFRS_STUDIO_MODE="full")
    assert args == [] and "SFRS_STUDIO_TOKEN" in problem and "\n" not in problem
    _, problem, _ = _args(["--host", "192.168.1.5"], SFRS_STUDIO_MODE="Full")
    assert problem is not None
    _, problem, _ = _args(["--expose"], SFRS_STUDIO_MODE="nonsense")
    assert "SFRS_STUDIO_MODE" in problem
    # a token makes full mode possible (visitors unlock with it); so does viewer mode
    _, problem, env = _args(["--expose"], SFRS_STUDIO_MODE="full", SFRS_STUDIO_TOKEN="s3cret")
    assert problem is None and policy("0.0.0.0", env).needs_unlock
    assert _args(["--expose", "--viewer"], SFRS_STUDIO_MODE="full")[1] is None


def test_users_own_address_and_hosts_win():
    args, problem, _ = _args(["--server.address", "127.0.0.1", "--expose"])
    assert problem is None and _option(args, "--server.address") == ["127.0.0.1"]  # only the user's
    args, problem, _ = _args(["--server.address=0.0.0.0"], SFRS_STUDIO_MODE="full")
    assert problem is not None  # the user's address is the one checked
    args, _, _ = _args(["--server.allowedHosts", "lab.example"], SFRS_STUDIO_ALLOWED_HOSTS="x.example")
    assert _option(args, "--server.allowedHosts") == ["lab.example"]
    args, _, _ = _args(["--expose"], SFRS_STUDIO_ALLOWED_HOSTS="lab.example, *.lab.example")
    assert _option(args, "--server.allowedHosts") == ["lab.example", "*.lab.example"]


def test_serve_flags_set_the_apps_folders(tmp_path):
    _, _, env = _args(["--runs-dir", "a", "--runs-dir", str(tmp_path), "--data-root", str(tmp_path), "--viewer"])
    assert env["SFRS_STUDIO_RUN_DIRS"] == os.pathsep.join([os.path.abspath("a"), str(tmp_path)])
    assert env["SFRS_STUDIO_DATA_ROOTS"] == str(tmp_path) and env["SFRS_STUDIO_MODE"] == "viewer"


@pytest.mark.parametrize("address, loopback", [("127.0.0.1", True), ("::1", True), ("[::1]", True),
                                               ("localhost", True), ("127.3.4.5", True), ("", False),
                                               (None, False), ("0.0.0.0", False), ("::", False),
                                               ("10.0.0.2", False), ("my-host", False)])
def test_loopback_addresses(address, loopback):
    assert access.is_loopback(address) is loopback


def test_token_is_compared_in_full():
    p = policy("127.0.0.1", {"SFRS_STUDIO_TOKEN": "abc123"})
    assert p.mode == "full" and p.needs_unlock
    assert p.token_matches("abc123") and not p.token_matches("abc12") and not p.token_matches("abc1234")
    assert not p.may_write(unlocked=False) and p.may_write(unlocked=True)
    viewer = policy("127.0.0.1", {"SFRS_STUDIO_TOKEN": "abc123", "SFRS_STUDIO_MODE": "viewer"})
    assert not viewer.may_write(unlocked=True)  # viewer mode has no write action at all


# ---------------------------------------------------------------------------- run names and data roots


def _untouchable(m: pytest.MonkeyPatch) -> None:
    """Any look at the filesystem from now on (within ``m``) fails the test."""
    def boom(*args, **kwargs):
        raise AssertionError("the filesystem was touched")

    for name in ("is_file", "is_dir", "exists", "mkdir", "iterdir", "stat", "open"):
        m.setattr(Path, name, boom)
    for name in ("walk", "scandir", "stat", "lstat", "listdir", "mkdir", "open"):
        m.setattr(os, name, boom)


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_run_names_are_refused_before_any_file_is_looked_at(name, tmp_path, monkeypatch):
    folder = tmp_path / "runs"
    with monkeypatch.context() as m, pytest.raises(ValueError) as err:
        _untouchable(m)
        start_training(folder, name, ["--preset", "tiny"])
    assert str(err.value) == RUN_NAME_RULE  # the name is not echoed
    assert not folder.exists()


def test_good_run_names():
    for name in ("demo-sfrs", "a", "run_2.1", "X" * 64):
        assert check_run_name(name) == name
    with pytest.raises(ValueError):
        check_run_name("X" * 65)


def test_paths_outside_the_roots_are_refused_without_a_walk(tmp_path, monkeypatch):
    root = tmp_path / "data"
    (root / "city").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (root / "escape").symlink_to(tmp_path / "secret")
    (root / "inside").symlink_to(root / "city")
    monkeypatch.setenv("SFRS_STUDIO_DATA_ROOTS", str(root))
    monkeypatch.chdir(root)
    for path in ("/", "/etc", "../secret", str(root / ".." / "secret"), "escape", str(root / "escape" / "x"),
                 "~", "a\x00b", "x" * 5000, str(tmp_path / "data2")):
        assert inside_data_roots(path) is None, path
    assert inside_data_roots("city") == str(root / "city")
    assert inside_data_roots(str(root / "inside")) == str(root / "city")  # a link that stays inside
    assert inside_data_roots(str(root / "no-such" / "x")) == str(root / "no-such" / "x")

    from sfrs_core.data import loaders
    from viz_app import jobs

    def boom(*args, **kwargs):
        raise AssertionError("read a path outside the roots")

    monkeypatch.setattr(os, "walk", boom)
    monkeypatch.setattr(loaders, "detect_format", boom)
    monkeypatch.setattr(jobs, "dataset_options", lambda: [])
    monkeypatch.setattr(jobs, "dataset", boom)
    for path in ("/", "/etc", "../secret", "escape"):
        assert jobs.dataset_problem(path) == OUTSIDE_ROOTS


def test_a_folder_too_big_to_search_is_an_error_not_a_walk_of_the_disk(tmp_path, monkeypatch):
    from sfrs_core.data import DatasetError, loaders

    for i in range(30):
        (tmp_path / f"d{i}").mkdir()
    monkeypatch.setattr(loaders, "DETECT_WALK_LIMIT", 10)
    with pytest.raises(DatasetError, match="first 10 entries"):
        loaders.load_dataset(tmp_path)


def test_markdown_escape_shows_typed_text_as_itself():
    assert md_escape("[x](javascript:y)") == r"\[x\](javascript:y)"  # no link
    assert md_escape("a`b*c_d$e:red[f]<b>") == r"a\`b\*c\_d\$e:red\[f\]\<b\>"
    assert md_escape("line\nbreak\x00") == "line break "
    assert md_escape("# title") == r"\# title" and md_escape("- item") == r"\- item"
    assert md_escape("1. first") == r"1\. first" and md_escape("> quote") == r"\> quote"
    assert md_escape("demo-sfrs.2: 3 (ok)") == "demo-sfrs.2: 3 (ok)"  # ordinary text reads as written


# ---------------------------------------------------------------------------- limits and ownership


def test_heavy_limit_refuses_instead_of_queueing():
    limit = HeavyLimit(1)
    with limit.slot() as first:
        assert first
        with limit.slot() as second:
            assert not second
    with limit.slot() as again:
        assert again


def test_two_starts_at_once_give_one_training_owned_by_its_starter(tmp_path, tiny_city):
    folder = tmp_path / "runs"
    args = ["--data", str(tiny_city), "--preset", "tiny", "--generations", "1"]
    barrier, results = threading.Barrier(2), {}

    def start(name: str) -> None:
        barrier.wait()
        try:
            results[name] = start_training(folder, name, args, owner=f"session-{name}")
        except TrainingBusyError as err:
            results[name] = err

    threads = [threading.Thread(target=start, args=(n,)) for n in ("a", "b")]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        started = [n for n, r in results.items() if not isinstance(r, Exception)]
        assert len(started) == 1 and len(results) == 2, results
        assert [j.name for j in list_jobs(folder) if j.alive] == started
        run = folder / started[0]
        assert list_jobs(folder)[0].owner == f"session-{started[0]}"
        with pytest.raises(NotYourJobError):
            stop_training(run, owner="session-someone-else")
        assert stop_training(run, owner=f"session-{started[0]}")
        assert wait_for(run, ("stopped", "interrupted", "failed", "finished"), 60).state in ("stopped", "interrupted")
    finally:
        for j in list_jobs(folder):
            if j.alive:
                stop_training(j.path, force=True)


def test_max_alive_allows_that_many(tmp_path, tiny_city):
    folder = tmp_path / "runs"
    args = ["--data", str(tiny_city), "--preset", "tiny", "--generations", "1"]
    try:
        start_training(folder, "one", args, max_alive=2)
        start_training(folder, "two", args, max_alive=2)
        with pytest.raises(TrainingBusyError, match="2 trainings at a time"):
            start_training(folder, "three", args, max_alive=2)
        assert sorted(j.name for j in list_jobs(folder)) == ["one", "two"]
    finally:
        for j in list_jobs(folder):
            if j.alive:
                stop_training(j.path, force=True)


# ---------------------------------------------------------------------------- the pages in viewer mode


@pytest.fixture
def viewer(app_env, tmp_path, monkeypatch):
    """The tiny runs, a training folder of their own, viewer mode."""
    monkeypatch.setenv("SFRS_STUDIO_MODE", "viewer")
    monkeypatch.setenv("SFRS_STUDIO_RUN_DIRS", os.pathsep.join([str(app_env), str(tmp_path / "runs")]))
    return tmp_path / "runs"


WRITE_LABELS = {"Start training", "Stop", "Force stop", "Resume", "Retry", "Render SynthCity and prepare the runs"}


def test_viewer_mode_pages_have_no_write_control(viewer):
    for page in ("train", "overview"):
        at = AppTest.from_file(str(ROOT / f"viz_app/app_pages/{page}.py"), default_timeout=120)
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        assert not WRITE_LABELS & {b.label for b in at.button}, page
        assert not [t for t in at.text_input], page  # no dataset path, no run name
        assert any("Viewer mode" in c.value for c in at.sidebar.caption)


def _direct_calls() -> None:
    """Run as an app script: the functions that act, called without any button."""
    import streamlit as st

    from sfrs_core.training.background import JobStatus
    from viz_app.bootstrap_panel import start_setup
    from viz_app.jobs import TrainOptions, training_dir
    from viz_app.train_panel import resume_job, start_job, stop_job

    st.session_state["start"] = start_job("direct", TrainOptions("data/synthcity", "tiny"))
    st.session_state["stop"] = stop_job(JobStatus(training_dir() / "direct", "running", pid=1))
    st.session_state["resume"] = resume_job(JobStatus(training_dir() / "direct", "stopped"))
    st.session_state["setup"] = start_setup("data/synthcity", (str(training_dir()),))


def test_viewer_mode_refuses_the_actions_themselves(viewer, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    at = AppTest.from_function(_direct_calls, default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert [at.session_state[k] for k in ("start", "stop", "resume", "setup")] == [False] * 4
    assert all(VIEWER_MESSAGE in e.value.replace("\\", "") for e in at.error) and len(at.error) == 4
    assert not viewer.exists() and not (tmp_path / "data").exists()  # nothing written anywhere


def test_token_unlocks_writing_for_one_session(app_env, tmp_path, monkeypatch):
    monkeypatch.setenv("SFRS_STUDIO_TOKEN", "lab-token-123")
    monkeypatch.setenv("SFRS_STUDIO_RUN_DIRS", os.pathsep.join([str(app_env), str(tmp_path / "runs")]))
    at = AppTest.from_file(str(ROOT / "viz_app/app_pages/train.py"), default_timeout=120)
    at.run()
    assert not at.exception
    assert "Start training" not in {b.label for b in at.button}
    at.sidebar.text_input(key="access_token").input("wrong")
    next(b for b in at.sidebar.button if b.label == "Unlock").click().run()
    assert any("not right" in e.value for e in at.sidebar.error)
    assert "Start training" not in {b.label for b in at.button}
    at.sidebar.text_input(key="access_token").input("lab-token-123")
    next(b for b in at.sidebar.button if b.label == "Unlock").click().run()
    assert not at.exception
    assert "Start training" in {b.label for b in at.button}
    fresh = AppTest.from_file(str(ROOT / "viz_app/app_pages/train.py"), default_timeout=120)
    fresh.run()  # another visitor: still locked
    assert "Start training" not in {b.label for b in fresh.button}
