"""Paper figures: valid PDF/SVG/PNG, green/red borders, shared colour scales, plotly versions."""
from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest
from matplotlib.colors import to_rgb
from PIL import Image

from sfrs_core import figures as F
from sfrs_core.figures import interactive, style

RNG = np.random.default_rng(0)


def _picture(h: int = 30, w: int = 40, value: int | None = None) -> np.ndarray:
    if value is not None:
        return np.full((h, w, 3), value, np.uint8)
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _soft(k: int = 3, gens: int = 3) -> list[np.ndarray]:
    sims = RNG.normal(size=(k, 9))
    out = []
    for g in range(gens):
        z = np.exp(sims * (g + 1))
        out.append(z / z.sum())
    return out


def _retrieval():
    q = _picture()
    return F.retrieval_grid([q, q], [[_picture(), _picture(50, 40)], [_picture(), Image.fromarray(_picture())]],
                            [[5.0, 120.0], [24.9, 25.1]], row_labels=["SARE", "SFRS"], group_size=2)


def _heatmaps():
    q = [_picture(), _picture()]
    maps = {"SARE": [RNG.random((8, 10)), _picture()], "SFRS": [RNG.random((30, 40)), _picture()]}
    return F.heatmap_grid(q, maps, [_picture(), [_picture(), _picture()]],
                          similarities={"SARE": [0.5, 0.6], "SFRS": [0.7, 0.8]},
                          match_correct=[True, [False, True]], match_captions=["8 m", ["40 m", "3 m"]],
                          colorbar=True, alpha=0.4, cmap="magma")


BUILDERS = {
    "retrieval_grid": _retrieval,
    "retrieval_grid_one_column": lambda: F.retrieval_grid([_picture()], [[_picture()] * 3], [[1.0, 30.0, np.nan]],
                                                          width="one", title="Top-3"),
    "heatmap_grid": _heatmaps,
    "soft_label_evolution": lambda: F.soft_label_evolution(_soft(), [0.07, 0.05, 0.03], ["G1", "G2", "G3"]),
    "soft_label_evolution_stacked": lambda: F.soft_label_evolution(_soft(4, 4), [0.07] * 4, width="one", title="q"),
    "recall_curves": lambda: F.recall_curves(
        {"SARE": {1: 0.78, 5: 0.89, 10: 0.92, 20: 0.95}, "SFRS": {1: 0.82, 5: 0.91, 10: 0.94, 20: 0.955},
         "triplet": {1: 0.7, 5: 0.85, 20: 0.9}}, annotate=True),
    "attention_bars": lambda: F.attention_bars(
        {"SARE": dict(zip(F.SEMANTIC_CLASSES, RNG.dirichlet(np.ones(12)))),
         "SFRS": dict(zip(F.SEMANTIC_CLASSES, RNG.dirichlet(np.ones(12))))}, annotate=True),
}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_every_figure_writes_pdf_svg_png(name, tmp_path):
    fig = BUILDERS[name]()
    dpi = 72
    paths = F.save_figure(fig, tmp_path / f"{name}.pdf", dpi=dpi)  # a format suffix is replaced
    assert [p.name for p in paths] == [f"{name}.pdf", f"{name}.svg", f"{name}.png"]
    pdf, svg, png = paths
    assert pdf.read_bytes().startswith(b"%PDF")
    root = ET.parse(svg).getroot()
    assert root.tag.rsplit("}", 1)[-1] == "svg"
    with Image.open(png) as im:
        w_in, h_in = fig.get_size_inches()
        assert abs(im.size[0] - w_in * dpi) <= 2 and abs(im.size[1] - h_in * dpi) <= 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)  # no temp files left


def test_figure_widths_are_paper_columns():
    assert BUILDERS["retrieval_grid"]().get_size_inches()[0] == pytest.approx(F.TWO_COLUMN_IN)
    assert BUILDERS["recall_curves"]().get_size_inches()[0] == pytest.approx(F.ONE_COLUMN_IN)


