"""The Streamlit pages driven by AppTest on a tiny SARE/SFRS pair (no browser)."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from sfrs_core.data.vpr_folder import read_vpr_folder
from sfrs_core.runs import open_run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def app_env(tiny_runs, monkeypatch):
    monkeypatch.setenv("SFRS_STUDIO_RUN_DIRS", str(tiny_runs))
    return tiny_runs


def _run(path: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / path), default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_overview_lists_runs_and_their_recall(app_env):
    at = _run("pages/overview.py")
    table = at.dataframe[0].value
    assert set(table["run"]) == {"tiny-sare", "tiny-sfrs"}
    sfrs_gen1 = table[(table["run"] == "tiny-sfrs") & (table["generation"] == 1)]
    expected = open_run(app_env / "tiny-sfrs").recall("test", 1)[1]
    assert float(sfrs_gen1["R@1"].iloc[0]) == pytest.approx(100 * expected, abs=0.05)
    assert len(at.metric) == 2
    assert [b.label for b in at.get("download_button")] == ["PNG", "SVG", "PDF"]


def test_overview_without_runs_says_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.setenv("SFRS_STUDIO_RUN_DIRS", str(tmp_path))
    at = _run("pages/overview.py")
    assert "No trained runs found" in at.info[0].value


def test_retrieval_page_shows_both_models_and_filters(app_env):
    at = _run("pages/retrieval.py")
    assert len(at.markdown) >= 2 and "SARE" in at.markdown[0].value and "SFRS" in at.markdown[1].value
    at.selectbox(key="ret_group").select_index(1).run()  # an outcome list
    assert not at.exception
    at.selectbox(key="ret_group").select_index(0).run()  # back to all queries
    at.multiselect(key="ret_cond").set_value(["night"]).run()
    assert not at.exception
    data = open_run(app_env / "tiny-sfrs").data
    conditions = read_vpr_folder(data)["test"].queries.condition
    q = at.selectbox(key="ret_query").value
    assert conditions[q].startswith("night")
    offered = [int(o) for o in at.selectbox(key="ret_query").options]
    assert offered and all(conditions[o].startswith("night") for o in offered)
