"""Training widgets: the compact panel at the bottom of every page's sidebar, and the monitor of the
Train page (the runs of the training folder; the live view of one: progress bars, ETA, loss curves,
recall per generation, stop / resume).

Everything shown is read from the run folder on each (fragment) rerun — ``job.json``,
``progress.json``, ``metrics.jsonl`` and the pid — never kept only in ``st.session_state``, so a
reload or a second browser tab shows the same run. The process itself is
:mod:`sfrs_core.training.background`'s; the page only watches it.
"""
from __future__ import annotations

import json
import logging
import time
from functools import partial
from pathlib import Path

import pandas as pd
import streamlit as st

from sfrs_core.data import DatasetError
from sfrs_core.figures import training_curves
from sfrs_core.training.background import (JobStatus, NotYourJobError, TrainingBusyError, check_run_name, job_status,
                                           list_jobs, resume_training, running_job, start_training, stop_training)
from sfrs_core.runs import Run
from sfrs_core.training.metrics_log import final_recalls
from sfrs_core.training.trainer import RunExistsError
from viz_app.guard import AccessError, may_write, owner, require_write, started_by
from viz_app.jobs import (TrainOptions, canonical_data, dataset_options, dataset_problem, free_run_name, job_slots,
                          training_dir)
from viz_app.cache import Selection, run_metrics
from viz_app.widgets import cached_figure, md_escape

LOG = logging.getLogger("sfrs_studio.jobs")  # who started, stopped or resumed what: the server's log
REFRESH_S = 2.0  # seconds between two looks at a live run (the Train page's monitor)
SIDEBAR_REFRESH_S = 5.0  # the sidebar's glance, on every page of every visitor: cheaper for many visitors
FORCE_AFTER_S = 15.0  # offer "Force stop" when a stop has not finished after this long

_STATE_TEXT = {
    "starting": "starting the process", "running": "training", "stopping": "stopping",
    "finished": "finished", "stopped": "stopped (resumable)", "failed": "failed",
    "interrupted": "interrupted: the process ended without finishing (resumable)",
}


def duration(seconds: float | None) -> str:
    """``3725`` -> ``'1 h 02 min'``; ``185`` -> ``'3 min 05 s'``; None -> ``'-'``."""
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"


# The trainer's set-up stages before the first iteration, as it names them in progress.json ("stage"),
# by prefix; later stages (the val/test split's frozen features, PCA whitening) come with the bars.
SETUP_STAGES = ("reading the dataset", "frozen features", "k-means")


def stage_text(progress: dict, now: float | None = None) -> str | None:
    """The stage the trainer reports with how long it has been at it (``'k-means initialisation of
    NetVLAD, for 1 min 05 s'``), or None when it reports none (iterating, or an older trainer)."""
    stage = progress.get("stage")
    if not stage:
        return None
    since = progress.get("stage_started")
    return f"{stage}, for {duration((now or time.time()) - since)}" if since else stage


def setup_step(progress: dict) -> tuple[float, str] | None:
    """While the trainer sets up (a stage reported, no iteration total yet): the fraction of the set-up
    done, by stage, and the step in words (``'set-up step 2 of 3'``); None otherwise."""
    stage = progress.get("stage")
    if not stage or progress.get("total_iterations"):
        return None
    step = next((i for i, prefix in enumerate(SETUP_STAGES) if stage.startswith(prefix)), None)
    if step is None:
        return 0.0, "set-up"
    return step / len(SETUP_STAGES), f"set-up step {step + 1} of {len(SETUP_STAGES)}"


def state_text(s: JobStatus) -> str:
    """One line: the state in words (and the set-up stage while the trainer prepares)."""
    if s.state == "running" and s.preparing:
        stage = stage_text(s.progress)
        return f"preparing: {stage}" if stage else "preparing (dataset, frozen features, k-means)"
    return _STATE_TEXT.get(s.state, s.state)


