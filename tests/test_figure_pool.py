"""Page figures drawn in the figure worker process (viz_app.figure_pool)."""
from __future__ import annotations

import os
import signal
from functools import partial
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from sfrs_core import figures as F
from viz_app import figure_pool


def figure_noting_pid(note: Path) -> Figure:
    """A small figure; writes the drawing process's id to ``note``."""
    note.write_text(str(os.getpid()))
    fig = Figure(figsize=(2, 1))
    fig.add_subplot().plot([0, 1], [1, 0])
    return fig


def test_a_partial_is_drawn_in_the_worker_with_the_same_bytes(tmp_path):
    note = tmp_path / "pid"
    grey = np.full((24, 32, 3), 128, np.uint8)
    build = partial(F.retrieval_grid, [grey], [[grey, grey]], [[3.0, 40.0]], row_labels=["SFRS"])
    assert figure_pool.render(build) == figure_pool.draw(build)  # the same encoding in either process
    figure_pool.render(partial(figure_noting_pid, note))
    assert int(note.read_text()) != os.getpid()


def test_other_recipes_are_drawn_here(tmp_path):
    note = tmp_path / "pid"
    data = figure_pool.render(lambda: figure_noting_pid(note))  # a lambda cannot be sent
    assert int(note.read_text()) == os.getpid() and data.startswith(b"\x89PNG")


def test_a_dead_worker_is_replaced_and_the_figure_still_drawn(tmp_path):
    note = tmp_path / "pid"
    figure_pool.render(partial(figure_noting_pid, note))
    worker = int(note.read_text())
    os.kill(worker, signal.SIGKILL)
    assert figure_pool.render(partial(figure_noting_pid, note)).startswith(b"\x89PNG")  # here, or in a new worker
    figure_pool.render(partial(figure_noting_pid, note))
    assert int(note.read_text()) not in (worker, os.getpid())  # a new worker draws again


def test_a_worker_started_during_a_script_run_does_not_rerun_the_page(tmp_path, monkeypatch):
    """During a Streamlit script run ``__main__`` is the page; spawn would run it again in the
    worker (here a page that raises on import) and the worker would die at once."""
    import types

    page = tmp_path / "page.py"
    page.write_text("raise RuntimeError('the page ran in the figure worker')\n")
    fake_main = types.ModuleType("__main__")
    fake_main.__file__ = str(page)
    old = figure_pool._pool
    monkeypatch.setattr(figure_pool, "_pool", None)
    monkeypatch.setitem(__import__("sys").modules, "__main__", fake_main)
    note = tmp_path / "pid"
    try:
        figure_pool.render(partial(figure_noting_pid, note))
        assert int(note.read_text()) != os.getpid()  # drawn in a (living) worker
    finally:
        if figure_pool._pool is not None:
            figure_pool._pool.shutdown()
        figure_pool._pool = old


def test_the_worker_ends_when_its_server_is_killed(tmp_path):
    """A server killed with SIGKILL cannot stop its pool: the worker notices and exits by itself."""
    import subprocess
    import sys
    import time

    note = tmp_path / "pid"
    server = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from functools import partial; from pathlib import Path; "
        "from viz_app import figure_pool; from tests.test_figure_pool import figure_noting_pid; "
        f"figure_pool.render(partial(figure_noting_pid, Path({str(note)!r}))); time.sleep(60)")],
        cwd=Path(__file__).resolve().parents[1])
    try:
        deadline = time.time() + 60
        while not note.exists() and time.time() < deadline:
            time.sleep(0.2)
        worker = int(note.read_text())
        assert worker != server.pid
    finally:
        server.kill()
        server.wait()
    deadline = time.time() + 10
    while Path(f"/proc/{worker}").exists() and time.time() < deadline:
        time.sleep(0.2)
    assert not Path(f"/proc/{worker}").exists() or "zombie" in Path(f"/proc/{worker}/status").read_text()


def figure_stuck_in_a_worker(server: int) -> Figure:
    """A small figure that never comes back from a worker process (it sleeps there)."""
    import time

    if os.getpid() != server:
        time.sleep(3600)
    return figure_noting_pid(Path(os.devnull))


def test_a_stuck_worker_is_replaced_and_the_figure_drawn_here(tmp_path, monkeypatch):
    monkeypatch.setattr(figure_pool, "FIGURE_TIMEOUT_S", 2.0)
    figure_pool.start()
    stuck = figure_pool._pool
    assert figure_pool.render(partial(figure_stuck_in_a_worker, os.getpid())).startswith(b"\x89PNG")  # drawn here
    note = tmp_path / "pid"
    figure_pool.render(partial(figure_noting_pid, note))
    assert figure_pool._pool is not stuck and int(note.read_text()) != os.getpid()  # a new worker draws
