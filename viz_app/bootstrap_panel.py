"""The first-start panel: on a fresh checkout (no ``data/synthcity``), the Overview page offers to render
SynthCity and prepare the shipped runs, shows the background job's stage and progress, its error and a
Retry button, and fills in once it is done; other pages point to the Overview meanwhile.

The job and its state are :mod:`viz_app.bootstrap`'s (files on disk): the panel only starts and
watches it, so a reload, a second visitor or a restarted server sees the same job, and two visitors
clicking at once start one render. Only a visitor who may write (:mod:`viz_app.guard`) sees the
buttons, and :func:`start_setup` checks again; the set-up counts as one of the server's
``SFRS_STUDIO_MAX_TRAININGS`` background jobs.
"""
from __future__ import annotations

import time
from collections.abc import Iterable

import streamlit as st

from sfrs_core.training.background import list_jobs
from viz_app.access import max_trainings
from viz_app.bootstrap import (DEFAULT_PRESET, STAGE_TITLES, BootstrapStatus, bootstrap_status, is_default_synthcity,
                               is_rendered, setup_needed, start_bootstrap, state_dir, synth_preset)
from viz_app.guard import AccessError, may_write, require_write

REFRESH_S = 1.0  # seconds between two looks at a running job
START_LABEL = "Render SynthCity and prepare the runs"


def setup_target(datasets: Iterable[str]) -> str | None:
    """The first of ``datasets`` (those of the runs found) that needs setting up, if any."""
    return next((d for d in dict.fromkeys(datasets) if setup_needed(d)), None)


def _elapsed(s: BootstrapStatus) -> str:
    if not s.started:
        return ""
    seconds = int(time.time() - s.started)
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def setup_notice(data: str) -> None:
    """What pages other than the Overview show while ``data`` is being set up (or is missing)."""
    s = bootstrap_status(state_dir(data))
    if s.alive:
        st.info(f"Setting up SynthCity and the shipped runs in the background: {s.text}. This page fills in when "
                f"it is done; the Overview page shows the progress.", icon=":material/hourglass_top:")
    else:
        st.info(f"The runs' dataset `{data}` is not rendered yet. Open the **Overview** page to render it and "
                f"prepare the runs from the app (or run `make demo-data` and `make prepare`).",
                icon=":material/info:")


def start_setup(data: str, run_dirs: tuple[str, ...]) -> bool:
    """Start the set-up job for this visitor; False, with the reason on the page, when they may not
    write or the server's background jobs are all taken (trainings in the training folder, the
    last of ``run_dirs``)."""
    try:
        require_write()
        alive = [j for j in list_jobs(run_dirs[-1]) if j.alive] if run_dirs else []
        if len(alive) >= max_trainings():
            st.error(f"Not started: a training is running ({len(alive)} of at most {max_trainings()} background "
                     f"jobs); the set-up can start when it ends.")
            return False
        start_bootstrap(data, run_dirs)
    except AccessError as err:
        st.error(str(err))
        return False
    except OSError as err:
        st.error(f"Could not start the set-up: {err}")
        return False
    return True


def _start(data: str, run_dirs: tuple[str, ...]) -> None:
    if start_setup(data, run_dirs):
        st.rerun()  # the whole app: the panel comes back refreshing itself


def _running(s: BootstrapStatus) -> None:
    number, steps = s.step
    st.markdown(f"**Step {number} of {steps}: {STAGE_TITLES[s.stage]}**" if number else "**Starting…**")
    st.progress(s.fraction, text=s.text)
    st.caption(f"Running in the background for {_elapsed(s)} (process {s.pid}). You may leave or reload this "
               f"page, or open the app in another tab: the job goes on, one at a time, and the pages fill in "
               f"when it is done.")


def _failed(s: BootstrapStatus, data: str, run_dirs: tuple[str, ...]) -> None:
    where = f" at “{STAGE_TITLES[s.stage]}”" if s.stage in STAGE_TITLES else ""
    st.error(f"Setting up failed{where}: {s.error or 'see the log below'}")
    tail = s.log_tail()
    if tail:
        st.code(tail, language=None)
    if may_write() and st.button("Retry", key="bs_retry", type="primary", icon=":material/refresh:"):
        _start(data, run_dirs)


def _offer(data: str, run_dirs: tuple[str, ...]) -> None:
    preset = synth_preset()
    cost = ": about 2 min on 2 CPU cores" if preset == DEFAULT_PRESET else ""
    st.info(f"SynthCity, the city the shipped runs were trained on, is not rendered here yet (`{data}` is "
            f"missing). The app can render it (the `{preset}` preset{cost}) and prepare the runs (database "
            f"indexes and attention summaries: a few minutes), in the background, the same as `make demo-data` "
            f"and `make prepare`. Everything appears here when it is done.", icon=":material/location_city:")
    if not may_write():
        st.caption("Setting it up is not open to visitors of this server.")
        return
    if st.button(START_LABEL, key="bs_start", type="primary", icon=":material/play_arrow:"):
        _start(data, run_dirs)


def _panel(data: str, run_dirs: tuple[str, ...]) -> None:
    s = bootstrap_status(state_dir(data))
    was_alive = st.session_state.get("bs_alive", False)
    st.session_state["bs_alive"] = s.alive
    if was_alive and not s.alive:
        st.rerun()  # finished or failed: the whole app again (pages fill in, or the error shows)
    st.subheader("Set up SynthCity and the shipped runs")
    if s.alive:
        _running(s)
    elif s.state == "failed":
        _failed(s, data, run_dirs)
    elif not is_rendered(data):
        _offer(data, run_dirs)
    else:  # rendered and prepared since this page's script run began
        st.rerun()


def setup_panel(data: str, run_dirs: tuple[str, ...]) -> None:
    """The Overview's set-up panel for ``data``: the offer (a button), the live progress of the job
    (refreshing itself every :data:`REFRESH_S` s while it runs), or its error with a Retry button."""
    alive = bootstrap_status(state_dir(data)).alive
    st.fragment(_panel, run_every=REFRESH_S if alive else None)(data, run_dirs)


def failure_notice(data: str, run_dirs: tuple[str, ...]) -> None:
    """On the Overview, when the data is there but the last set-up failed (e.g. while preparing the
    runs): its error and a Retry (rendering is skipped; what is prepared is kept)."""
    if not is_default_synthcity(data):
        return
    s = bootstrap_status(state_dir(data))
    if s.state == "failed":
        with st.expander("The last set-up did not finish", icon=":material/warning:", expanded=True):
            _failed(s, data, run_dirs)
