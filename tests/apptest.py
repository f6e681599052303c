"""Running the app's pages with Streamlit's AppTest (no browser)."""
from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]


def run_page(path: str, timeout: float = 120) -> AppTest:
    """Run a page script (relative to the repository, e.g. ``viz_app/app_pages/map.py``) once; it must not raise."""
    at = AppTest.from_file(str(ROOT / path), default_timeout=timeout)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def map_html(at: AppTest) -> str:
    """The HTML page of the page's one map (an ``st.iframe`` with the map as ``srcdoc``)."""
    (frame,) = [e for e in at.main if e.type == "iframe"]
    return frame.proto.srcdoc
