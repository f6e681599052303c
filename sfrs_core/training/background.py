"""Training in a background process: start, watch, stop and resume runs from another process.

A *job* is ``python -m sfrs_core train ...`` started in its own session, so it outlives the
process that started it (a Streamlit server, a notebook), with its output in ``<run>/train.log``.
``<run>/job.json`` records its pid, command and start time. The state of a run is read from files
only — ``job.json``, the trainer's ``progress.json`` and whether the pid is alive — so a watcher
that restarts (a page reload, a new server) sees exactly what it saw before.

States (:data:`STATES`):

* ``starting``: the process is alive and has not reported yet (Python and torch importing);
* ``running``: the trainer reports progress (``total_iterations`` 0 while it prepares: dataset,
  frozen features, k-means); ``stopping``: running, and a stop was asked for;
* ``finished``; ``stopped`` (on request; resumable); ``failed`` (the error is in
  ``progress.json`` or at the end of ``train.log``; resumable once the cause is fixed);
* ``interrupted``: the trainer said "running" but its process is gone (killed, machine
  restarted); resumable from ``latest.pt`` like a stopped run.

A stop is SIGTERM: :func:`stop_on_signals` (installed by the ``train`` command) turns it into
:class:`~sfrs_core.training.TrainingStopped`, which the trainer records as ``stopped``; the
checkpoint ``latest.pt`` (written atomically at every re-extraction) is where a resume continues.
``force`` sends SIGKILL instead (the run ends ``interrupted``, equally resumable).

A job runs at a lower CPU priority (:data:`NICENESS`, the scheduler's ``nice``): when a visitor of
the app asks for a page, the page gets the cores first and the training takes every idle moment,
so the app stays responsive while a model trains on the same machine (``bench/load.py`` measures
it) and a training on an otherwise idle machine runs at full speed.

One job at a time per training folder by default: :func:`start_training` refuses
(:class:`TrainingBusyError`, naming the run) while ``max_alive`` runs of the folder are alive; the
trainer's own lock refuses a second process on the same run. A run name is checked
(:data:`RUN_NAME`) before anything on disk is looked at.

A job may have an *owner* (the app's session that started it, when the app asks for one): only
that owner, or a caller that names none (the command line, ``python -m sfrs_core stop``), stops it.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..io import atomic_write_json

JOB_FILE = "job.json"
LOG_FILE = "train.log"
PROGRESS_FILE = "progress.json"
STATES = ("starting", "running", "stopping", "finished", "stopped", "failed", "interrupted")
ALIVE_STATES = ("starting", "running", "stopping")
NICENESS = 19  # CPU priority of a background training (0 = a visitor's page; 19 = lowest: only idle CPU)
_START_LOCK = ".start.lock"
_CHILDREN: dict[int, subprocess.Popen] = {}  # processes this interpreter started (polled, so never zombies)
#: A run name: a plain folder name of at most 64 characters (no path, no dot first, nothing to escape)
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
RUN_NAME_RULE = ("a run name is 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit")


def check_run_name(run: str) -> str:
    """``run`` when it is a valid run name (:data:`RUN_NAME`), else ValueError (which does not repeat it)."""
    if not isinstance(run, str) or RUN_NAME.fullmatch(run) is None:
        raise ValueError(RUN_NAME_RULE)
    return run


class TrainingBusyError(RuntimeError):
    """A run in the training folder is being trained; the message names it."""


@dataclass(frozen=True)
class JobStatus:
    """What is known of one run folder's training, read from its files."""

    path: Path
    state: str
    pid: int | None = None
    progress: dict[str, Any] = field(default_factory=dict)
    started: float | None = None
    error: str | None = None
    stop_requested: float | None = None  # when a stop was asked for (epoch seconds)
    owner: str | None = None  # who may stop it besides the command line (see start_training)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def alive(self) -> bool:
        """A process is training this run."""
        return self.state in ALIVE_STATES

    @property
    def preparing(self) -> bool:
        """Alive but not yet iterating (imports, dataset, frozen features, k-means)."""
        return self.alive and not self.progress.get("total_iterations")

    @property
    def resumable(self) -> bool:
        """Not alive, not finished, and the run folder has its config (the trainer got that far)."""
        return self.state in ("stopped", "failed", "interrupted") and (self.path / "config.json").is_file()

    @property
    def fraction(self) -> float:
        """Overall progress in [0, 1] (iterations done / all iterations)."""
        if self.state == "finished":
            return 1.0
        total = self.progress.get("total_iterations") or 0
        return min(self.progress.get("iteration", 0) / total, 1.0) if total else 0.0

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of ``train.log`` ('' when there is none)."""
        return log_tail(self.path, lines)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # missing, or being replaced
        return {}


def _proc_state(pid: int) -> tuple[str, float] | None:
    """(state letter, start time in epoch seconds) from ``/proc`` (None where there is no /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
    except (OSError, StopIteration, ValueError):
        return None
    fields_ = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": field 3 is [0], field 22 is [19]
    return fields_[0], boot + int(fields_[19]) / os.sysconf("SC_CLK_TCK")


def pid_alive(pid: int | None, started_before: float | None = None) -> bool:
    """Whether process ``pid`` runs (a zombie does not). With ``started_before`` (epoch seconds,
    when the process is known to have existed already), a process started later is a reused pid,
    not ours: it counts as dead."""
    if not pid or pid <= 0:
        return False
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _CHILDREN[pid]
        return False
    try:  # our child started before a module reload: reap it if it has ended
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        pass
    info = _proc_state(pid)
    if info is None:
        return True
    state, start = info
    if state in ("Z", "X"):
        return False
    return started_before is None or start <= started_before + 2.0  # btime has 1 s resolution


def job_status(run_dir: str | os.PathLike) -> JobStatus:
    """The state of the run in ``run_dir`` (see the module docstring)."""
    run_dir = Path(run_dir)
    job = _read_json(run_dir / JOB_FILE)
    prog = _read_json(run_dir / PROGRESS_FILE)
    started = job.get("started")
    stop_asked = job.get("stop_requested")
    # progress.json belongs to the current job unless it predates it (a resumed run's old report)
    if prog and (started is None or prog.get("updated", 0) >= started):
        pid, state, error = prog.get("pid"), prog.get("status", "failed"), prog.get("error")
        if state == "running":
            if pid_alive(pid, prog.get("updated")):
                state = "stopping" if stop_asked and job.get("pid") == pid else "running"
            else:
                state = "interrupted"
        ours = job.get("pid") == pid
        return JobStatus(run_dir, state, pid, prog, started, error, stop_asked if ours else None,
                         job.get("owner") if ours else None)
    if job:
        pid = job.get("pid")
        if pid_alive(pid, started):
            return JobStatus(run_dir, "stopping" if stop_asked else "starting", pid, prog, started, None, stop_asked,
                             job.get("owner"))
        if stop_asked:
            return JobStatus(run_dir, "stopped", pid, prog, started, None, stop_asked, job.get("owner"))
        return JobStatus(run_dir, "failed", pid, prog, started,
                         "the training process ended before training began; see the end of train.log")
    # trained elsewhere and never reported (e.g. an exported run)
    config = _read_json(run_dir / "config.json")
    done = (run_dir / f"gen{config.get('generations', 1) - 1}.pt").is_file()
    return JobStatus(run_dir, "finished" if done else "interrupted")


def list_jobs(training_dir: str | os.PathLike) -> list[JobStatus]:
    """Every run folder of ``training_dir`` (with a config or a job record), latest activity first."""
    base = Path(training_dir)
    if not base.is_dir():
        return []
    found = [job_status(p) for p in base.iterdir()
             if p.is_dir() and ((p / "config.json").is_file() or (p / JOB_FILE).is_file())]

    def last_activity(s: JobStatus) -> float:
        return max(s.progress.get("updated", 0.0), s.started or 0.0)

    return sorted(found, key=lambda s: (-last_activity(s), s.name))


def running_job(training_dir: str | os.PathLike) -> JobStatus | None:
    """The run being trained in ``training_dir``, if any."""
    return next((s for s in list_jobs(training_dir) if s.alive), None)


def log_tail(run_dir: str | os.PathLike, lines: int = 20) -> str:
    """The last ``lines`` lines of a run's ``train.log``."""
    try:
        text = (Path(run_dir) / LOG_FILE).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def _start_lock(training_dir: Path) -> Iterator[None]:
    """Serialise starts in one training folder (the busy check and the launch are one step)."""
    with open(training_dir / _START_LOCK, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _child_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    root = str(Path(__file__).resolve().parents[2])  # so `-m sfrs_core` imports from any working dir
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def start_training(training_dir: str | os.PathLike, run: str, args: Sequence[str] = (), *,
                   resume: bool = False, owner: str | None = None, started_by: str | None = None,
                   max_alive: int = 1) -> JobStatus:
    """Start ``python -m sfrs_core train --run RUN --runs-dir TRAINING_DIR ARGS`` in the background.

    ``args`` are further ``train`` flags (``--data``, ``--preset``, overrides); with ``resume``
    the run continues from its ``latest.pt`` with its own config (``args`` are not used).
    ``owner`` (the app's session) is recorded in ``job.json``, and then only it or the command
    line stops the job (:func:`stop_training`); ``started_by`` says who in words (default: this
    process). ``run`` is checked (:func:`check_run_name`) before any file is looked at.
    Raises ValueError for an invalid run name,
    :class:`TrainingBusyError` while ``max_alive`` runs of ``training_dir`` are alive,
    :class:`~sfrs_core.training.RunExistsError` for a new run whose name is taken,
    ``FileNotFoundError`` / ``ValueError`` for a resume of no run / of a finished run, and
    ``ValueError`` for invalid flags (checked here with the command's own parser).
    """
    from .options import config_from_argv
    from .trainer import RunExistsError

    check_run_name(run)
    base = Path(training_dir)
    run_dir = base / run
    argv = ["train", "--run", run, "--runs-dir", str(base), "--quiet"]
    if resume:
        if not (run_dir / "config.json").is_file():
            raise FileNotFoundError(f"{run_dir}: no run to resume (no config.json)")
        if job_status(run_dir).state == "finished":
            raise ValueError(f"{run!r} has finished; there is nothing to resume")
        argv.append("--resume")
    else:
        if (run_dir / "config.json").is_file():
            raise RunExistsError(f"a run named {run!r} already exists in {base}; choose another name (or resume it)")
        config_from_argv([*argv[1:], *args])  # same parser and config as the command: fail here, not later
        argv += list(args)
    base.mkdir(parents=True, exist_ok=True)
    with _start_lock(base):
        alive = [s for s in list_jobs(base) if s.alive]
        if len(alive) >= max_alive:
            busy = alive[0]
            at_once = "one training at a time" if max_alive == 1 else f"{max_alive} trainings at a time"
            raise TrainingBusyError(f"{busy.name!r} is being trained ({busy.state}) in {base}; {at_once}: stop it "
                                    f"or wait for it to finish")
        run_dir.mkdir(exist_ok=True)
        started = time.time()
        with open(run_dir / LOG_FILE, "a" if resume else "w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "sfrs_core", *argv], stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True, env=_child_env())
        _CHILDREN[proc.pid] = proc
        with contextlib.suppress(OSError):  # set before torch starts its threads, which inherit it
            os.setpriority(os.PRIO_PROCESS, proc.pid, NICENESS)
        atomic_write_json(run_dir / JOB_FILE, {
            "pid": proc.pid, "started": started, "argv": argv, "resume": resume, "owner": owner,
            "started_by": started_by or f"{_user()} (process {os.getpid()}, {Path(sys.argv[0]).name or 'python'})"})
    return job_status(run_dir)


def _user() -> str:
    import getpass

    with contextlib.suppress(Exception):
        return getpass.getuser()
    return "unknown user"


def resume_training(run_dir: str | os.PathLike, **kwargs: Any) -> JobStatus:
    """Continue a stopped, interrupted or failed run in the background (see :func:`start_training`,
    whose ``owner``, ``started_by`` and ``max_alive`` it takes)."""
    run_dir = Path(run_dir)
    return start_training(run_dir.parent, run_dir.name, resume=True, **kwargs)


class NotYourJobError(PermissionError):
    """A stop asked for by someone other than the job's owner (or the command line)."""


def stop_training(run_dir: str | os.PathLike, *, force: bool = False, owner: str | None = None) -> bool:
    """Ask the run's process to stop (SIGTERM; SIGKILL with ``force``); False if none is alive.
    With ``owner`` (an app session), :class:`NotYourJobError` unless that session started the job;
    without one (the command line), any job stops."""
    run_dir = Path(run_dir)
    status = job_status(run_dir)
    if not status.alive or status.pid is None:
        return False
    if owner is not None and status.owner != owner:
        raise NotYourJobError("this run was started by another visitor's session: only that session, or "
                              "`python -m sfrs_core stop` on the server, can stop it")
    job = _read_json(run_dir / JOB_FILE)
    if job.get("pid") == status.pid and not job.get("stop_requested"):
        atomic_write_json(run_dir / JOB_FILE, {**job, "stop_requested": time.time()})
    try:
        os.kill(status.pid, signal.SIGKILL if force else signal.SIGTERM)
    except ProcessLookupError:
        return False
    return True


def wait_for(run_dir: str | os.PathLike, states: Sequence[str], timeout: float, poll: float = 0.5) -> JobStatus:
    """Poll until the run's state is one of ``states``; ``TimeoutError`` (with the log tail) after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        status = job_status(run_dir)
        if status.state in states:
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"{run_dir}: still {status.state!r} after {timeout:.0f} s, waiting for "
                               f"{'/'.join(states)}; train.log ends:\n{status.log_tail()}")
        time.sleep(poll)


@contextlib.contextmanager
def stop_on_signals(signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT)) -> Iterator[threading.Event]:
    """Within the block, the first of ``signals`` sets the yielded event and raises
    :class:`~sfrs_core.training.TrainingStopped` wherever the main thread is (the trainer records
    the run as stopped; pass ``event.is_set`` as its ``should_stop`` so that a stop which a library
    call caught and re-raised as another error still counts as a stop); later signals are ignored,
    so the stop is recorded undisturbed. Main thread only."""
    from .trainer import TrainingStopped

    requested = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        for s in signals:
            signal.signal(s, signal.SIG_IGN)
        requested.set()
        raise TrainingStopped(f"stopped by {signal.Signals(signum).name}")

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield requested
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
