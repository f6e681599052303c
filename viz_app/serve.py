"""``sfrs-studio`` (``python -m viz_app.serve``, ``make app``): the app's server.

``streamlit run app.py`` in this process, with the heavy libraries (torch, torchvision, grad-cam,
matplotlib, plotly, folium, faiss: about 5 s on 2 cores) imported first, so the first page a visitor
opens paints in a couple of seconds instead of paying for them.

It listens on 127.0.0.1 unless told otherwise (``--host ADDR``, ``--expose`` for every interface;
a ``--server.address`` of the user's own wins). Opened up, it is a viewer unless
``SFRS_STUDIO_TOKEN`` is set, and it refuses to start in full mode without a token (exit 2); it
answers only to the host names of :func:`viz_app.access.allowed_hosts` and shows visitors no
traceback (:mod:`viz_app.access` has the whole policy). Every other argument is Streamlit's
(``--server.port 8502``). Usage: ``sfrs-studio [--expose | --host ADDR] [--runs-dir DIR]
[--data-root DIR] [streamlit options]``.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import os
import importlib
import sys
import threading
import time
from pathlib import Path

APP = Path(__file__).resolve().parent / "app.py"  # package data, with app_pages/, static/ and .streamlit/ beside it

# What the pages import; the torchvision shim must come before torchvision and grad-cam. Nothing
# that imports streamlit (viz_app): imported before `streamlit run` sets the server up, it loses
# the app's navigation (st.navigation).
PRELOAD = (
    "sfrs_core._torchvision", "torch", "faiss", "pandas", "matplotlib.figure", "plotly.graph_objects",
    "folium", "pytorch_grad_cam", "sfrs_core.explain.heatmaps", "sfrs_core.explain.figure_set",
    "sfrs_core.figures.interactive", "sfrs_core.retrieval.localize", "sfrs_core.data.photo", "sfrs_core.prepare",
    "sfrs_core.training.background", "sfrs_core.explain.pair_cache", "sfrs_core.explain.positives",
    "sfrs_core.data.synthcity.basemap", "sfrs_core.data.loaders",
)


def preload() -> None:
    """Import everything the pages need, once, before the server takes its first session."""
    for name in PRELOAD:
        importlib.import_module(name)
    assert "streamlit" not in sys.modules, "a preloaded module imported streamlit too early"


# The app's own modules: they import Streamlit, so they come once the server is up (see import_app_modules)
APP_MODULES = ("viz_app.state", "viz_app.map", "viz_app.widgets", "viz_app.positives", "viz_app.jobs",
               "viz_app.bootstrap_panel", "viz_app.train_panel")

M_ARENA_MAX = -8  # glibc's mallopt parameter
TORCH_THREADS = 1  # torch's intra-op threads in the server (see server_threads)


def limit_malloc_arenas(arenas: int = 2) -> None:
    """At most ``arenas`` glibc malloc arenas (else up to 8 per core): every visitor's script runs
    in its own thread, and memory freed in a thread's arena is rarely given back, so the server's
    resident size crept up with the number of threads that had ever run. No-op off glibc."""
    import ctypes
    import ctypes.util

    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt(M_ARENA_MAX, arenas)


def server_threads() -> None:
    """One torch thread per forward pass in the server. Every visitor's script runs in its own
    thread and the app's model work is small (a few 320×240 images): two OpenMP threads were no
    faster than one on an idle machine (soft labels of 5 positives: 0.25 s either way; an upload
    query 0.16-0.22 s either way), and twice as slow as one while the other core was busy (0.64
    against 0.32 s: OpenMP's threads spin waiting for each other), which is every moment the
    browser, the figure worker, a training or another visitor runs. Trainings and set-up jobs are
    processes of their own and keep every core."""
    import torch

    if torch.get_num_threads() != TORCH_THREADS:
        torch.set_num_threads(TORCH_THREADS)


def warm_caches() -> None:
    """Check the app's runs and read their datasets before the first visitor: every page's
    sidebar needs both, and on the first visit they were a third of a page's server time. The
    results stay in this process (:func:`sfrs_core.runs.run_problem`,
    :func:`sfrs_core.data.shared_dataset`), where the pages find them."""
    from sfrs_core.data import shared_dataset
    from sfrs_core.runs import app_run_dirs, discover_runs, run_problem
    from viz_app.bootstrap import setup_needed  # no Streamlit in it

    datasets = set()
    for run in discover_runs(app_run_dirs()):
        with contextlib.suppress(Exception):  # anything wrong is the page's to report
            if run.generations and run_problem(run.path) is None:
                datasets.add(run.data)
    for data in sorted(datasets):
        # not a SynthCity still being rendered (the Overview sets it up): it would stay half-read
        with contextlib.suppress(Exception):
            if not setup_needed(data):
                shared_dataset(data)


def skip_direct_run_check() -> None:
    """Streamlit looks, on the first element a process draws, whether it runs in a REPL rather
    than under ``streamlit run`` (to print a hint): ``inspect.stack()``, 0.1-0.15 s of the first
    visitor's page. This process is ``streamlit run``; the check is skipped (a no-op if the
    private flag is gone from a later Streamlit)."""
    from streamlit import delta_generator

    if hasattr(delta_generator, "_use_warning_has_been_displayed"):
        delta_generator._use_warning_has_been_displayed = True


def import_app_modules(timeout_s: float = 120.0) -> threading.Thread:
    """Import :data:`APP_MODULES` in a background thread as soon as Streamlit's runtime exists
    (imported before, they lose the app's navigation; imported by the first page, they were
    0.15-0.2 s of its paint). A visitor's page that needs one meanwhile waits on Python's import
    lock for the same import, never does it twice."""
    def run() -> None:
        from streamlit import runtime

        deadline = time.monotonic() + timeout_s
        while not runtime.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        for name in APP_MODULES:
            with contextlib.suppress(Exception):  # the page that imports it reports the error
                importlib.import_module(name)

    thread = threading.Thread(target=run, daemon=True, name="import-app-modules")
    thread.start()
    return thread


LOOPBACK = "127.0.0.1"
EVERY_INTERFACE = "0.0.0.0"
EXIT_REFUSED = 2


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sfrs-studio", allow_abbrev=False, description="Serve SFRS Studio (the Streamlit app). Listens on 127.0.0.1 unless told "
        "otherwise; any further argument is Streamlit's own (e.g. --server.port 8502).",
        epilog="Exposed (--expose, --host), the app is read-only (viewer mode) unless SFRS_STUDIO_TOKEN is set, "
               "whose value visitors type to unlock training; SFRS_STUDIO_MODE=full without a token is refused. "
               "Environment: SFRS_STUDIO_MODE, SFRS_STUDIO_TOKEN, SFRS_STUDIO_ALLOWED_HOSTS, SFRS_STUDIO_DATA_ROOTS, "
               "SFRS_STUDIO_RUN_DIRS, SFRS_STUDIO_MAX_TRAININGS, SFRS_STUDIO_MAX_HEAVY, SFRS_STUDIO_CACHE.")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--host", metavar="ADDR", help="the address to listen on (default 127.0.0.1: this machine only)")
    where.add_argument("--expose", action="store_true", help="listen on every interface (0.0.0.0)")
    p.add_argument("--viewer", action="store_true", help="viewer mode whatever the address (SFRS_STUDIO_MODE=viewer)")
    p.add_argument("--runs-dir", action="append", metavar="DIR",
                   help="a folder of run folders (repeatable; the last is where new runs go; default: assets/demo "
                        "and runs of the working folder; SFRS_STUDIO_RUN_DIRS)")
    p.add_argument("--data-root", action="append", metavar="DIR",
                   help="a folder typed dataset paths may lie in (repeatable; default: data of the working folder; "
                        "SFRS_STUDIO_DATA_ROOTS)")
    p.add_argument("--cache-dir", metavar="DIR", help="the app's disk cache of figures (SFRS_STUDIO_CACHE)")
    return p


def _given(streamlit_args: list[str], option: str) -> str | None:
    """The value of ``--option VALUE`` / ``--option=VALUE`` among Streamlit's arguments (last wins)."""
    value = None
    for i, arg in enumerate(streamlit_args):
        if arg == option and i + 1 < len(streamlit_args):
            value = streamlit_args[i + 1]
        elif arg.startswith(option + "="):
            value = arg.split("=", 1)[1]
    return value


