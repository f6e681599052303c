"""The Streamlit pages driven by AppTest on a tiny SARE/SFRS pair (no browser)."""
from __future__ import annotations

import pytest

from sfrs_core.data.vpr_folder import read_vpr_folder
from sfrs_core.runs import open_run
from tests.apptest import run_page


def test_overview_lists_runs_and_their_recall(app_env):
    at = run_page("viz_app/app_pages/overview.py")
    table = at.dataframe[0].value
    assert set(table["run"]) == {"tiny-sare", "tiny-sfrs"}
    sfrs_gen1 = table[(table["run"] == "tiny-sfrs") & (table["generation"] == 1)]
    expected = open_run(app_env / "tiny-sfrs").recall("test", 1)[1]
    assert float(sfrs_gen1["R@1"].iloc[0]) == pytest.approx(100 * expected, abs=0.05)
    assert len(at.metric) == 2
    assert [b.label for b in at.get("download_button")] == ["PNG", "SVG", "PDF"]


def test_overview_without_runs_says_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.setenv("SFRS_STUDIO_RUN_DIRS", str(tmp_path))
    at = run_page("viz_app/app_pages/overview.py")
    assert "No trained runs found" in at.info[0].value


def test_retrieval_page_shows_both_models_and_filters(app_env):
    at = run_page("viz_app/app_pages/retrieval.py")
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
    for _ in range(3):  # a random pick stays within the filtered queries
        at.button(key="ret_random").click().run()
        assert not at.exception, [e.value for e in at.exception]
        assert int(at.selectbox(key="ret_query").value) in offered


def test_every_page_is_reachable_through_the_navigation(app_env):
    import threading

    import torch

    from viz_app.serve import TORCH_THREADS

    at = run_page("app.py")
    assert at.title[0].value == "SFRS Studio"
    seen = []  # what a new script thread of the server gets (the setting is per thread in OpenMP)
    thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    assert seen == [TORCH_THREADS]  # the server's one torch thread (viz_app.serve)
    for page in ("retrieval", "heatmaps", "soft_labels"):
        at.switch_page(f"viz_app/app_pages/{page}.py").run()
        assert not at.exception, (page, [e.value for e in at.exception])


def test_heatmaps_page_compares_both_models_for_each_method(app_env):
    at = run_page("viz_app/app_pages/heatmaps.py")
    assert at.radio(key="hm_method").options == ["Grad-CAM (similarity)", "Exact decomposition", "Activation"]
    whole_pending = any(b.key == "hm_whole" for b in at.button)
    assert len(at.get("image")) == (2 if whole_pending else 3)  # comparison, this query's bars, the split's bars
    for method in ("decomp", "activation"):
        at.radio(key="hm_method").set_value(method).run()
        assert not at.exception, [e.value for e in at.exception]
    at.selectbox(key="hm_cmap").set_value("viridis").run()
    at.slider(key="hm_opacity").set_value(0.8).run()
    assert not at.exception
    # the whole-split bars: computed on demand (activation is not prepared), then cached on disk
    from sfrs_core.prepare import cached_attention

    run = open_run(app_env / "tiny-sfrs")
    compute = [b for b in at.button if b.key == "hm_whole"]
    if compute:
        compute[0].click().run()
        assert not at.exception, [e.value for e in at.exception]
    summary = cached_attention(run, run.last_generation, "test", "activation")
    assert summary is not None and sum(summary["shares"].values()) == pytest.approx(1.0)
    assert not [b for b in at.button if b.key == "hm_whole"]
    assert len(at.get("image")) == 3  # the comparison, the bars of this query and of the whole split


def test_soft_labels_page_shows_snapshots_entropy_and_training_curves(app_env):
    import numpy as np

    from sfrs_core.explain.soft_labels import load_snapshots

    at = run_page("viz_app/app_pages/soft_labels.py")
    snaps = load_snapshots(app_env / "tiny-sfrs")
    assert len(at.selectbox(key="sl_query").options) == len(snaps[0].queries)
    assert at.select_slider(key="sl_gen").value == snaps[-1].generation
    d = snaps[-1].distributions[0].ravel()
    expected = -(d * np.log(d)).sum()  # entropy of query 0's soft labels, by hand
    assert any(f"entropy {expected:.2f} nats" in m.value for m in at.markdown)
    means = [m.value for m in at.metric]
    assert means == [f"{s.entropy.mean():.2f}" for s in snaps]  # mean entropy per generation
    at.select_slider(key="sl_gen").set_value(snaps[0].generation).run()
    assert not at.exception
    finals = at.table[0].value
    test_last = finals[(finals["split"] == "test") & (finals["generation"] == 1)]
    assert float(test_last["R@1"].iloc[0]) == pytest.approx(
        100 * open_run(app_env / "tiny-sfrs").recall("test", 1)[1], abs=0.05)


def test_overview_exports_the_paper_figures_as_a_zip(app_env):
    import io
    import zipfile

    at = run_page("viz_app/app_pages/overview.py")
    at.button(key="export_go").click().run(timeout=300)
    assert not at.exception, [e.value for e in at.exception]
    kind, data = at.session_state["export_zip"]
    names = set(zipfile.ZipFile(io.BytesIO(data)).namelist())
    for stem in ("recall_curves", "retrieval_grid", "heatmaps_decomp", "soft_label_evolution", "attention_decomp"):
        assert {f"{stem}.pdf", f"{stem}.svg", f"{stem}.png"} <= names, stem
    assert "summary.json" in names
    assert any(b.label.startswith("Download sfrs_figures.zip") for b in at.get("download_button"))
