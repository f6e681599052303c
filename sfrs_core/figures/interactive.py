"""Plotly versions of the charts for the app (same palette and fonts as the paper figures).

Static export of a plotly figure goes through kaleido, which (1.x) drives a Chrome/Chromium; where
none is installed :func:`plotly_to_bytes` raises :class:`StaticExportUnavailable` and the
matplotlib builders (always vector, no browser) are the way to a file.
"""
from __future__ import annotations

import contextlib
import shutil
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .curves import attention_table, recall_table
from .softlabels import check_distributions, distribution_entropy, shared_scale
from .training import LOSS_COLORS, loss_curves, training_series
from .style import MUTED_TEXT, SFRS_COLOR, PLOTLY_SEQUENTIAL, REGION_LABELS, color_map, marker_map, plotly_template

PLOTLY_FORMATS: tuple[str, ...] = ("png", "svg", "pdf", "jpeg", "webp", "html")
_SYMBOLS = {"o": "circle", "s": "square", "^": "triangle-up", "D": "diamond", "v": "triangle-down",
            "P": "cross", "X": "x", "<": "triangle-left", ">": "triangle-right"}
_BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


class StaticExportUnavailable(RuntimeError):
    """Plotly static export needs Chrome/Chromium (kaleido 1.x) and none was found or it failed."""


def _layout(fig: go.Figure, title: str | None, height: int | None) -> go.Figure:
    fig.update_layout(template=plotly_template(), title={"text": title} if title else None, height=height)
    return fig


def recall_curves_plotly(results: Mapping[str, Mapping[int, float]], *, ns: Sequence[int] | None = None,
                         as_fraction: bool | None = None, title: str | None = None,
                         height: int | None = 380) -> go.Figure:
    """Recall@N (%) against N, one ``Scatter`` trace per run, SARE/SFRS in their colours."""
    ns, table = recall_table(results, ns, as_fraction)
    colors, markers = color_map(table), marker_map(table)
    fig = go.Figure()
    for name, vals in table.items():
        fig.add_trace(go.Scatter(
            x=ns, y=vals, mode="lines+markers", name=name, connectgaps=True,
            line={"color": colors[name], "width": 2.2},
            marker={"symbol": _SYMBOLS.get(markers[name], "circle"), "size": 8, "color": colors[name]},
            hovertemplate=f"{name}<br>recall@%{{x}} = %{{y:.2f}} %<extra></extra>",
        ))
    fig.update_xaxes(title_text="N (number of retrieved images)", tickmode="array", tickvals=ns)
    fig.update_yaxes(title_text="recall@N (%)", ticksuffix="")
    return _layout(fig, title, height)


def attention_bars_plotly(shares: Mapping[str, Mapping[str, float]], *, classes: Sequence[str] | None = None,
                          errors: Mapping[str, Mapping[str, float]] | None = None, as_fraction: bool | None = None,
                          title: str | None = None, height: int | None = 380) -> go.Figure:
    """Grouped bars: share of attention (%) per semantic class, one ``Bar`` trace per model."""
    classes, table = attention_table(shares, classes, as_fraction)
    err_table = attention_table(errors, classes, as_fraction)[1] if errors else {}
    colors = color_map(table)
    fig = go.Figure()
    for model, vals in table.items():
        err = err_table.get(model)
        fig.add_trace(go.Bar(
            x=classes, y=vals, name=model, marker_color=colors[model],
            error_y={"type": "data", "array": err, "thickness": 1, "width": 2} if err is not None else None,
            hovertemplate=f"{model}<br>%{{x}}: %{{y:.1f}} %<extra></extra>",
        ))
    fig.update_layout(barmode="group", bargap=0.2, bargroupgap=0.05)
    fig.update_yaxes(title_text="share of attention (%)", rangemode="tozero")
    return _layout(fig, title, height)


def soft_label_heatmaps_plotly(distributions: Sequence[np.ndarray], temperatures: Sequence[float],
                               generation_labels: Sequence[str] | None = None, *,
                               positive_labels: Sequence[str] | None = None,
                               region_labels: Sequence[str] = REGION_LABELS, title: str | None = None,
                               height: int | None = None) -> go.Figure:
    """One ``Heatmap`` per generation (positives × regions) side by side on one shared colour
    axis (``coloraxis``, cmin 0 … cmax the largest value)."""
    stack, temps, labels = check_distributions(distributions, temperatures, generation_labels, len(region_labels))
    n_gen, k, _ = stack.shape
    pos = list(positive_labels) if positive_labels is not None else [f"p{i + 1}" for i in range(k)]
    vmin, vmax = shared_scale(stack)
    fig = make_subplots(rows=1, cols=n_gen, shared_yaxes=True, horizontal_spacing=0.02,
                        subplot_titles=[f"{lab} (τ = {t:.3g})" for lab, t in zip(labels, temps)])
    for g in range(n_gen):
        fig.add_trace(go.Heatmap(
            z=stack[g], x=list(region_labels), y=pos, coloraxis="coloraxis", xgap=1, ygap=1,
            hovertemplate=f"{labels[g]}<br>%{{y}} · %{{x}}: %{{z:.4f}}<extra></extra>",
        ), row=1, col=g + 1)
    fig.update_yaxes(autorange="reversed", showgrid=False, showline=False, ticks="")
    fig.update_xaxes(showline=False, ticks="", tickangle=-90)
    fig.update_layout(coloraxis={"colorscale": PLOTLY_SEQUENTIAL, "cmin": vmin, "cmax": vmax,
                                     "colorbar": {"title": {"text": "soft label"}, "thickness": 12}})
    return _layout(fig, title, height or (110 + 28 * k))


