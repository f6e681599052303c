"""Page figures drawn in a worker process.

matplotlib draws with the GIL held, and the app's server is one Python process that runs every
visitor's script: under the load test (20 visitors) drawing figures was about 40 % of the
server's CPU, and every other visitor's page waited for it. A figure whose recipe can be sent
to another process (a :func:`functools.partial` of a module-level figure function, e.g.
``partial(retrieval_grid, paths, ...)``, with picklable arguments) is drawn in a worker process
instead, on the other core; any other recipe, or any figure while the worker is gone, is drawn
in this process. The worker imports matplotlib and :mod:`sfrs_core.figures` only (no torch,
no Streamlit: about 0.5 s and 60 MB); it is started on first use, or ahead by :func:`start`.
Nothing here imports Streamlit, so the server can start the worker before it serves.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import multiprocessing
import os
import sys
import threading
import time
import types
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from matplotlib.figure import Figure

WORKERS = 1  # one more core's worth of drawing; the server keeps the other for pages and models
PARENT_CHECK_S = 1.0  # how often the worker checks that its server is alive
FIGURE_TIMEOUT_S = 120.0  # a figure not back by then is drawn here, and the worker replaced

_log = logging.getLogger(__name__)
_pool: ProcessPoolExecutor | None = None
_lock = threading.Lock()


def draw(build: Callable[[], Figure]) -> bytes:
    """``build()``'s figure as the page shows it (:func:`sfrs_core.figures.screen_bytes`)."""
    import matplotlib.pyplot as plt

    from sfrs_core.figures import screen_bytes

    fig = build()
    try:
        return screen_bytes(fig)
    finally:
        plt.close(fig)


def _ready(parent: int) -> None:
    """The worker's start: its imports, before its first figure, and a watch on the server."""
    import sfrs_core.figures  # noqa: F401

    threading.Thread(target=_exit_with, args=(parent,), daemon=True, name="exit-with-server").start()


def _exit_with(parent: int) -> None:
    """End this worker when the server that started it is gone (killed with SIGKILL, the pool
    never tells its worker, which would wait for work forever)."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_S)
    os._exit(0)


def _started() -> None:
    """A first task: makes the pool spawn its worker."""


@contextlib.contextmanager
def _plain_main():
    """A module-less ``__main__`` while a worker is spawned: spawn re-runs the parent's ``__main__``
    in the child, and during a script run Streamlit's ``__main__`` is the page itself."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def _get_pool() -> ProcessPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            # spawn: a fork of the server would copy its threads' locks and its torch state
            pool = ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context("spawn"), initializer=_ready,
                                       initargs=(os.getpid(),))
            with _plain_main():
                pool.submit(_started)  # spawns the worker now
            _pool = pool
        return _pool


def _stop(pool: ProcessPoolExecutor) -> None:
    """Kill a pool's worker (stuck on a figure) and drop its queued work."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.kill()
    pool.shutdown(wait=False, cancel_futures=True)


def start() -> None:
    """Start the worker now (it imports matplotlib), so that the first figure does not wait."""
    _get_pool()


def render(build: Callable[[], Figure]) -> bytes:
    """:func:`draw` ``build`` in the worker when it is a :func:`functools.partial` (else here);
    here too when the worker fails or takes longer than :data:`FIGURE_TIMEOUT_S` (a dead or stuck
    worker is replaced for the next figure)."""
    global _pool
    if isinstance(build, functools.partial):
        pool = _get_pool()
        try:
            return pool.submit(draw, build).result(timeout=FIGURE_TIMEOUT_S)
        except (BrokenProcessPool, TimeoutError) as err:
            stuck = isinstance(err, TimeoutError)
            _log.warning("the figure worker %s; drawing in the server and starting a new worker",
                         "is stuck" if stuck else "died")
            with _lock:
                if _pool is pool:
                    _pool = None
            if stuck:
                _stop(pool)
        except Exception as err:  # noqa: BLE001  (not picklable, or failed there: drawn here, where it raises)
            _log.debug("figure drawn in the server: %s", err)
    return draw(build)
