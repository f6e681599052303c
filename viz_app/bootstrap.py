"""First start on a fresh checkout: render the embedded SynthCity and prepare the shipped runs in a
background process that the app only watches.

This is ``make demo-data`` (:func:`sfrs_core.data.synthcity.generate` of a preset into
``data/synthcity``) followed by ``make prepare`` (:func:`sfrs_core.prepare.prepare` of the app's run
folders), started from the Overview page when the runs' dataset is missing, so that
``streamlit run app.py`` works by itself. Run by hand: ``python -m viz_app.bootstrap``.

Like background training (:mod:`sfrs_core.training.background`), everything is on disk, in the
*state folder* (``data/.bootstrap/`` beside the dataset), so a page reload, another visitor or a
restarted server sees the same job:

* ``job.json``: the pid and start time of the process a visitor started (written by the starter);
* ``status.json``: what the process reports (state, stage, ``done`` of ``total``, the item being
  worked on, the error), written atomically at most every :data:`WRITE_EVERY_S` seconds;
* ``bootstrap.log``: its output (the traceback of a failure);
* ``start.lock``: serialises starts (the "is one alive?" check and the launch are one step), so
  two visitors clicking at once start one process; ``render.lock``: held by the worker for its
  whole life, so even a second worker started by hand does not render twice.

States (:data:`STATES`): ``idle`` (never started), ``starting`` (the process imports), ``running``,
``finished``, ``failed`` (its error; also when the process vanished without reporting).

Nothing here imports Streamlit: the worker is a plain ``python -m viz_app.bootstrap``.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sfrs_core.io import atomic_write_json
from sfrs_core.runs import DEFAULT_RUN_DIRS
from sfrs_core.training.background import pid_alive

DEFAULT_DATA = "data/synthcity"  # what `make demo-data` renders and the shipped runs were trained on
DEFAULT_PRESET = "demo"
PRESET_ENV = "SFRS_STUDIO_SYNTH_PRESET"  # a smaller preset for tests (the shipped runs need "demo")
STATE_DIR_NAME = ".bootstrap"
JOB_FILE, STATUS_FILE, LOG_FILE = "job.json", "status.json", "bootstrap.log"
START_LOCK, RENDER_LOCK = "start.lock", "render.lock"
WRITE_EVERY_S = 0.5  # at most two status writes a second (the render reports every image)
STATES = ("idle", "starting", "running", "finished", "failed")
ALIVE_STATES = ("starting", "running")
STAGES = ("render", "index", "attention", "positives")  # in this order; "render" only when the dataset is missing
STAGE_TITLES = {"render": "Rendering SynthCity", "index": "Indexing the databases",
                "attention": "Attention summaries (Grad-CAM by semantic class)",
                "positives": "Mined positives (the Soft labels and Map pages)"}
EXIT_BUSY = 3  # the worker's exit status when another worker holds the render lock

_CHILDREN: dict[int, subprocess.Popen] = {}  # workers this process started (polled, so never zombies)


def synth_preset() -> str:
    """The SynthCity preset the app renders: ``demo`` (what the shipped runs need), or
    ``$SFRS_STUDIO_SYNTH_PRESET``."""
    return os.environ.get(PRESET_ENV) or DEFAULT_PRESET


def state_dir(data: str | os.PathLike = DEFAULT_DATA) -> Path:
    """The job's state folder: ``.bootstrap`` beside the dataset folder (``data/.bootstrap``)."""
    return Path(data).parent / STATE_DIR_NAME


def is_default_synthcity(data: str | os.PathLike) -> bool:
    """Whether ``data`` is the app's own SynthCity folder (``data/synthcity`` of the working directory),
    the only dataset the app can make itself."""
    return os.path.realpath(data) == os.path.realpath(DEFAULT_DATA)


def is_rendered(data: str | os.PathLike) -> bool:
    """Whether a complete SynthCity is at ``data`` (its ``synthcity.json`` is written last)."""
    from sfrs_core.data.synthcity import is_complete

    return is_complete(data)


def setup_needed(data: str) -> bool:
    """Whether the app must set ``data`` up before showing it: it is the app's own SynthCity folder and
    it is not rendered yet, or a set-up job is still at work on it."""
    if not is_default_synthcity(data):
        return False
    return not is_rendered(data) or bootstrap_status(state_dir(data)).alive