def test_figure_bytes_and_paths():
    fig = BUILDERS["recall_curves"]()
    assert F.figure_bytes(fig, "pdf").startswith(b"%PDF")
    assert F.figure_bytes(fig, "png", dpi=50)[:8] == b"\x89PNG\r\n\x1a\n"
    assert ET.fromstring(F.figure_bytes(fig, "svg")).tag.endswith("svg")
    assert F.figure_bytes(fig, "pdf") == F.figure_bytes(fig, "pdf")  # no dates: reproducible bytes
    assert [p.name for p in F.figure_paths("out/recall@N.v2", ("png",))] == ["recall@N.v2.png"]
    with pytest.raises(ValueError, match="unsupported"):
        F.figure_bytes(fig, "doc")


def _pixel(png: bytes, fig, label: str, where: str) -> np.ndarray:
    """RGB of the PNG pixel on the middle of an axes' left or top edge (where the frame is drawn)."""
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    height, width = img.shape[:2]
    ax = next(a for a in fig.axes if a.get_label() == label)
    pos = ax.get_position()
    if where == "left":
        x, y = pos.x0 * width, (1 - (pos.y0 + pos.y1) / 2) * height
    else:
        x, y = (pos.x0 + pos.x1) / 2 * width, (1 - pos.y1) * height
    return img[int(y), int(x)].astype(int)


def _close(rgb: np.ndarray, color: str, tol: int = 12) -> bool:
    return bool(np.abs(rgb - np.round(np.array(to_rgb(color)) * 255)).max() <= tol)


def test_retrieval_borders_green_for_correct_red_for_wrong():
    grey = _picture(value=128)
    fig = F.retrieval_grid([grey], [[grey, grey, grey]], [[3.0, 80.0, 25.0]])
    png = F.figure_bytes(fig, "png", dpi=150)
    for where in ("left", "top"):
        correct = _pixel(png, fig, "retrieved r0 c0", where)
        wrong = _pixel(png, fig, "retrieved r0 c1", where)
        assert _close(correct, F.CORRECT_COLOR), correct
        assert _close(wrong, F.WRONG_COLOR), wrong
        assert correct[1] > correct[0] and wrong[0] > wrong[1]  # green vs red
    assert _close(_pixel(png, fig, "retrieved r0 c2", "left"), F.CORRECT_COLOR)  # 25 m is still correct
    # an explicit verdict wins over the distance
    fig = F.retrieval_grid([grey], [[grey]], [[3.0]], correct=[[False]])
    assert _close(_pixel(F.figure_bytes(fig, "png", dpi=150), fig, "retrieved r0 c0", "left"), F.WRONG_COLOR)


def test_retrieval_grid_text_and_validation():
    fig = BUILDERS["retrieval_grid"]()
    texts = {t.get_text() for ax in fig.axes for t in ax.texts}
    assert {"5.0 m", "120 m", "Query", "Top-1", "Top-2", "SARE", "SFRS"} <= texts
    assert F.format_distance(1234.4) == "1,234 m" and F.format_distance(float("nan")) == "n/a"
    with pytest.raises(ValueError, match="distances"):
        F.retrieval_grid([_picture()], [[_picture()]], [[1.0, 2.0]])


def test_heatmap_grid_overlays_raw_maps():
    fig = _heatmaps()
    labels = {ax.get_label() for ax in fig.axes}
    assert {"query r0", "map SARE r0", "map SFRS r1", "match r1 c1", "colorbar"} <= labels
    texts = {t.get_text() for ax in fig.axes for t in ax.texts}
    assert {"SARE", "SFRS", "s = 0.500", "Match 1", "Match 2"} <= texts
    over = F.overlay_heatmap(_picture(value=0), np.linspace(0, 1, 12).reshape(3, 4), alpha=1.0, cmap="gray")
    assert over.dtype == np.uint8 and over.shape == (30, 40, 3) and over[0, 0, 0] < over[-1, -1, 0]


def test_soft_label_panels_share_one_colour_scale():
    dists = _soft(k=3, gens=4)
    fig = F.soft_label_evolution(dists, [0.1, 0.07, 0.05, 0.03])
    panels = [ax for ax in fig.axes if ax.get_label().startswith("soft")]
    assert len(panels) == 4
    limits = {(ax.images[0].norm.vmin, ax.images[0].norm.vmax) for ax in panels}
    assert len(limits) == 1
    (vmin, vmax), = limits
    assert vmin == 0.0 and vmax == pytest.approx(max(d.max() for d in dists))
    entropy_ax = next(ax for ax in fig.axes if ax.get_label() == "entropy")
    ys = entropy_ax.lines[0].get_ydata()
    assert list(ys) == pytest.approx([F.distribution_entropy(d) for d in dists])
    assert ys[0] > ys[-1]  # sharper distributions, lower entropy
    with pytest.raises(ValueError, match="temperatures"):
        F.soft_label_evolution(dists, [0.1])


