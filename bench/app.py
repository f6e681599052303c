"""App responsiveness on the demo data, after `make prepare` (what `make app` does first).

1. First paint of each page in Debian's Chromium: a fresh server per page, started as `make app`
   does (`python -m viz_app.serve`, libraries imported before the first visitor) and, for
   comparison, as a bare `streamlit run app.py`; the page is the first one opened (cold Streamlit
   caches; the disk caches of `prepare` in place), timed from navigation until the page is fully
   drawn (title present, no running/skeleton/spinner indicator left); then the same page opened
   again in a new tab of the same server.
2. An upload query: the bytes of a photo → checked and decoded → descriptor of both compared
   models → top-5 in each prepared index → Grad-CAM heatmap of the photo towards its top-1, with
   the models and indexes already loaded (as the app caches them).

Targets (issue 5): first paint < 3 s, upload query < 2 s, on 2 CPU cores. Prints the ratios.
Run: `make bench` or `.venv/bin/python bench/app.py`.
"""
from __future__ import annotations

import io
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.browser import PAGES, serve_app, visit_pages  # noqa: E402

PAINT_TARGET_S = 3.0
UPLOAD_TARGET_S = 2.0


def page_paints(preload: bool) -> dict[str, tuple[float, float]]:
    """{page: (first paint in a fresh server, paint when opened again)} in seconds."""
    times = {}
    for name in PAGES:
        with serve_app(preload=preload) as url:
            cold, warm = visit_pages(url, [name, name])
        if cold.errors or warm.errors:
            raise RuntimeError(f"{name}: error boxes {cold.errors or warm.errors}")
        times[name] = (cold.seconds, warm.seconds)
    return times


def upload_query(repeats: int = 5) -> list[float]:
    from PIL import Image

    from sfrs_core.data.photo import read_photo
    from sfrs_core.explain.heatmaps import compute_heatmap, describe
    from sfrs_core.prepare import prepared_index
    from sfrs_core.retrieval.localize import localize
    from sfrs_core.runs import open_run

    runs = [open_run(ROOT / "assets/demo/sare"), open_run(ROOT / "assets/demo/sfrs")]
    models = [(r.model(r.last_generation).eval(), prepared_index(r, r.last_generation, "test")) for r in runs]
    from sfrs_core.data import load_dataset

    photo_path = load_dataset(runs[0].data)["test"].queries.image_path(0)
    buf = io.BytesIO()
    Image.open(photo_path).convert("RGB").save(buf, "JPEG", quality=92)
    data = buf.getvalue()
    times = []
    for _ in range(repeats + 1):  # the first is a warm-up
        t0 = time.perf_counter()
        photo = read_photo(data, "query.jpg")
        locs = [localize(model, bundle, photo.rgb, k=5, gps=photo.gps) for model, bundle in models]
        model, _ = models[-1]
        size = runs[-1].image_size()
        compute_heatmap(model, photo.rgb, "gradcam", describe(model, locs[-1].matches[0].path, size=size), size=size)
        times.append(time.perf_counter() - t0)
    return times[1:]


def main() -> int:
    print(f"cores: {os.cpu_count()}  (targets: first paint < {PAINT_TARGET_S:.0f} s, upload < {UPLOAD_TARGET_S:.0f} s)")
    served = page_paints(preload=True)  # make app: python -m viz_app.serve
    plain = page_paints(preload=False)  # a bare `streamlit run app.py`
    print(f"{'page':12s} {'make app: first paint':>22s} {'vs target':>10s} {'again':>7s} {'bare streamlit run: first':>27s}")
    for name, (cold, warm) in served.items():
        print(f"{name:12s} {cold:20.2f} s {cold / PAINT_TARGET_S:9.2f}x {warm:5.2f} s {plain[name][0]:25.2f} s")
    times = upload_query()
    med = statistics.median(times)
    print(f"upload query: median {med:.2f} s over {len(times)} runs ({med / UPLOAD_TARGET_S:.2f}x the target), "
          f"min {min(times):.2f} s, max {max(times):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
