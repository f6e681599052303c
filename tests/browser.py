"""Drive the real app in Debian's Chromium through Playwright: start ``streamlit run app.py`` on
127.0.0.1, open pages, wait until Streamlit has rendered, collect error boxes, take screenshots.

Used by ``tests/test_browser.py`` and, to refresh the README's screenshots from the shipped demo
runs, by ``python -m tests.browser --out assets/screenshots`` (``make screenshots``).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("SFRS_STUDIO_CHROMIUM", "/usr/bin/chromium")
PAGES = {"overview": "", "retrieval": "retrieval", "heatmaps": "heatmaps", "soft_labels": "soft_labels",
         "map": "map", "upload": "upload", "train": "train"}
BUSY = "[data-testid=stStatusWidget], [data-testid=stSkeleton], [data-testid=stSpinner]"
ERRORS = "[data-testid=stException], [data-testid=stAlertContentError]"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def app_process(env: dict[str, str] | None = None, timeout_s: float = 120.0, preload: bool = False,
                root: Path = ROOT, address: str | None = "127.0.0.1") -> Iterator[tuple[str, subprocess.Popen]]:
    """``streamlit run app.py`` on a free port of 127.0.0.1 (``preload``: through ``viz_app.serve``,
    as ``make app`` starts it) in ``root`` (this checkout, or a copy of it); yields its base URL and
    process (its output goes to a temporary file, shown if it exits early), stops it after."""
    port = free_port()
    launcher = ["viz_app.serve"] if preload else ["streamlit", "run", str(root / "app.py")]
    cmd = [sys.executable, "-m", *launcher, "--server.headless", "true",
           *(["--server.address", address] if address else []),  # None: the server's own default
           "--server.port", str(port), "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, cwd=root, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout_s
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"streamlit exited with {proc.returncode}:\n{log.read().decode()[-3000:]}")
            with contextlib.suppress(OSError):
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            if time.time() > deadline:
                raise TimeoutError(f"streamlit did not answer on {url} within {timeout_s:.0f} s")
            time.sleep(0.5)
        yield url, proc
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(15)
        if proc.poll() is None:
            proc.kill()
        log.close()


@contextlib.contextmanager
def serve_app(env: dict[str, str] | None = None, timeout_s: float = 120.0, preload: bool = False,
              root: Path = ROOT) -> Iterator[str]:
    """:func:`app_process`, yielding only the base URL."""
    with app_process(env, timeout_s, preload, root) as (url, _):
        yield url


@dataclass
class PageVisit:
    name: str
    seconds: float
    errors: list[str] = field(default_factory=list)
    nav: list[str] = field(default_factory=list)  # the sidebar's page links, as shown
    metrics: list[str] = field(default_factory=list)  # st.metric boxes, as shown
    screenshot: Path | None = None
    requests: list[str] = field(default_factory=list)  # every URL the page and its frames asked for


def wait_rendered(page, timeout_s: float = 120.0) -> float:
    """Wait for the page's title, then until no running/skeleton/spinner indicator is left (and
    none comes back for a second); returns the time (``time.time()``) it became quiet."""
    page.wait_for_selector("[data-testid=stMain] h1", timeout=timeout_s * 1000)
    deadline = time.time() + timeout_s
    quiet_since = None
    while time.time() < deadline:
        if page.locator(BUSY).count() == 0:
            quiet_since = quiet_since or time.time()
            if time.time() - quiet_since > 1.0:  # stays quiet: the script run has finished
                return quiet_since
        else:
            quiet_since = None
        page.wait_for_timeout(50)
    raise TimeoutError(f"{page.url} still busy after {timeout_s:.0f} s")


def wait_maps(page, timeout_s: float = 60.0) -> int:
    """Wait until every map (an ``st.iframe`` frame) of the page has drawn Leaflet and its layers
    have had a moment to load; returns the number of maps."""
    frames = page.locator("iframe[data-testid=stIFrame]")
    for i in range(frames.count()):
        frames.nth(i).content_frame.locator(".leaflet-container").wait_for(timeout=timeout_s * 1000)
    page.wait_for_timeout(1000)
    return frames.count()


def visit_pages(url: str, names: list[str], out: Path | None = None, *, width: int = 1400, height: int = 1000,
                timeout_s: float = 180.0, maps: bool = False) -> list[PageVisit]:
    """Open each page in a fresh tab of Chromium; record the time until it has rendered (from
    navigation), its error boxes, every URL it requested, and a screenshot (``width`` × ``height``
    window) into ``out``; ``maps``: also wait for its maps to be drawn (:func:`wait_maps`)."""
    from playwright.sync_api import sync_playwright

    visits = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            context = browser.new_context(viewport={"width": width, "height": height}, device_scale_factor=1)
            for name in names:
                page = context.new_page()
                requested: list[str] = []
                page.on("request", lambda request, seen=requested: seen.append(request.url))
                t0 = time.time()
                page.goto(f"{url}/{PAGES[name]}")
                visit = PageVisit(name, wait_rendered(page, timeout_s) - t0)
                if maps:
                    wait_maps(page, timeout_s)
                visit.requests = requested
                visit.errors = [e.inner_text()[:500] for e in page.locator(ERRORS).all()]
                visit.nav = [a.inner_text().strip() for a in page.locator("[data-testid=stSidebarNav] a").all()]
                if out is not None:
                    out.mkdir(parents=True, exist_ok=True)
                    visit.screenshot = out / f"{name}.png"
                    page.screenshot(path=str(visit.screenshot), full_page=True)
                visits.append(visit)
                page.close()
        finally:
            browser.close()
    return visits


def upload_photo(url: str, photo: Path, timeout_s: float = 180.0) -> PageVisit:
    """Open the Upload page, upload ``photo`` through the file input, wait for the results."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu",
                                                                      "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/{PAGES['upload']}")
            wait_rendered(page, timeout_s)
            t0 = time.time()
            page.locator("[data-testid=stFileUploader] input[type=file]").set_input_files(str(photo))
            page.wait_for_selector("[data-testid=stMetric], [data-testid=stAlertContentError]",
                                   timeout=timeout_s * 1000)
            visit = PageVisit("upload", wait_rendered(page, timeout_s) - t0)
            visit.errors = [e.inner_text()[:500] for e in page.locator(ERRORS).all()]
            visit.metrics = [m.inner_text() for m in page.locator("[data-testid=stMetric]").all()]
        finally:
            browser.close()
    return visit


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "assets" / "screenshots")
    parser.add_argument("--pages", nargs="+", default=["retrieval", "heatmaps", "soft_labels", "map"])
    parser.add_argument("--height", type=int, default=1300, help="window height of the screenshots")
    args = parser.parse_args()
    with serve_app(preload=True) as url:
        for v in visit_pages(url, args.pages, args.out, height=args.height):
            print(f"{v.name:12s} {v.seconds:5.1f} s  {v.screenshot}" + (f"  ERRORS: {v.errors}" if v.errors else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