def test_palette_is_fixed_for_sare_and_sfrs():
    colors = F.color_map(["runs/sfrs-gen2", "assets/demo/sare", "triplet", "SFRS (gen 3)"])
    assert colors["assets/demo/sare"] == F.SARE_COLOR and colors["runs/sfrs-gen2"] == F.SFRS_COLOR
    assert colors["SFRS (gen 3)"] not in (F.SARE_COLOR, F.SFRS_COLOR)  # a second SFRS run stays distinct
    assert len(set(colors.values())) == 4
    fig = interactive.recall_curves_plotly({"SARE": {1: 50.0}, "SFRS": {1: 60.0}})
    assert [t.line.color for t in fig.data] == [F.SARE_COLOR, F.SFRS_COLOR]
    assert style.label_color("SFRS") == F.SFRS_COLOR and style.label_color("Query") == style.TEXT_COLOR


def test_recall_and_attention_values_in_percent():
    fig = BUILDERS["recall_curves"]()
    ax = fig.axes[0]
    sfrs = next(line for line in ax.lines if line.get_label() == "SFRS")
    assert list(sfrs.get_xdata()) == [1, 5, 10, 20] and sfrs.get_ydata()[0] == pytest.approx(82.0)
    triplet = next(line for line in ax.lines if line.get_label() == "triplet")
    assert list(triplet.get_xdata()) == [1, 5, 20]  # the missing N is left out, not drawn as 0
    fig = F.attention_bars({"SARE": {"sign": 0.25, "tree": 0.75}, "SFRS": {"sign": 60.0, "tree": 40.0}},
                           as_fraction=None)
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert len(heights) == 2 * len(F.SEMANTIC_CLASSES)


def test_plotly_builders_trace_counts():
    res = {"SARE": {1: 0.78, 5: 0.89}, "SFRS": {1: 0.82, 5: 0.91}, "triplet": {1: 0.7, 5: 0.8}}
    assert len(F.recall_curves_plotly(res).data) == 3
    shares = {"SARE": {"sky": 0.2, "sign": 0.8}, "SFRS": {"sky": 0.1, "sign": 0.9}}
    bars = F.attention_bars_plotly(shares)
    assert isinstance(bars, go.Figure) and len(bars.data) == 2 and list(bars.data[0].x) == list(F.SEMANTIC_CLASSES)
    dists = _soft(k=3, gens=4)
    heat = F.soft_label_heatmaps_plotly(dists, [0.1, 0.07, 0.05, 0.03])
    assert len(heat.data) == 4 and all(isinstance(t, go.Heatmap) for t in heat.data)
    assert {t.coloraxis for t in heat.data} == {"coloraxis"}  # one shared colour scale
    assert heat.layout.coloraxis.cmin == 0 and heat.layout.coloraxis.cmax == pytest.approx(max(d.max() for d in dists))
    ent = F.entropy_curve_plotly(F.soft_label_entropies(dists), k=3)
    assert len(ent.data) == 1
    assert len(F.entropy_curve_plotly({"teacher": [3, 2], "student": [2.5, 2.2]}).data) == 2


def test_plotly_to_bytes_png_or_clear_error():
    fig = F.recall_curves_plotly({"SFRS": {1: 0.8, 5: 0.9}})
    assert b"<html" in F.plotly_to_bytes(fig, "html")[:500].lower()
    if not F.static_export_available():
        with pytest.raises(F.StaticExportUnavailable, match="Chrome/Chromium"):
            F.plotly_to_bytes(fig, "png")
        pytest.skip("no Chrome/Chromium here: plotly PNG export not checked")
    try:
        png = F.plotly_to_bytes(fig, "png", scale=1)
    except F.StaticExportUnavailable as exc:  # a browser is there but could not start (sandbox …)
        pytest.skip(f"browser present but kaleido failed: {exc}")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_figures_do_not_touch_global_rcparams():
    import matplotlib

    before = dict(matplotlib.rcParams)
    BUILDERS["recall_curves"]()
    assert dict(matplotlib.rcParams) == before