@dataclass(frozen=True)
class BootstrapStatus:
    """The set-up job as its files tell it (see the module docstring)."""

    state: str
    stage: str | None = None
    done: float = 0.0
    total: int = 0
    item: str = ""
    steps: tuple[str, ...] = STAGES
    error: str | None = None
    pid: int | None = None
    started: float | None = None
    updated: float | None = None
    preset: str | None = None
    folder: Path | None = None

    @property
    def alive(self) -> bool:
        """A set-up process is at work."""
        return self.state in ALIVE_STATES

    @property
    def fraction(self) -> float:
        """Progress of the current stage in [0, 1]."""
        if self.state == "finished":
            return 1.0
        return max(0.0, min(1.0, self.done / self.total)) if self.total else 0.0

    @property
    def step(self) -> tuple[int, int]:
        """(number of the current stage, number of stages), from 1; (0, n) before the first."""
        n = len(self.steps)
        return (self.steps.index(self.stage) + 1 if self.stage in self.steps else 0), n

    @property
    def text(self) -> str:
        """One line: what is being done, with counts (e.g. ``'... image 1204 of 2864'``)."""
        if self.state == "starting":
            return "starting the process (Python and torch importing)"
        if self.state == "finished":
            return "done"
        if self.state == "idle":
            return "not started"
        if self.state == "failed" and self.stage is None:
            return "failed"
        if self.stage == "render":
            what = f"image {int(self.done)} of {self.total}" if self.total else "laying out the city"
            return f"{STAGE_TITLES['render']} ({self.preset} preset): {what}"
        title = STAGE_TITLES.get(self.stage or "", self.stage or "")
        if not self.total:
            return f"{title}: {self.item}" if self.item else title
        current = min(int(self.done) + 1, self.total)
        within = self.done - int(self.done)
        detail = f" — {self.item}" if self.item else ""
        part = f", {round(100 * within)} %" if within > 0 and self.stage in ("attention", "positives") else ""
        return f"{title}: model {current} of {self.total}{detail}{part}"

    def log_tail(self, lines: int = 25) -> str:
        """The last ``lines`` lines of ``bootstrap.log`` ('' when there is none)."""
        if self.folder is None:
            return ""
        try:
            text = (self.folder / LOG_FILE).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # missing, or being replaced
        return {}


def _alive(pid: int | None, since: float | None) -> bool:
    child = _CHILDREN.get(pid or 0)
    if child is not None:
        if child.poll() is None:
            return True
        del _CHILDREN[pid]
        return False
    return pid_alive(pid, since)


def bootstrap_status(folder: str | os.PathLike | None = None) -> BootstrapStatus:
    """The state of the set-up job whose files are in ``folder`` (default :func:`state_dir`)."""
    folder = Path(folder) if folder is not None else state_dir()
    job = _read_json(folder / JOB_FILE)
    report = _read_json(folder / STATUS_FILE)
    started = job.get("started")
    if report and (started is None or report.get("updated", 0) >= started):  # this job's report
        state, error = report.get("state", "failed"), report.get("error")
        if state in ALIVE_STATES and not _alive(report.get("pid"), report.get("updated")):
            state, error = "failed", "the set-up process ended without finishing (killed?); see its log below"
        return BootstrapStatus(state, report.get("stage"), float(report.get("done", 0)), int(report.get("total", 0)),
                               report.get("item", ""), tuple(report.get("steps", STAGES)), error, report.get("pid"),
                               report.get("started", started), report.get("updated"), report.get("preset"), folder)
    if job:
        pid = job.get("pid")
        if _alive(pid, started):
            return BootstrapStatus("starting", pid=pid, started=started, preset=job.get("preset"), folder=folder)
        return BootstrapStatus("failed", error="the set-up process ended before it reported; see its log below",
                               pid=pid, started=started, preset=job.get("preset"), folder=folder)
    return BootstrapStatus("idle", folder=folder)


