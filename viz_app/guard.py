"""The access policy (:mod:`viz_app.access`) applied to a visitor's session.

Pages ask :func:`may_write` to decide what to draw (viewer mode: no start, stop or resume
buttons, no path inputs); the functions that act (:func:`viz_app.train_panel.start_job`, stop and
resume, the set-up start) call :func:`require_write` themselves, so a hidden button is not the
only guard. With a token, the sidebar asks for it (:func:`access_panel`); a session that typed it
may write, and the jobs it starts record it as their owner (:func:`owner`).
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import streamlit as st

from viz_app.access import BUSY_MESSAGE, VIEWER_MESSAGE, AccessError, Policy, exposure_problem, heavy_limit, policy

LOG = logging.getLogger("sfrs_studio.access")
UNLOCKED_KEY = "_sfrs_unlocked"


def server_address() -> str:
    """The address the server listens on (Streamlit's ``server.address``; empty: every interface)."""
    from streamlit import config

    return config.get_option("server.address") or ""


def current_policy() -> Policy:
    """The server's policy. An unknown ``SFRS_STUDIO_MODE`` (which ``sfrs-studio`` refuses at the
    start) is read as viewer mode: a misconfigured server must not open up."""
    try:
        return policy(server_address())
    except ValueError:
        return Policy("viewer", None, True)


def apply_server_policy() -> None:
    """At the top of every script run (``app.py``): an exposed server shows visitors no traceback
    (the log has it), and one that must not serve at all (full mode exposed without a token, which
    ``sfrs-studio`` refuses to start but a bare ``streamlit run`` cannot) shows why and stops."""
    address = server_address()
    if current_policy().exposed:
        st.set_option("client.showErrorDetails", "none")
    problem = exposure_problem(address)
    if problem:
        st.error(f"SFRS Studio is not serving: {problem}.")
        st.stop()


def _session_id() -> str | None:
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else None


def may_write() -> bool:
    """Whether this visitor may start, stop, resume, set up or type paths."""
    return current_policy().may_write(bool(st.session_state.get(UNLOCKED_KEY)))


def require_write() -> None:
    """AccessError (a message for the page) unless this visitor may write."""
    p = current_policy()
    if not p.may_write(bool(st.session_state.get(UNLOCKED_KEY))):
        raise AccessError(VIEWER_MESSAGE if p.mode == "viewer" else
                          "Type the access token in the sidebar first: write actions are locked.")


def owner() -> str | None:
    """Who a job this visitor starts belongs to: their session when a token guards the server (only
    they, or the command line, may stop it), else nobody in particular (a loopback server's one user)."""
    return _session_id() if current_policy().token is not None else None


def started_by() -> str:
    """Who starts a job, in words, for its ``job.json``: the app's session and the visitor's address."""
    ip = None
    with contextlib.suppress(Exception):
        ip = st.context.ip_address
    session = (_session_id() or "?")[:8]
    return f"app session {session}" + (f" from {ip}" if ip else "")


def access_panel() -> None:
    """The sidebar's line on what this visitor may do, and the token field when one is needed."""
    p = current_policy()
    if p.mode == "viewer":
        st.sidebar.caption(":material/visibility: Viewer mode: runs, results and progress only.")
        return
    if not p.needs_unlock or st.session_state.get(UNLOCKED_KEY):
        return
    with st.sidebar.form("access_unlock", clear_on_submit=True, border=False):
        typed = st.text_input("Access token", type="password", key="access_token",
                              help="Training, stopping and dataset paths are locked on this server; its "
                                   "token unlocks them for this browser session.")
        if st.form_submit_button("Unlock", icon=":material/lock_open:"):
            if p.token_matches(typed):
                st.session_state[UNLOCKED_KEY] = True
                LOG.warning("write actions unlocked by %s", started_by())
                st.rerun()
            else:
                LOG.warning("wrong access token from %s", started_by())
                st.error("That token is not right.")


@contextlib.contextmanager
def heavy() -> Iterator[bool]:
    """A slot of the server's heavy computations: yields True (go on) or, when every slot is taken,
    shows :data:`~viz_app.access.BUSY_MESSAGE` and yields False."""
    with heavy_limit().slot() as got:
        if not got:
            st.warning(BUSY_MESSAGE, icon=":material/hourglass_top:")
        yield got


__all__ = ["AccessError", "access_panel", "apply_server_policy", "current_policy", "heavy", "may_write", "owner",
           "require_write", "server_address", "started_by"]
