"""App responsiveness on the demo data, after `make prepare` (what `make app` does first).

1. First paint of each page in Debian's Chromium: a fresh server per page, started as `make app`
   does (`python -m viz_app.serve`, libraries imported before the first visitor) and, for
   comparison, as a bare `streamlit run app.py`; the page is the first one opened (cold Streamlit
   caches; the disk caches of `make prepare` in place), timed from navigation until the page is
   fully drawn (title present, no running/skeleton/spinner indicator left); then the same page
   opened again in a new tab of the same server. The median of ``--rounds`` (3) fresh servers per
   page, since one paint moves by ±0.5 s on a 2-core machine.
2. An upload query: the bytes of a photo → checked and decoded (reduced for the database's image
   size) → descriptor of both compared models → top-5 in each prepared index → Grad-CAM of the
   photo towards the compared model's top-1 and back (as the Upload page), with the models and
   indexes already loaded (as the app caches them). Done for a 320×240 photo (a demo test query,
   as rendered) and for the same scene as a 12-megapixel 4000×3000 JPEG (the query upscaled with
   PIL), in this one process standing in for the server: median time of each, and the peak memory
   (VmHWM, reset before each photo) above the resident size before it. A third photo, the 12 MP
   JPEG with phone-like sensor noise (a phone's file size, 3–5 MB), shows the decoding cost of a
   real file; then both sizes through one real server in Chromium (upload → page fully drawn,
   the server process's peak memory growth).
3. Agreement of the two sizes: for every demo test query, the top-1 of the 320×240 photo and of
   its 12 MP upscale under each model (same database image), and recall@1 of each.

Targets (issues 5 and 12): first paint < 3 s; upload query < 2 s; the 12 MP photo at most 0.3 s
slower than the 320×240 one, with peak memory growth < 500 MB; top-1 agreement ≥ 90 %; on 2 CPU
cores. Prints the ratios.
Run: `make bench` or `.venv/bin/python bench/app.py` (`--upload-only`: parts 2 and 3 only;
`--no-browser`: part 2 without the real server; `--no-agreement`: no part 3; `--agreement-only`: part 3 only).
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
LARGE_EXTRA_S = 0.3  # the 12 MP photo at most this much slower than the 320×240 one
MEMORY_GROWTH_MB = 500
AGREEMENT = 0.9


def page_paints(preload: bool, rounds: int = 1) -> dict[str, list[tuple[float, float]]]:
    """{page: [(first paint in a fresh server, paint when opened again)] * rounds} in seconds; the
    rounds go over all pages in turn, so a slow moment of the machine does not hit one page only."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in PAGES}
    for _ in range(rounds):
        for name in PAGES:
            with serve_app(preload=preload) as url:
                cold, warm = visit_pages(url, [name, name])
            if cold.errors or warm.errors:
                raise RuntimeError(f"{name}: error boxes {cold.errors or warm.errors}")
            times[name].append((cold.seconds, warm.seconds))
    return times


def _demo():
    """The two demo runs' last generations: [(run, model, prepared test index)] and the test split."""
    from sfrs_core.data import load_dataset
    from sfrs_core.prepare import prepared_index
    from sfrs_core.runs import open_run

    runs = [open_run(ROOT / "assets/demo/sare"), open_run(ROOT / "assets/demo/sfrs")]
    loaded = [(r, r.model(r.last_generation).eval(), prepared_index(r, r.last_generation, "test")) for r in runs]
    return loaded, load_dataset(runs[0].data)["test"]


def twelve_megapixels(path, noise: float = 0.0) -> bytes:
    """A demo photo upscaled with PIL to a 4000×3000 JPEG (quality 92); ``noise``: the standard
    deviation of Gaussian sensor noise added (grey levels), for a phone-like file size."""
    import numpy as np
    from PIL import Image

    img = Image.open(path).convert("RGB").resize((4000, 3000), Image.BICUBIC)
    if noise:
        arr = np.asarray(img, dtype=np.float32)
        arr += np.random.default_rng(0).normal(0.0, noise, arr.shape).astype(np.float32)
        img = Image.fromarray(arr.clip(0, 255).astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=92)
    return buf.getvalue()


