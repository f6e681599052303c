"""Who may do what in a served app: the address, viewer mode, the token, data roots and limits.

The app is a server. Its defaults are those of Jupyter, TensorBoard and MLflow: it listens on
loopback (``server.address`` in ``.streamlit/config.toml``, and :mod:`viz_app.serve`), where its one
visitor is the machine's own user and may do everything. Opened up (``sfrs-studio --expose`` or
``--host ADDR``) it is a *viewer* unless a token is set: every run, curve, figure and progress bar
stays visible, and nothing can be started, stopped, written or read from a typed path.

Settings, all environment variables of the server process (``sfrs-studio`` has flags for some):

* ``SFRS_STUDIO_MODE``: ``full`` or ``viewer``; default ``viewer`` when exposed without a token,
  else ``full``. ``full`` on a non-loopback address without a token refuses to start;
* ``SFRS_STUDIO_TOKEN``: with it, a visitor unlocks the write actions for their own session by
  typing it (compared with :func:`hmac.compare_digest`); the jobs they start are theirs;
* ``SFRS_STUDIO_ALLOWED_HOSTS``: comma-separated host names the server answers to (the DNS
  rebinding guard); default: the loopback names when bound to loopback, any host when exposed;
* ``SFRS_STUDIO_DATA_ROOTS``: ``os.pathsep``-separated folders a typed dataset path must lie in
  (after resolving symlinks); default ``data`` (of the working folder);
* ``SFRS_STUDIO_MAX_TRAININGS`` (default 1, the set-up job included) and ``SFRS_STUDIO_MAX_HEAVY``
  (default 2): background jobs at once, and heavy in-server computations at once.

Nothing here imports Streamlit (:mod:`viz_app.guard` applies it to a visitor's session).
"""
from __future__ import annotations

import contextlib
import hmac
import ipaddress
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

MODE_ENV = "SFRS_STUDIO_MODE"
TOKEN_ENV = "SFRS_STUDIO_TOKEN"
ALLOWED_HOSTS_ENV = "SFRS_STUDIO_ALLOWED_HOSTS"
DATA_ROOTS_ENV = "SFRS_STUDIO_DATA_ROOTS"
MAX_TRAININGS_ENV = "SFRS_STUDIO_MAX_TRAININGS"
MAX_HEAVY_ENV = "SFRS_STUDIO_MAX_HEAVY"

MODES = ("full", "viewer")
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
DEFAULT_DATA_ROOTS = ("data",)
DEFAULT_MAX_TRAININGS = 1
DEFAULT_MAX_HEAVY = 2
MAX_PATH_CHARS = 1024  # a typed path longer than this is refused unread

#: The one answer to a typed path that may not be read: the same words whatever the path, so the
#: answer tells nothing about what exists on the server.
OUTSIDE_ROOTS = ("This path is not inside the folders this app may read (its data roots). Put the dataset in "
                 "one of them, or start the app with --data-root (SFRS_STUDIO_DATA_ROOTS) naming its folder.")
VIEWER_MESSAGE = "This app is in viewer mode: nothing can be started, stopped or written from it."
BUSY_MESSAGE = "The server is busy with other visitors' computations; try again in a moment."


class AccessError(PermissionError):
    """A write action in a session that may not write; the message is fit for the page."""


def is_loopback(address: str | None) -> bool:
    """Whether a server bound to ``address`` is reachable from this machine only. Streamlit's
    default (empty) binds every interface; a Unix socket is local."""
    if not address:
        return False
    if address.startswith("unix://"):
        return True
    if address.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: whatever it resolves to, treat it as exposed


