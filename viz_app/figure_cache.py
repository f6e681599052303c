"""Page figures and maps kept on disk, so a restarted server shows them without drawing them again.

A figure of a run (its training curves, a query's soft labels, a retrieval grid) costs 0.2-0.4 s
of matplotlib on 2 cores, a map 0.1-0.4 s of folium, several times that while the browser and
other visitors share the cores, and on a page's first visit they were most of the page's paint.
Their bytes depend only on the cache key (a tuple naming the figure or map and every input it
depends on, with the times its files were written) and on the drawing code, so they are kept in
:func:`cache_dir` under a hash of both: a change of the drawing code (``sfrs_core/figures``,
``sfrs_core/explain``, ``viz_app/map.py``) or of matplotlib or folium is a new name, never a
stale picture. Writes are atomic; at most :data:`MAX_FILES` files are kept (the least recently
written go first). A visitor's own photo is never written (callers pass ``persist=False``).
Nothing here imports Streamlit.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from sfrs_core.io import atomic_write_bytes

ROOT = Path(__file__).resolve().parents[1]
CACHE_ENV = "SFRS_STUDIO_CACHE"  # the app's disk cache folder (default: see cache_dir)
MAX_FILES = 1000  # about 100 MB of figures
_CODE = ("sfrs_core/figures/*.py", "sfrs_core/explain/*.py", "viz_app/map.py")  # what draws them


def cache_dir() -> Path:
    """Where they are kept: ``$SFRS_STUDIO_CACHE/figures``, else ``.cache/figures`` in the checkout
    the app runs from, else (an installed package) ``~/.cache/sfrs-studio/figures``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env) / "figures"
    if (ROOT / "pyproject.toml").is_file():
        return ROOT / ".cache" / "figures"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sfrs-studio" / "figures"


@lru_cache(maxsize=1)
def code_version() -> str:
    """A hash of the drawing sources and of the matplotlib and folium versions."""
    from importlib.metadata import version

    digest = hashlib.sha256(f"{version('matplotlib')}|{version('folium')}".encode())
    for pattern in _CODE:
        for path in sorted(ROOT.glob(pattern)):
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def figure_file(key: tuple) -> Path:
    """Where the figure of ``key`` is kept (``repr(key)``: the key holds str, numbers and tuples)."""
    name = hashlib.sha256(f"{code_version()}|{key!r}".encode()).hexdigest()[:40]
    return cache_dir() / f"{name}.img"


def cached_bytes(key: tuple, draw: Callable[[], bytes]) -> bytes:
    """The figure bytes of ``key`` from disk, or drawn by ``draw()`` and kept (a cache that cannot be
    read or written is simply not used)."""
    path = figure_file(key)
    with contextlib.suppress(OSError):
        return path.read_bytes()
    data = draw()
    with contextlib.suppress(OSError):
        atomic_write_bytes(path, data)
        prune()
    return data


def prune(limit: int = MAX_FILES) -> int:
    """Delete the least recently written figures beyond ``limit``; returns how many went."""
    files = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(cache_dir()):
            if entry.name.endswith(".img"):
                with contextlib.suppress(OSError):
                    files.append((entry.stat().st_mtime, entry.path))
    if len(files) <= limit:
        return 0
    files.sort()
    for _, path in files[:len(files) - limit]:
        with contextlib.suppress(OSError):
            os.unlink(path)
    return len(files) - limit