def server_arguments(argv: list[str], env: dict[str, str] | None = None) -> tuple[list[str], str | None]:
    """Streamlit's arguments for ``sfrs-studio ARGV`` (the address, allowed hosts, no tracebacks when
    exposed, then the user's own), and why it must not start (one line), or None. Sets the
    environment variables its flags name in ``env`` (default ``os.environ``)."""
    env = os.environ if env is None else env
    args, rest = parser().parse_known_args(argv)
    for flag, name in ((args.runs_dir, "SFRS_STUDIO_RUN_DIRS"), (args.data_root, "SFRS_STUDIO_DATA_ROOTS")):
        if flag:
            env[name] = os.pathsep.join(os.path.abspath(d) for d in flag)
    if args.cache_dir:
        env["SFRS_STUDIO_CACHE"] = os.path.abspath(args.cache_dir)
    if args.viewer:
        env["SFRS_STUDIO_MODE"] = "viewer"
    from viz_app.access import allowed_hosts, exposure_problem, policy  # no Streamlit in it

    address = _given(rest, "--server.address")
    extra = []
    if address is None:
        address = args.host or (EVERY_INTERFACE if args.expose else LOOPBACK)
        extra += ["--server.address", address]
    problem = exposure_problem(address, env)
    if problem:
        return [], problem
    if _given(rest, "--server.allowedHosts") is None:
        for host in allowed_hosts(address, env):
            extra += ["--server.allowedHosts", host]
    if policy(address, env).exposed and _given(rest, "--client.showErrorDetails") is None:
        extra += ["--client.showErrorDetails", "none"]  # tracebacks go to the server's log only
    return [*extra, *rest], None


def server_log() -> None:
    """The app's own events (jobs started and stopped and by whom, refused hosts, token unlocks,
    tracebacks of failed reads) on the server's standard error."""
    import logging

    log = logging.getLogger("sfrs_studio")
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def main(argv: list[str] | None = None) -> int:
    streamlit_args, problem = server_arguments(sys.argv[1:] if argv is None else argv)
    if problem:
        print(f"sfrs-studio: {problem}", file=sys.stderr)
        return EXIT_REFUSED
    server_log()
    limit_malloc_arenas()
    preload()
    server_threads()
    from viz_app import figure_pool  # no Streamlit in it

    figure_pool.start()  # the figure worker process imports matplotlib while the server starts
    warm_caches()
    # the libraries' objects and the runs' datasets live as long as the server: out of the
    # collector's sight, Python's automatic full collections (the app runs without Streamlit's
    # one per rerun) stay short
    gc.freeze()
    from streamlit.web import cli

    from viz_app import host_guard

    host_guard.install()
    skip_direct_run_check()
    import_app_modules()

    sys.argv = ["streamlit", "run", str(APP), *streamlit_args]
    return cli.main()


if __name__ == "__main__":
    sys.exit(main())