def position(progress: dict) -> dict[str, tuple[float, str]]:
    """Fractions and labels of the generation / epoch / iteration bars from ``progress.json``."""
    total = int(progress.get("total_iterations") or 0)
    gens, epochs = int(progress.get("generations") or 1), int(progress.get("epochs") or 1)
    it = min(int(progress.get("iteration") or 0), total)
    if not total:
        return {}
    per_gen = total / gens
    per_epoch = per_gen / epochs
    g = min(int(it // per_gen), gens - 1)
    e = min(int((it - g * per_gen) // per_epoch), epochs - 1)
    in_epoch = it - g * per_gen - e * per_epoch
    return {
        "generation": (it / total, f"generation {g + 1} of {gens} · {round(100 * it / total)} % of the run"),
        "epoch": ((it - g * per_gen) / per_gen, f"epoch {e + 1} of {epochs}"),
        "iteration": (in_epoch / per_epoch, f"iteration {round(in_epoch)} of {round(per_epoch)} in this epoch "
                                              f"({it} of {total} in all)"),
    }


def _clamp(x: float) -> float:
    return max(0.0, min(1.0, x))


def progress_bars(s: JobStatus, compact: bool = False) -> None:
    """The run's progress: one overall bar (``compact``) or generation / epoch / iteration bars."""
    p = s.progress
    eta = f" · ETA {duration(p.get('eta_s'))}" if s.state == "running" and p.get("eta_s") is not None else ""
    bars = position(p)
    if not bars:
        setup = setup_step(p) if s.alive else None
        if setup is not None:
            st.progress(_clamp(setup[0]), text=setup[1])  # the stage itself is in state_text
        else:
            st.progress(1.0 if s.state == "finished" else 0.0, text=state_text(s))
        return
    if compact:
        st.progress(_clamp(s.fraction), text=f"{bars['generation'][1]}{eta}")
        return
    for name in ("generation", "epoch", "iteration"):
        frac, label = bars[name]
        st.progress(_clamp(1.0 if s.state == "finished" else frac), text=label)
    stage = stage_text(p) if s.alive else None
    if stage:  # between iterations: a split's frozen features, PCA whitening
        st.caption(f"Now: {stage}")


def stop_job(s: JobStatus, force: bool = False) -> bool:
    """Stop ``s`` for this visitor: only one who may write, and on a server with a token only the
    session that started the job (else the command line: ``python -m sfrs_core stop``)."""
    try:
        require_write()
        stopped = stop_training(s.path, force=force, owner=owner())
    except (AccessError, NotYourJobError) as err:
        LOG.warning("refused to stop %s for %s: %s", s.path, started_by(), err)
        st.error(md_escape(err))
        return False
    LOG.info("%s %s for %s", "force-stopped" if force else "stopped", s.path, started_by())
    return stopped


def resume_job(s: JobStatus) -> bool:
    """Resume ``s`` in the background for this visitor (who then owns the job)."""
    try:
        require_write()
        resume_training(s.path, owner=owner(), started_by=started_by(), max_alive=job_slots())
    except (AccessError, TrainingBusyError, ValueError, FileNotFoundError) as err:
        st.error(md_escape(err))
        return False
    LOG.info("resumed %s for %s", s.path, started_by())
    return True


def _stop_button(s: JobStatus, key: str) -> None:
    if s.state != "stopping":
        if st.button("Stop", key=f"{key}_stop", help="Stop now; the run can be resumed from its last checkpoint"):
            if stop_job(s):
                st.rerun()
        return
    if time.time() - (s.stop_requested or time.time()) > FORCE_AFTER_S:
        if st.button("Force stop", key=f"{key}_kill", help="Kill the process (SIGKILL); it resumes from its last checkpoint"):
            if stop_job(s, force=True):
                st.rerun()


def controls(s: JobStatus, key: str) -> None:
    """Stop (while alive) or Resume (when stopped / interrupted / failed) for one run; nothing for a
    visitor who may not write, and no Stop for a job another session owns."""
    if not may_write():
        return
    if s.alive:
        if owner() is None or s.owner == owner():
            _stop_button(s, key)
    elif s.resumable:
        if st.button("Resume", key=f"{key}_resume", help="Continue from the last checkpoint (latest.pt)"):
            if resume_job(s):
                st.rerun()


def problems(s: JobStatus) -> None:
    """The error (and the end of ``train.log``) of a failed run; a note for an interrupted one."""
    if s.state == "failed":
        st.error(f"Training failed: {s.error or 'see the log below'}")
        tail = s.log_tail(25)
        if tail:
            st.code(tail, language=None)
    elif s.state == "interrupted":
        st.warning("The training process ended without finishing (killed, or the machine restarted). "
                   "Resume continues from the last checkpoint.")


def _rerun_when_done(s: JobStatus, key: str) -> None:
    """After a watched run stops being alive, rerun the whole app once: every page's run list
    (and the sidebar) picks up the new generations."""
    flag = f"{key}_alive_{s.path}"
    was_alive = st.session_state.get(flag, False)
    st.session_state[flag] = s.alive
    if was_alive and not s.alive:
        st.rerun()


# ---------------------------------------------------------------------------- the sidebar panel


def _sidebar_live(run_dir: Path) -> None:
    s = job_status(run_dir)
    _rerun_when_done(s, "tp")
    st.markdown(f"**{md_escape(s.name)}** — {state_text(s)}")
    progress_bars(s, compact=True)
    controls(s, "tp")


def _sidebar_dataset(selection: Selection | None) -> str:
    if selection is not None:
        st.caption(f"Dataset: {md_escape(selection.data)} (the one chosen above)")
        return selection.data
    options = dataset_options()
    if options:
        return st.selectbox("Dataset", options, key="tp_data")
    return st.text_input("Dataset path", key="tp_data_path", placeholder="data/synthcity",
                         help="Render SynthCity with `make demo-data`, or give a dataset folder / .mat file")


def _sidebar_start(selection: Selection | None) -> None:
    with st.expander("Train a model"):
        preset = st.selectbox("Preset", ("tiny", "demo"), key="tp_preset",
                              help="tiny: a quick check (minutes); demo: the shipped demo models' set-up (about "
                                   "30 min on 2 CPU cores)")
        kind = st.radio("Loss", ("SFRS", "SARE"), horizontal=True, key="tp_kind",
                        help="SFRS: generations of self-supervised region similarities; SARE: the baseline "
                             "(one generation)")
        data = _sidebar_dataset(selection)
        default = free_run_name(f"{preset}-{kind.lower()}")
        name = st.text_input("Run name", key="tp_name", placeholder=default).strip() or default
        if st.button("Start training", key="tp_start", type="primary"):
            opts = TrainOptions(canonical_data(data), preset, loss="sare_ind", generations=1 if kind == "SARE" else None)
            if start_job(name, opts):
                st.rerun()
        st.caption("All options: the Train page.")


def start_job(name: str, opts: TrainOptions) -> bool:
    """Validate and start a run in the training folder; errors are shown where this is called.
    Refused, before anything is looked at on disk, for a visitor who may not write and for an
    invalid run name."""
    try:
        require_write()
        check_run_name(name)
    except (AccessError, ValueError) as err:
        st.error(f"Not started: {md_escape(err)}.")
        return False
    problem = dataset_problem(opts.data)
    if problem:
        st.error(md_escape(problem))
        return False
    try:
        start_training(training_dir(), name, opts.args(), owner=owner(), started_by=started_by(),
                       max_alive=job_slots())
    except TrainingBusyError as err:
        st.error(f"Not started: {md_escape(err)}.")
        return False
    except (RunExistsError, DatasetError, ValueError, OSError) as err:
        st.error(f"Not started: {md_escape(err)}")
        return False
    LOG.info("started %s in %s for %s", name, training_dir(), started_by())
    st.session_state["tr_watch"] = name
    return True


def training_panel(selection: Selection | None) -> None:
    """The sidebar's training panel: the running job (progress, ETA, Stop), else a small form that
    starts a run from the sidebar's dataset (works with no run yet, to train the first one)."""
    with st.sidebar:
        st.divider()
        st.markdown("**Training**")
        busy = running_job(training_dir())
        if busy is not None:
            st.fragment(_sidebar_live, run_every=SIDEBAR_REFRESH_S)(busy.path)
        elif may_write():
            _sidebar_start(selection)
        else:
            st.caption("No training is running.")


# ---------------------------------------------------------------------------- the Train page's monitor


def _config(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        return {}


def _describe(cfg: dict) -> str:
    if not cfg:
        return "configuration not written yet"
    model = cfg.get("model", {})
    temps = ", ".join(f"{t:g}" for t in cfg.get("temperatures", []))
    return (f"{md_escape(cfg.get('data'))} · {model.get('trunk')} K={model.get('num_clusters')} · {cfg.get('loss')} · "
            f"{cfg.get('generations')} generation(s) × {cfg.get('epochs')} epoch(s) · λ {cfg.get('lambda_soft')} · "
            f"temperatures {temps}")


def runs_table(jobs: list[JobStatus]) -> pd.DataFrame:
    """One row per run of the training folder: state, progress, configuration, last activity."""
    rows = []
    for j in jobs:
        cfg = _config(j.path)
        gens = Run(j.path).generations
        updated = j.progress.get("updated") or j.started
        rows.append({"run": j.name, "state": j.state, "progress %": round(100 * j.fraction),
                     "generations done": f"{len(gens)} / {cfg.get('generations', '?')}",
                     "loss": cfg.get("loss"), "trunk": cfg.get("model", {}).get("trunk"), "dataset": cfg.get("data"),
                     "updated": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(updated)) if updated else ""})
    return pd.DataFrame(rows)


def live_view(s: JobStatus) -> None:
    """One run: state, elapsed time and ETA, progress bars, stop / resume, problems, curves, recall."""
    st.subheader(md_escape(s.name))
    st.caption(_describe(_config(s.path)))
    p = s.progress
    elapsed = time.time() - s.started if s.alive and s.started else p.get("elapsed_s")
    c1, c2, c3 = st.columns([2, 1, 1])
    c1.markdown(f"**State:** {state_text(s)}")
    c2.markdown(f"**Elapsed:** {duration(elapsed)}")
    c3.markdown(f"**ETA:** {duration(p.get('eta_s')) if s.state == 'running' else '-'}")
    progress_bars(s)
    controls(s, "tr")
    problems(s)
    metrics = run_metrics(Run(s.path))  # re-read only when the log changed
    if any(r.get("event") == "step" for r in metrics):
        log = s.path / "metrics.jsonl"
        cached_figure(("training_curves", str(s.path), log.stat().st_mtime if log.is_file() else 0.0),
                      partial(training_curves, metrics, title=s.name), f"{s.name}_training_curves",
                      download_key=f"tr_fig_{s.name}")  # redrawn (in the figure worker) when the log grows
    recall = final_recalls(metrics)
    if recall:
        st.markdown("**Recall (%) of each finished generation** (25 m)")
        st.dataframe(pd.DataFrame(recall), hide_index=True)


def _monitor(folder: Path) -> None:
    jobs = list_jobs(folder)
    if not jobs:
        st.info(f"No run in {md_escape(folder)} yet" + (": start one above." if may_write() else "."))
        return
    by_name = {j.name: j for j in jobs}
    if st.session_state.get("tr_watch") not in by_name:
        busy = next((j for j in jobs if j.alive), None)
        st.session_state["tr_watch"] = busy.name if busy else jobs[0].name
    watch = st.selectbox("Run", list(by_name), key="tr_watch", format_func=lambda n: f"{n} ({by_name[n].state})")
    s = by_name[watch]
    _rerun_when_done(s, "tr")
    live_view(s)
    st.markdown(f"**Runs in {md_escape(folder)}**")
    st.dataframe(runs_table(jobs), hide_index=True, width="stretch")


def training_monitor(folder: Path) -> None:
    """The runs of ``folder`` and the live view of one (the running one by default); refreshes
    itself every :data:`REFRESH_S` seconds while a run is alive, without rerunning the page."""
    alive = running_job(folder) is not None
    st.fragment(_monitor, run_every=REFRESH_S if alive else None)(folder)
