"""Refuse every request whose ``Host`` header the server does not answer to: the DNS-rebinding guard.

A web page on another site can make a visitor's browser talk to ``127.0.0.1:8501`` by pointing a
name it controls at that address; the browser then sends that name as the ``Host``. Streamlit
checks ``server.allowedHosts`` on its WebSocket only; this ASGI middleware applies the same list,
with Streamlit's own matching (:func:`is_host_allowed`), to every HTTP request and WebSocket
before anything else answers: 403 for a page, a refused handshake for a socket.
:func:`install` adds it to the app :mod:`viz_app.serve` starts (``sfrs-studio``, ``make app``);
under a bare ``streamlit run app.py`` Streamlit's own WebSocket check remains.
"""
from __future__ import annotations

import logging
from typing import Any

LOG = logging.getLogger("sfrs_studio.host_guard")
REFUSED = b"This server does not answer to that host name.\n"


def _host(scope: dict[str, Any]) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"host":
            return value.decode("latin-1")
    return None


class HostGuard:
    """ASGI middleware: requests whose Host is not in ``server.allowedHosts`` are refused."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            from streamlit.web.server.starlette.starlette_websocket import is_host_allowed

            host = _host(scope)
            if not is_host_allowed(host):
                LOG.warning("refused a request for host %r from %s", host, (scope.get("client") or ("?",))[0])
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                await send({"type": "http.response.start", "status": 403,
                            "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                        (b"content-length", str(len(REFUSED)).encode())]})
                await send({"type": "http.response.body", "body": REFUSED})
                return
        await self.app(scope, receive, send)


def install() -> bool:
    """Put :class:`HostGuard` first in the middleware of the Streamlit server this process will
    start; False (and Streamlit's WebSocket check only) when this Streamlit builds its app otherwise."""
    try:
        from starlette.middleware import Middleware
        from streamlit.web.server.starlette import starlette_app
    except ImportError:
        return False
    original = getattr(starlette_app, "create_streamlit_middleware", None)
    if original is None:
        return False
    if getattr(original, "host_guard", False):
        return True

    def with_host_guard() -> list:
        return [Middleware(HostGuard), *original()]

    with_host_guard.host_guard = True  # type: ignore[attr-defined]
    starlette_app.create_streamlit_middleware = with_host_guard
    return True