def test_save_figure_leaves_nothing_on_failure(tmp_path: Path):
    fig = BUILDERS["recall_curves"]()
    with pytest.raises(ValueError):
        F.save_figure(fig, tmp_path / "x", formats=("png", "nope"))
    assert list(tmp_path.iterdir()) == []  # formats are checked before anything is written


def _metrics_log():
    steps = [{"event": "step", "iteration": i, "generation": g, "loss_hard": 1.0 + g, "loss_soft": 0.0 if g == 0 else 2.0}
             for g, its in ((0, range(1, 5)), (1, range(5, 9))) for i in its]
    evals = [{"event": "eval", "split": "val", "iteration": 4, "recall@1": 0.5},
             {"event": "eval", "split": "val", "iteration": 4, "recall@1": 0.5, "final": True},
             {"event": "eval", "split": "test", "iteration": 4, "recall@1": 0.9},
             {"event": "eval", "split": "val", "iteration": 8, "recall@1": 0.75}]
    return steps + evals


def test_smooth_is_a_trailing_mean():
    from sfrs_core.figures import smooth

    assert smooth(np.array([1.0, 2.0, 3.0, 4.0]), 2).tolist() == [1.0, 1.5, 2.5, 3.5]
    assert smooth(np.array([1.0, 5.0]), 1).tolist() == [1.0, 5.0]


def test_training_series_and_curves():
    from sfrs_core.figures import training_curves, training_series
    from sfrs_core.figures.interactive import training_curves_plotly
    from sfrs_core.figures.training import loss_curves

    s = training_series(_metrics_log())
    assert s.generation_starts == [5]
    assert s.eval_iteration.tolist() == [4, 8] and s.eval_recall1.tolist() == [50.0, 75.0]  # val, not final, not test
    curves = loss_curves(s, window=3)
    assert curves["loss_hard"].tolist() == [1, 1, 1, 1, 2, 2, 2, 2]  # no averaging across generations
    assert np.isnan(curves["loss_soft"][:4]).all() and curves["loss_soft"][4:].tolist() == [2, 2, 2, 2]
    fig = training_curves(_metrics_log())
    assert {ax.get_label() for ax in fig.axes} == {"loss", "recall"}
    assert F.figure_bytes(fig, "pdf").startswith(b"%PDF")
    assert [t.name for t in training_curves_plotly(_metrics_log()).data] == ["loss_hard", "loss_soft", "val recall@1"]
    with pytest.raises(ValueError, match="no training steps"):
        training_curves([])


@pytest.mark.parametrize("photos", [True, False])
def test_screen_bytes_crop_like_matplotlibs_tight_savefig(photos):
    """The app's page encoding (sfrs_core.figures.screen_bytes) measures the tight box once instead of
    a second draw: the same crop, pixel for pixel, as savefig(bbox_inches="tight"); JPEG for figures
    with photos, PNG for charts."""
    import matplotlib.pyplot as plt

    from sfrs_core.figures.export import JPEG_QUALITY, SCREEN_DPI, screen_bytes

    def build():
        if photos:
            rng = np.random.default_rng(0)
            image = lambda: rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)  # noqa: E731
            return F.retrieval_grid([image()], [[image(), image()]], [[3.0, 40.0]], row_labels=["SFRS"])
        return F.recall_curves({"SARE": {1: 50.0, 5: 70.0, 10: 80.0}, "SFRS": {1: 60.0, 5: 75.0, 10: 85.0}})

    fig = build()
    data = screen_bytes(fig)
    plt.close(fig)
    fig = build()
    ref = io.BytesIO()
    if photos:
        fig.savefig(ref, format="jpeg", dpi=SCREEN_DPI, bbox_inches="tight", pil_kwargs={"quality": JPEG_QUALITY})
    else:
        fig.savefig(ref, format="png", dpi=SCREEN_DPI, bbox_inches="tight")
    plt.close(fig)
    ours, theirs = Image.open(io.BytesIO(data)), Image.open(ref)
    assert ours.format == ("JPEG" if photos else "PNG")
    assert ours.size == theirs.size
    diff = np.abs(np.asarray(ours.convert("RGB"), dtype=int) - np.asarray(theirs.convert("RGB"), dtype=int))
    assert diff.max() == 0
