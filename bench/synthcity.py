"""SynthCity rendering speed: images per second for a preset, one worker vs all workers.

    python bench/synthcity.py [--preset demo] [--workers N]

Renders the whole preset into a temporary folder (then deletes it) and prints the time and
images/s, with the 3-minute target of the demo preset for comparison.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sfrs_core.data.synthcity import generate, plan_views, preset  # noqa: E402
from sfrs_core.data.synthcity.city import build_city  # noqa: E402
from sfrs_core.data.synthcity.generate import encode_view  # noqa: E402
from sfrs_core.data.synthcity.render import render_view  # noqa: E402

TARGET_S = {"demo": 180.0}


def single_view_rate(name: str, n: int = 60) -> tuple[float, float]:
    """Views/s of render alone and render+encode, one process, over ``n`` planned views."""
    cfg = preset(name)
    city = build_city(cfg)
    jobs = plan_views(cfg, city)[:: max(1, len(plan_views(cfg, city)) // n)][:n]
    t0 = time.perf_counter()
    frames = [render_view(city[j.split], j.pose, cfg) for j in jobs]
    t1 = time.perf_counter()
    for rgb, lab in frames:
        encode_view(rgb, lab, cfg.jpeg_quality)
    t2 = time.perf_counter()
    return len(jobs) / (t1 - t0), len(jobs) / (t2 - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    args = parser.parse_args()
    cfg = preset(args.preset)
    total = len(plan_views(cfg))
    render_rate, encode_rate = single_view_rate(args.preset)
    print(f"preset {args.preset}: {total} images at {cfg.width}x{cfg.height}, {os.cpu_count()} cores")
    print(f"  one process : {render_rate:6.1f} img/s render only, {encode_rate:6.1f} img/s render+encode")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        generate(cfg, Path(tmp) / "city", workers=args.workers, progress=False)
        elapsed = time.perf_counter() - t0
    print(f"  full preset : {elapsed:6.1f} s with {args.workers} workers = {total / elapsed:6.1f} img/s (written to disk)")
    if args.preset in TARGET_S:
        target = TARGET_S[args.preset]
        print(f"  target      : {target:6.1f} s  -> {elapsed / target:.2f}x of the budget ({'OK' if elapsed <= target else 'OVER'})")


if __name__ == "__main__":
    main()
