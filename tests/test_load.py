"""The load test (``bench/load.py``): its websocket visitor against a real server, and (slow) the
test itself: 20 visitors for 2 minutes while a training runs."""
from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.load import DEMO_DATA, DEMO_RUNS, Visitor, act, app_server, photos, run_load_test  # noqa: E402
from sfrs_core.runs import open_run  # noqa: E402


def test_a_visitor_opens_pages_picks_queries_and_uploads_like_a_browser(tiny_runs, tiny_city):
    """Streamlit's protocol as a browser speaks it: the picked query is the one the page then
    describes (its top-1 distances as in the run's stored results), and an uploaded photo is
    localized by both models."""
    pics = photos(tiny_city)
    sfrs = open_run(tiny_runs / "tiny-sfrs")
    results = sfrs.results("test", sfrs.last_generation)

    async def visit(url: str):
        v = Visitor(url)
        await v.connect()
        try:
            overview = await act(v, "page:", pics, random.Random(0))
            picks = [await act(v, "pick:retrieval", pics, random.Random(seed)) for seed in (1, 2)]
            upload = await act(v, "upload:12mp.jpg", pics, random.Random(0))
        finally:
            await v.close()
        return overview, picks, upload

    with app_server({"SFRS_STUDIO_RUN_DIRS": str(tiny_runs)}) as (url, _):
        overview, picks, upload = asyncio.run(visit(url))

    assert overview.errors == [] and any("Overview" in t or "recall" in t.lower() for t in overview.texts)
    for pick, seed in zip(picks, (1, 2)):
        assert pick.errors == []
        picker = next(i for (k, label), i in pick.widgets.items() if k == "selectbox" and label == "Query id")
        q = int(random.Random(seed).choice(pick.options[picker]))  # what act() chose
        verdict = next(t for t in pick.texts if t.startswith("**SFRS"))
        assert f"{results.distances_m[q, 0]:.1f} m away" in verdict, (q, verdict)
    assert upload.errors == []
    metrics = [t for t in upload.texts if t.endswith(("top-1 similarity", "top-1 error"))]
    assert [m.split(" · ")[1] for m in metrics] == ["tiny-sare", "tiny-sfrs"], upload.texts  # one per model


@pytest.mark.slow
@pytest.mark.skipif(not (DEMO_DATA / "synthcity.json").is_file(), reason="needs the demo SynthCity (make demo-data)")
def test_twenty_visitors_for_two_minutes_while_a_training_runs():
    """Issue 12's load test on the shipped demo runs: no error, no action's median slower than 3×
    its idle time, server memory flat between the two halves (``bench/load.py`` prints the table)."""
    report = run_load_test(sessions=20, minutes=2.0, runs=DEMO_RUNS, data=DEMO_DATA)
    print(report.table(3.0))
    assert report.failures == []