def entropy_curve_plotly(entropies: Sequence[float] | Mapping[str, Sequence[float]],
                         generation_labels: Sequence[str] | None = None, *, k: int | None = None,
                         n_regions: int = len(REGION_LABELS), title: str | None = None,
                         height: int | None = 320) -> go.Figure:
    """Entropy (nats) per generation: one ``Scatter`` trace per series (a list, or a dict
    ``{name: list}`` e.g. teacher/student or SARE/SFRS). With ``k`` a dashed line marks the
    uniform entropy ln(9k) (a layout shape, not a trace)."""
    series = dict(entropies) if isinstance(entropies, Mapping) else {"SFRS": list(entropies)}
    n = max(len(v) for v in series.values())
    labels = list(generation_labels) if generation_labels is not None else [f"Gen {i + 1}" for i in range(n)]
    colors = color_map(series)
    fig = go.Figure()
    for name, vals in series.items():
        fig.add_trace(go.Scatter(x=labels[: len(vals)], y=list(vals), mode="lines+markers", name=name,
                                 line={"color": colors[name], "width": 2.2}, marker={"size": 8},
                                 hovertemplate=f"{name}<br>%{{x}}: %{{y:.3f}} nats<extra></extra>"))
    if k:
        uniform = float(np.log(k * n_regions))
        fig.add_hline(y=uniform, line={"color": MUTED_TEXT, "dash": "dash", "width": 1},
                      annotation_text="uniform", annotation_position="bottom right")
    fig.update_xaxes(title_text="generation", type="category")
    fig.update_yaxes(title_text="entropy (nats)", rangemode="tozero")
    return _layout(fig, title, height)


def training_curves_plotly(metrics: Sequence[Mapping], *, window: int = 15, title: str | None = None,
                           height: int | None = 320) -> go.Figure:
    """Plotly version of :func:`~sfrs_core.figures.training.training_curves`: losses and val recall@1."""
    s = training_series(metrics)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss (moving average)", "val recall@1 (%)"))
    for name, curve in loss_curves(s, window).items():
        fig.add_trace(go.Scatter(x=s.iteration, y=curve, name=name, mode="lines",
                                 line={"color": LOSS_COLORS[name], "width": 2}), row=1, col=1)
    fig.add_trace(go.Scatter(x=s.eval_iteration, y=s.eval_recall1, name="val recall@1", mode="lines+markers",
                             line={"color": SFRS_COLOR, "width": 2}, showlegend=False), row=1, col=2)
    for x in s.generation_starts:
        for col in (1, 2):
            fig.add_vline(x=x, line={"color": MUTED_TEXT, "dash": "dot", "width": 1}, row=1, col=col)
    fig.update_xaxes(title_text="iteration")
    return _layout(fig, title, height)


def soft_label_entropies(distributions: Sequence[np.ndarray]) -> list[float]:
    """Entropy (nats) of each generation's k×9 distribution."""
    return [distribution_entropy(d) for d in distributions]


def find_browser() -> str | None:
    """Path of a Chrome/Chromium kaleido can drive (``BROWSER_PATH`` first), or None."""
    path = None
    with contextlib.suppress(Exception):  # choreographer missing or changed: fall back to PATH
        from choreographer.browsers.chromium import Chromium

        path = Chromium.find_browser(skip_local=False)
    if path:
        return str(path)
    for name in _BROWSER_NAMES:
        if path := shutil.which(name):
            return path
    return None


def static_export_available() -> bool:
    """Whether :func:`plotly_to_bytes` can make PNG/SVG/PDF here (a browser is installed)."""
    return find_browser() is not None


def plotly_to_bytes(fig: go.Figure, fmt: str = "png", *, scale: float = 2.0,
                    width: int | None = None, height: int | None = None) -> bytes:
    """The plotly figure as ``fmt`` bytes: ``"html"`` always (self-contained, plotly.js from CDN),
    ``"png"``/``"svg"``/``"pdf"``/``"jpeg"``/``"webp"`` through kaleido.

    Raises :class:`StaticExportUnavailable` when no Chrome/Chromium is installed (kaleido 1.x
    needs one: ``apt-get install chromium`` or set ``BROWSER_PATH``) or when kaleido fails;
    use the matplotlib figures and :func:`sfrs_core.figures.figure_bytes` instead.
    """
    fmt = fmt.lower().lstrip(".")
    if fmt == "jpg":
        fmt = "jpeg"
    if fmt not in PLOTLY_FORMATS:
        raise ValueError(f"unsupported plotly format {fmt!r}; use one of {', '.join(PLOTLY_FORMATS)}")
    if fmt == "html":
        return fig.to_html(include_plotlyjs="cdn", full_html=True).encode()
    if not static_export_available():
        raise StaticExportUnavailable(
            f"cannot export a plotly figure as {fmt.upper()}: kaleido needs Chrome/Chromium and none was found "
            "(install one, e.g. `apt-get install chromium`, or set BROWSER_PATH); the matplotlib figures "
            "(sfrs_core.figures.figure_bytes / save_figure) write PDF, SVG and PNG without a browser"
        )
    try:
        return fig.to_image(format=fmt, scale=scale, width=width, height=height)
    except Exception as exc:  # kaleido/choreographer errors: browser failed to start, timeout …
        raise StaticExportUnavailable(f"kaleido could not export the plotly figure as {fmt.upper()}: {exc}") from exc