def _upload(loaded, data: bytes, name: str) -> tuple[float, float]:
    """One upload as the Upload page does it: (its seconds, the seconds of decoding the photo)."""
    from sfrs_core.data.photo import read_photo
    from sfrs_core.explain.heatmaps import compare_heatmaps
    from sfrs_core.retrieval.localize import localize

    t0 = time.perf_counter()
    sizes = [bundle.image_size for _, _, bundle in loaded]
    photo = read_photo(data, name, size=tuple(max(s[i] for s in sizes) for i in (0, 1)))
    decoded = time.perf_counter() - t0
    locs = [localize(model, bundle, photo, k=5, gps=photo.gps) for _, model, bundle in loaded]
    _, model, bundle = loaded[-1]
    compare_heatmaps({"m": model}, photo.rgb, locs[-1].matches[0].path, "gradcam", bundle.image_size)
    return time.perf_counter() - t0, decoded


def _memory(pid: int | str = "self") -> tuple[int, int]:
    """(resident, peak resident) bytes of a process (Linux)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def _reset_peak(pid: int | str = "self") -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux >= 4.0)


def upload_query(loaded, photos: dict[str, bytes], repeats: int = 9) -> dict[str, tuple[list[float], list[float], int]]:
    """{photo: (seconds of each upload, seconds of its decoding, peak memory growth in bytes)}.

    A warm-up upload first; then the photos take turns, ``repeats`` rounds, so that a load on
    the machine that comes and goes weighs on each photo alike. The memory growth of a photo is
    the most its uploads raised the peak resident size above the resident size just before."""
    import gc

    _upload(loaded, next(iter(photos.values())), "warm-up.jpg")
    out = {name: ([], [], 0) for name in photos}
    for _ in range(repeats):
        for name, data in photos.items():
            gc.collect()
            before, _ = _memory()
            _reset_peak()
            seconds, decoded = _upload(loaded, data, name)
            times, decodes, growth = out[name]
            out[name] = (times + [seconds], decodes + [decoded], max(growth, _memory()[1] - before))
    return out


def _server_pid(url: str) -> int:
    """The pid of the Streamlit server (started by ``serve_app``) listening at ``url``."""
    port = url.rsplit(":", 1)[1]
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"--server.port" in cmd and cmd[cmd.index(b"--server.port") + 1] == port.encode():
                return int(proc.name)
    raise RuntimeError(f"no server process found for {url}")


def upload_in_browser(photos: dict[str, Path], repeats: int = 3) -> dict[str, tuple[list[float], int]]:
    """Each photo uploaded ``repeats`` times through one real server (demo runs only) in Chromium:
    {photo: (seconds from the upload to the page fully drawn, the server's peak memory growth)}."""
    from tests.browser import upload_photo

    out = {}
    with serve_app(env={"SFRS_STUDIO_RUN_DIRS": str(ROOT / "assets/demo")}, preload=True) as url:
        pid = _server_pid(url)
        upload_photo(url, next(iter(photos.values())))  # warm-up: models, indexes, the page's caches
        for name, path in photos.items():
            before, _ = _memory(pid)
            _reset_peak(pid)
            times = []
            for _ in range(repeats):
                visit = upload_photo(url, path)
                if visit.errors or len(visit.metrics) != 2:
                    raise RuntimeError(f"{name}: upload failed: {visit.errors or visit.metrics}")
                times.append(visit.seconds)
            out[name] = (times, _memory(pid)[1] - before)
    return out


def size_agreement(loaded, split) -> list[tuple[str, int, int, int, int]]:
    """Per model: (name, queries, same top-1 for the 320×240 and the 12 MP photo, right at 1 for
    each: within 25 m)."""
    from sfrs_core.data.photo import read_photo
    from sfrs_core.retrieval.localize import localize

    n = len(split.queries)
    same, right_small, right_large = [0] * len(loaded), [0] * len(loaded), [0] * len(loaded)
    for q in range(n):
        path = split.queries.image_path(q)
        big = twelve_megapixels(path)
        for j, (_, model, bundle) in enumerate(loaded):
            small = localize(model, bundle, read_photo(Path(path).read_bytes(), "q.jpg", size=bundle.image_size), k=1)
            large = localize(model, bundle, read_photo(big, "q12mp.jpg", size=bundle.image_size), k=1)
            a, b = small.matches[0].db_index, large.matches[0].db_index
            same[j] += a == b
            right_small[j] += _within(split, q, a)
            right_large[j] += _within(split, q, b)
    return [(r.name, n, same[j], right_small[j], right_large[j]) for j, (r, _, _) in enumerate(loaded)]


def _within(split, q: int, db: int, radius_m: float = 25.0) -> bool:
    import math

    (qe, qn), (de, dn) = split.queries.utm[q], split.database.utm[db]
    return math.hypot(qe - de, qn - dn) <= radius_m


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upload-only", action="store_true", help="only the upload timings and the size agreement")
    parser.add_argument("--no-browser", action="store_true", help="no upload through a real server in Chromium")
    parser.add_argument("--no-agreement", action="store_true", help="no top-1 agreement of the two photo sizes")
    parser.add_argument("--agreement-only", action="store_true", help="only the top-1 agreement of the two photo sizes")
    parser.add_argument("--rounds", type=int, default=3, help="fresh servers per page for the first paint (median)")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}  (targets: first paint < {PAINT_TARGET_S:.0f} s, upload < {UPLOAD_TARGET_S:.0f} s, "
          f"12 MP at most {LARGE_EXTRA_S} s slower, memory growth < {MEMORY_GROWTH_MB} MB, "
          f"top-1 agreement >= {AGREEMENT:.0%})")
    if not args.upload_only:
        served = page_paints(preload=True, rounds=args.rounds)  # make app: python -m viz_app.serve
        plain = page_paints(preload=False)  # a bare `streamlit run app.py`
        print(f"first paint: median of {args.rounds} fresh server(s) per page [min-max]")
        print(f"{'page':12s} {'make app: first paint':>30s} {'vs target':>10s} {'again':>7s} "
              f"{'bare streamlit run: first':>27s}")
        for name, rounds in served.items():
            cold = statistics.median(c for c, _ in rounds)
            warm = statistics.median(w for _, w in rounds)
            spread = f"[{min(c for c, _ in rounds):.2f}-{max(c for c, _ in rounds):.2f}]"
            print(f"{name:12s} {cold:15.2f} s {spread:>13s} {cold / PAINT_TARGET_S:9.2f}x {warm:5.2f} s "
                  f"{plain[name][0][0]:25.2f} s")

    loaded, split = _demo()
    if args.agreement_only:
        return _print_agreement(loaded, split)
    query = Path(split.queries.image_path(0))
    photos = {"320x240 (demo query)": query.read_bytes(), "4000x3000 (12 MP, upscaled)": twelve_megapixels(query),
              "4000x3000 (12 MP, + sensor noise)": twelve_megapixels(query, noise=4.0)}
    timed = upload_query(loaded, photos)
    print(f"upload query (decode, both models' descriptors and top-5, Grad-CAM both ways), in this process, "
          f"resident {_memory()[0] / 1e6:.0f} MB with the models and indexes loaded:")
    for name, (times, decodes, growth) in timed.items():
        med = statistics.median(times)
        print(f"  {name:34s} {len(photos[name]) / 1e6:5.2f} MB  median {med:.2f} s ({med / UPLOAD_TARGET_S:.2f}x "
              f"the target), min {min(times):.2f} s, max {max(times):.2f} s, of which decoding "
              f"{statistics.median(decodes) * 1000:.0f} ms; peak memory growth {growth / 1e6:.0f} MB")
    small, *large = (statistics.median(t) for t, _, _ in timed.values())
    (d_small, *d_large) = (statistics.median(d) for _, d, _ in timed.values())
    print(f"  12 MP minus 320x240: {large[0] - small:+.2f} s (upscaled), {large[1] - small:+.2f} s (noisy); decoding "
          f"alone {(d_large[0] - d_small) * 1000:+.0f} ms, {(d_large[1] - d_small) * 1000:+.0f} ms; "
          f"target at most +{LARGE_EXTRA_S} s")

    if not args.no_browser:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            files = {}
            for name, data in list(photos.items())[:2]:
                files[name] = Path(tmp) / ("small.jpg" if name.startswith("320") else "large.jpg")
                files[name].write_bytes(data)
            shown = upload_in_browser(files)
        print("upload through one real server in Chromium (file chosen → page fully drawn: grid, map, Grad-CAM):")
        for name, (times, growth) in shown.items():
            print(f"  {name:34s} median {statistics.median(times):.2f} s (min {min(times):.2f}, max {max(times):.2f}); "
                  f"server peak memory growth {growth / 1e6:.0f} MB")

    return 0 if args.no_agreement else _print_agreement(loaded, split)


def _print_agreement(loaded, split) -> int:
    print("top-1 of each demo test query as its 320x240 photo and as a 12 MP upscale (same database image):")
    for name, n, same, right_small, right_large in size_agreement(loaded, split):
        print(f"  {name:6s} agreement {same}/{n} = {same / n:.1%} (target {AGREEMENT:.0%}); recall@1 "
              f"{right_small / n:.1%} (320x240) vs {right_large / n:.1%} (12 MP)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
