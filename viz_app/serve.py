"""Start the app the way ``make app`` does: ``streamlit run app.py`` in this process, with the heavy
libraries (torch, torchvision, grad-cam, matplotlib, plotly, folium, faiss: about 5 s on 2 cores)
imported first, so the first page a visitor opens paints in a couple of seconds instead of paying
for them. Usage: ``python -m viz_app.serve [streamlit options, e.g. --server.port 8502]``.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

APP = Path(__file__).resolve().parents[1] / "app.py"

# What the pages import; the torchvision shim must come before torchvision and grad-cam. Nothing
# that imports streamlit (viz_app, streamlit_folium): imported before `streamlit run` sets the
# server up, it loses the app's navigation (st.navigation) and its folium component.
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


def main(argv: list[str] | None = None) -> int:
    preload()
    from streamlit.web import cli

    sys.argv = ["streamlit", "run", str(APP), *(sys.argv[1:] if argv is None else argv)]
    return cli.main()


if __name__ == "__main__":
    sys.exit(main())
