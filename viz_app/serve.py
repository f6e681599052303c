"""Start the app the way ``make app`` does: ``streamlit run app.py`` in this process, with the heavy
libraries (torch, torchvision, grad-cam, matplotlib, plotly, folium, faiss: about 5 s on 2 cores)
imported first, so the first page a visitor opens paints in a couple of seconds instead of paying
for them. Usage: ``python -m viz_app.serve [streamlit options, e.g. --server.port 8502]``.
"""
from __future__ import annotations

import contextlib
import gc
import importlib
import sys
from pathlib import Path

APP = Path(__file__).resolve().parents[1] / "app.py"

# What the pages import; the torchvision shim must come before torchvision and grad-cam. Nothing
# that imports streamlit (viz_app): imported before `streamlit run` sets the server up, it loses
# the app's navigation (st.navigation).
PRELOAD = (
    "sfrs_core._torchvision", "torch", "faiss", "pandas", "matplotlib.figure", "plotly.graph_objects",
    "folium", "pytorch_grad_cam", "sfrs_core.explain.heatmaps", "sfrs_core.explain.figure_set",
    "sfrs_core.figures.interactive", "sfrs_core.retrieval.localize", "sfrs_core.data.photo", "sfrs_core.prepare",
    "sfrs_core.training.background", "sfrs_core.explain.pair_cache", "sfrs_core.explain.positives",
    "sfrs_core.data.synthcity.basemap",
)


def preload() -> None:
    """Import everything the pages need, once, before the server takes its first session."""
    for name in PRELOAD:
        importlib.import_module(name)
    assert "streamlit" not in sys.modules, "a preloaded module imported streamlit too early"
    # the libraries' objects live as long as the server: out of the collector's sight, Python's
    # automatic full collections (the app runs without Streamlit's one per rerun) stay short
    gc.freeze()


M_ARENA_MAX = -8  # glibc's mallopt parameter


def limit_malloc_arenas(arenas: int = 2) -> None:
    """At most ``arenas`` glibc malloc arenas (else up to 8 per core): every visitor's script runs
    in its own thread, and memory freed in a thread's arena is rarely given back, so the server's
    resident size crept up with the number of threads that had ever run. No-op off glibc."""
    import ctypes
    import ctypes.util

    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt(M_ARENA_MAX, arenas)


def main(argv: list[str] | None = None) -> int:
    limit_malloc_arenas()
    preload()
    from viz_app import figure_pool  # no Streamlit in it

    figure_pool.start()  # the figure worker process imports matplotlib while the server starts
    from streamlit.web import cli

    sys.argv = ["streamlit", "run", str(APP), *(sys.argv[1:] if argv is None else argv)]
    return cli.main()


if __name__ == "__main__":
    sys.exit(main())