@contextlib.contextmanager
def _flock(path: Path, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``path`` within the block; yields False when ``blocking`` is
    off and another process holds it."""
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _child_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    root = str(Path(__file__).resolve().parents[1])  # so `-m viz_app.bootstrap` imports from any working dir
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def start_bootstrap(data: str = DEFAULT_DATA, run_dirs: Sequence[str] = DEFAULT_RUN_DIRS, preset: str | None = None,
                    folder: str | os.PathLike | None = None) -> BootstrapStatus:
    """Start ``python -m viz_app.bootstrap`` in the background (its own session, so it outlives the
    server's script runs) unless a set-up job is already alive; returns the job's status either way.
    Paths are relative to the current working directory, which the process inherits."""
    folder = Path(folder) if folder is not None else state_dir(data)
    folder.mkdir(parents=True, exist_ok=True)
    preset = preset or synth_preset()
    with _flock(folder / START_LOCK):
        current = bootstrap_status(folder)
        if current.alive:
            return current
        argv = [sys.executable, "-m", "viz_app.bootstrap", "--data", str(data), "--preset", preset,
                "--state-dir", str(folder), "--runs", *run_dirs]
        started = time.time()
        with open(folder / LOG_FILE, "w") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, env=_child_env())
        _CHILDREN[proc.pid] = proc
        atomic_write_json(folder / JOB_FILE, {"pid": proc.pid, "started": started, "argv": argv[1:], "preset": preset})
    return bootstrap_status(folder)


class _Reporter:
    """The worker's side of ``status.json``: throttled progress, forced on stage changes and at the end."""

    def __init__(self, folder: Path, steps: tuple[str, ...], preset: str):
        self.folder, self.steps, self.preset = folder, steps, preset
        self.started = time.time()
        self.stage: str | None = None
        self.written = 0.0

    def write(self, state: str, stage: str | None, done: float = 0, total: int = 0, item: str = "",
              error: str | None = None, force: bool = False) -> None:
        now = time.time()
        if not force and stage == self.stage and now - self.written < WRITE_EVERY_S:
            return
        if stage != self.stage and stage is not None:
            print(f"[bootstrap] {STAGE_TITLES.get(stage or '', stage)}", flush=True)
        self.stage, self.written = stage, now
        atomic_write_json(self.folder / STATUS_FILE, {
            "state": state, "stage": stage, "done": done, "total": total, "item": item, "steps": list(self.steps),
            "error": error, "pid": os.getpid(), "preset": self.preset, "started": self.started, "updated": now})

    def progress(self, stage: str, done: float, total: int, item: str = "") -> None:
        self.write("running", stage, done, total, item)


def _remove_partials(data: Path) -> None:
    """Temporary folders of renders that were killed (the worker holds the render lock: none is alive)."""
    for partial in data.parent.glob(f".{data.name}.partial-*"):
        shutil.rmtree(partial, ignore_errors=True)


def run_bootstrap(data: str = DEFAULT_DATA, preset: str = DEFAULT_PRESET, run_dirs: Sequence[str] = DEFAULT_RUN_DIRS,
                  folder: str | os.PathLike | None = None) -> bool:
    """The worker: render SynthCity ``preset`` into ``data`` if it is not there, then prepare the runs
    of ``run_dirs``, reporting into ``folder``'s ``status.json``. Returns False (and does nothing)
    when another worker holds the render lock; raises what the library raises (after reporting it)."""
    from sfrs_core.data.synthcity import generate, preset as synth_config
    from sfrs_core.prepare import prepare

    folder = Path(folder) if folder is not None else state_dir(data)
    folder.mkdir(parents=True, exist_ok=True)
    with _flock(folder / RENDER_LOCK, blocking=False) as mine:
        if not mine:
            print("[bootstrap] another set-up process is running; nothing to do", flush=True)
            return False
        render = not is_rendered(data)
        report = _Reporter(folder, STAGES if render else STAGES[1:], preset)
        try:
            if render:
                report.write("running", "render", force=True)
                cfg = synth_config(preset)
                _remove_partials(Path(data))
                generate(cfg, data, overwrite=True, progress=False,
                         on_progress=lambda done, total: report.progress("render", done, total))
            report.write("running", "index", item="finding the runs and reading their datasets", force=True)
            prepare(tuple(run_dirs), progress=False,
                    on_progress=lambda stage, done, total, item: report.progress(stage, done, total, item))
        except BaseException as err:
            report.write("failed", report.stage, error=f"{type(err).__name__}: {err}", force=True)
            raise
        report.write("finished", None, force=True)
        print("[bootstrap] done", flush=True)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render SynthCity (if missing) and prepare the app's runs, "
                                                 "reporting progress for the app (see viz_app/bootstrap.py).")
    parser.add_argument("--data", default=DEFAULT_DATA, help="where SynthCity goes (default %(default)s)")
    parser.add_argument("--preset", default=None, help=f"SynthCity preset (default ${PRESET_ENV} or {DEFAULT_PRESET})")
    parser.add_argument("--runs", nargs="*", default=list(DEFAULT_RUN_DIRS), help="run folders to prepare")
    parser.add_argument("--state-dir", default=None, help="status and log folder (default .bootstrap beside --data)")
    args = parser.parse_args(argv)
    done = run_bootstrap(args.data, args.preset or synth_preset(), args.runs, args.state_dir)
    return 0 if done else EXIT_BUSY


if __name__ == "__main__":
    sys.exit(main())
