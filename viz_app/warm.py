"""Draw every page's first view once, headless, so that the figures a first visitor sees are on disk.

``make prepare`` (and so ``make app``) runs ``python -m viz_app.warm`` after
``python -m sfrs_core prepare``. The pages run in Streamlit's own headless runner (no browser,
no server), as a visitor would first see them: what they draw with matplotlib goes into the
figure cache (:mod:`viz_app.figure_cache`), and the disk caches of the library (heatmap pairs,
soft labels, map layers) fill as well. A visitor's first page then draws nothing: on 2 cores
the pages' figures were 0.3-0.7 s of a first paint.

Done again only when something a first view shows has changed: the runs' files, the figure
code or the app's pages (a fingerprint in ``<cache>/warm.json``); otherwise it returns at once.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

from sfrs_core.io import atomic_write_json
from sfrs_core.runs import app_run_dirs, discover_runs, files_stamp
from viz_app.figure_cache import ROOT, cache_dir, code_version

APP = ROOT / "viz_app" / "app.py"
PAGES = tuple(f"app_pages/{name}.py" for name in  # relative to APP's folder, as AppTest.switch_page takes them
              ("overview", "retrieval", "heatmaps", "soft_labels", "map", "upload", "train"))


def _marker() -> Path:
    return cache_dir().parent / "warm.json"


def fingerprint() -> str:
    """What the pages' first views depend on: the runs' files (their soft-label snapshots
    included), the figure code and the app's own sources."""
    digest = hashlib.sha256(code_version().encode())
    for path in sorted([APP, *(ROOT / "viz_app").glob("*.py"), *(APP.parent / p for p in PAGES)]):
        digest.update(path.name.encode() + path.read_bytes())
    for run in discover_runs(app_run_dirs()):
        snaps = run.path / "soft_labels"
        digest.update(repr((str(run.path), files_stamp(run.path),
                            files_stamp(snaps) if snaps.is_dir() else ())).encode())
    return digest.hexdigest()


def warm(force: bool = False, timeout_s: float = 600.0) -> list[str]:
    """Run every page once (unless nothing changed since the last time, or ``force``); returns
    the pages run, each with the errors it showed."""
    marker, stamp = _marker(), fingerprint()
    try:
        if not force and json.loads(marker.read_text()).get("fingerprint") == stamp:
            return []
    except (OSError, ValueError, AttributeError):
        pass
    from streamlit.testing.v1 import AppTest

    done = []
    at = AppTest.from_file(str(APP), default_timeout=timeout_s)
    for page in PAGES:
        t0 = time.perf_counter()
        (at.run() if page == PAGES[0] else at.switch_page(page).run())
        problems = [e.value for e in at.exception] + [e.value for e in at.error]
        done.append(f"{page}: {time.perf_counter() - t0:.1f} s" + (f" ({'; '.join(map(str, problems))})"
                                                                     if problems else ""))
    if not any("(" in line for line in done):  # a page that failed is tried again next time
        try:
            atomic_write_json(marker, {"fingerprint": stamp})
        except OSError as err:  # a read-only cache: the pages ran, and run again next time
            done.append(f"{marker}: not written ({err.strerror or err})")
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m viz_app.warm", description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="run the pages even if nothing changed")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    done = warm(args.force)
    for line in done:
        print(f"  {line}")
    print(f"app pages drawn once in {time.perf_counter() - t0:.1f} s" if done else "app pages: nothing changed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