def _env(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


@dataclass(frozen=True)
class Policy:
    """What a server allows: ``mode`` (``full`` or ``viewer``), whether a ``token`` unlocks the
    write actions, and whether it is ``exposed`` beyond loopback."""

    mode: str
    token: str | None
    exposed: bool

    @property
    def needs_unlock(self) -> bool:
        """Write actions exist but a visitor must type the token first."""
        return self.mode == "full" and self.token is not None

    def may_write(self, unlocked: bool) -> bool:
        return self.mode == "full" and (self.token is None or unlocked)

    def token_matches(self, typed: str) -> bool:
        """Constant-time comparison of a typed token with the server's."""
        return self.token is not None and hmac.compare_digest(typed.encode(), self.token.encode())


def policy(address: str | None, env: Mapping[str, str] | None = None) -> Policy:
    """The policy of a server bound to ``address``; ValueError for an unknown ``SFRS_STUDIO_MODE``."""
    env = _env(env)
    token = env.get(TOKEN_ENV) or None
    exposed = not is_loopback(address)
    mode = (env.get(MODE_ENV) or "").strip().lower()
    if mode and mode not in MODES:
        raise ValueError(f"{MODE_ENV}={env.get(MODE_ENV)!r}: choose one of {', '.join(MODES)}")
    if not mode:
        mode = "viewer" if exposed and token is None else "full"
    return Policy(mode, token, exposed)


def exposure_problem(address: str | None, env: Mapping[str, str] | None = None) -> str | None:
    """Why a server may not start on ``address`` (one line), or None: full mode beyond loopback
    needs a token, else anyone who reaches the port could train, stop and read paths."""
    try:
        p = policy(address, env)
    except ValueError as err:
        return str(err)
    if p.exposed and p.mode == "full" and p.token is None:
        where = address or "every interface"
        return (f"refusing to serve {where} in full mode without a token: set {TOKEN_ENV} (visitors unlock "
                f"write actions with it) or {MODE_ENV}=viewer (read-only)")
    return None


def allowed_hosts(address: str | None, env: Mapping[str, str] | None = None) -> list[str]:
    """The Host names the server answers to: ``SFRS_STUDIO_ALLOWED_HOSTS``, else the loopback
    names when bound to loopback (a web page cannot rebind its own name to 127.0.0.1 and talk to
    the app), else any (``*``)."""
    given = [h.strip() for h in _env(env).get(ALLOWED_HOSTS_ENV, "").split(",") if h.strip()]
    if given:
        return given
    return list(LOOPBACK_HOSTS) if is_loopback(address) else ["*"]


def data_roots(env: Mapping[str, str] | None = None) -> tuple[Path, ...]:
    """The folders typed dataset paths must lie in, resolved (symlinks followed)."""
    raw = _env(env).get(DATA_ROOTS_ENV)
    names = [p for p in raw.split(os.pathsep) if p.strip()] if raw else list(DEFAULT_DATA_ROOTS)
    return tuple(Path(os.path.realpath(n)) for n in names)


def inside_data_roots(path: str, roots: tuple[Path, ...] | None = None) -> str | None:
    """``path`` resolved (``realpath``: symlinks followed, ``..`` removed) when it lies inside one of
    ``roots`` (default :func:`data_roots`), else None. Nothing below a root is read here: only the
    path's own links are resolved, so no listing or walk happens outside the roots."""
    if not path or "\x00" in path or len(path) > MAX_PATH_CHARS:
        return None
    roots = data_roots() if roots is None else roots
    resolved = os.path.realpath(os.path.expanduser(path.strip()))
    for root in roots:
        if resolved == str(root) or resolved.startswith(str(root).rstrip(os.sep) + os.sep):
            return resolved
    return None


def _positive_int(env: Mapping[str, str] | None, name: str, default: int) -> int:
    try:
        value = int(_env(env).get(name, default))
    except ValueError:
        return default
    return value if value >= 1 else default


def max_trainings(env: Mapping[str, str] | None = None) -> int:
    """Background jobs (trainings and the set-up job) alive at once."""
    return _positive_int(env, MAX_TRAININGS_ENV, DEFAULT_MAX_TRAININGS)


class HeavyLimit:
    """At most ``size`` heavy in-server computations at once (figure export, heatmaps of a whole
    split, mining progress), across every visitor. A visitor who finds it full is told to try again,
    never queued behind minutes of other visitors' work."""

    def __init__(self, size: int):
        self.size = size
        self._slots = threading.BoundedSemaphore(size)

    @contextlib.contextmanager
    def slot(self) -> Iterator[bool]:
        """Within the block: True when a slot was free (and is held), False when all are taken."""
        got = self._slots.acquire(blocking=False)
        try:
            yield got
        finally:
            if got:
                self._slots.release()


_HEAVY: HeavyLimit | None = None
_HEAVY_LOCK = threading.Lock()


def heavy_limit() -> HeavyLimit:
    """The server's one :class:`HeavyLimit` (``SFRS_STUDIO_MAX_HEAVY`` slots)."""
    global _HEAVY
    with _HEAVY_LOCK:
        if _HEAVY is None:
            _HEAVY = HeavyLimit(_positive_int(None, MAX_HEAVY_ENV, DEFAULT_MAX_HEAVY))
        return _HEAVY
