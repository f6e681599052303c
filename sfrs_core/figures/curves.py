"""Line and bar charts: recall@N of several runs, attention share by semantic class."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import offset_copy

from .style import (
    SEMANTIC_CLASSES,
    SMALL_SIZE,
    TITLE_SIZE,
    Width,
    as_percent,
    color_map,
    figure_width,
    marker_map,
    new_figure,
    paper_rc,
    style_axes,
)

RECALL_NS: tuple[int, ...] = (1, 5, 10, 20)


def recall_table(results: Mapping[str, Mapping[int, float]], ns: Sequence[int] | None = None,
                 as_fraction: bool | None = None) -> tuple[list[int], dict[str, np.ndarray]]:
    """The N values (default: those any run has, else 1/5/10/20) and each run's recall in % at them
    (NaN where a run lacks an N). Fractions (all values in [0, 1]) are scaled to %."""
    if not results:
        raise ValueError("need at least one run's recall values")
    cleaned = {name: {int(n): float(v) for n, v in vals.items()} for name, vals in results.items()}
    if ns is None:
        ns = sorted({n for vals in cleaned.values() for n in vals}) or list(RECALL_NS)
    ns = [int(n) for n in ns]
    factor = as_percent([v for vals in cleaned.values() for v in vals.values()], as_fraction)
    table = {name: np.array([vals.get(n, np.nan) * factor for n in ns], dtype=float) for name, vals in cleaned.items()}
    return ns, table


def recall_curves(
    results: Mapping[str, Mapping[int, float]],
    *,
    ns: Sequence[int] | None = None,
    as_fraction: bool | None = None,
    width: Width = "one",
    height: float | None = None,
    title: str | None = None,
    annotate: bool = False,
) -> Figure:
    """Recall@N (%) against N, one line per run (``{run: {N: recall}}``; fractions or %).

    SARE/SFRS runs get their fixed colours and markers; ``annotate`` writes the value at the
    largest N. One axes labelled ``"recall"``.
    """
    ns, table = recall_table(results, ns, as_fraction)
    colors, markers = color_map(table), marker_map(table)
    w = figure_width(width)
    with paper_rc():
        fig = new_figure(w, height or max(1.9, 0.68 * w), layout="constrained")
        ax = style_axes(fig.add_subplot(label="recall"), grid="y")
        for name, vals in table.items():
            ok = np.isfinite(vals)
            ax.plot(np.asarray(ns)[ok], vals[ok], marker=markers[name], color=colors[name], label=name,
                    markeredgewidth=0, clip_on=False, zorder=3)
        ax.set_xticks(ns, [str(n) for n in ns])
        span = max(ns) - min(ns) or 1
        ax.set_xlim(min(ns) - 0.03 * span, max(ns) + (0.12 if annotate else 0.03) * span)
        finite = np.concatenate([v[np.isfinite(v)] for v in table.values()])
        lo = float(finite.min()) if finite.size else 0.0
        hi = float(finite.max()) if finite.size else 100.0
        pad = max(2.0, 0.08 * (hi - lo))
        ax.set_ylim(max(0.0, lo - pad), min(100.0, hi + pad) if hi + pad > lo else 100.0)
        ax.set_xlabel("N (number of retrieved images)")
        ax.set_ylabel("recall@N (%)")
        ax.legend(loc="lower right")
        if annotate:
            _annotate_ends(fig, ax, ns, table, colors)
        if title:
            ax.set_title(title, fontsize=TITLE_SIZE)
    return fig


def _annotate_ends(fig: Figure, ax, ns: Sequence[int], table: Mapping[str, np.ndarray],
                   colors: Mapping[str, str]) -> None:
    """Write each run's last value right of its line end, nudged apart so labels never overlap."""
    ends = []
    for name, vals in table.items():
        ok = np.flatnonzero(np.isfinite(vals))
        if ok.size:
            ends.append((float(vals[ok[-1]]), ns[ok[-1]], name))
    if not ends:
        return
    lo, hi = ax.get_ylim()
    axes_h_pt = ax.get_position().height * fig.get_figheight() * 72.0
    min_gap = (SMALL_SIZE + 0.5) * (hi - lo) / max(axes_h_pt, 1.0)  # one text line, in data units
    ends.sort()
    placed: list[float] = []
    for value, _, _ in ends:
        placed.append(max(value, placed[-1] + min_gap) if placed else value)
    overshoot = placed[-1] - hi
    if overshoot > 0:  # shift the stack down, keeping the gaps
        placed = [p - overshoot for p in placed]
    shifted = offset_copy(ax.transData, fig=fig, x=3.0, y=0.0, units="points")
    for (value, n, name), y in zip(ends, placed):
        ax.annotate(f"{value:.1f}", xy=(n, value), xytext=(n, y), textcoords=shifted, va="center", ha="left",
                    fontsize=SMALL_SIZE - 0.5, color=colors[name], annotation_clip=False)


def attention_table(shares: Mapping[str, Mapping[str, float]], classes: Sequence[str] | None = None,
                    as_fraction: bool | None = None) -> tuple[list[str], dict[str, np.ndarray]]:
    """Classes (default: the 12 SynthCity classes, then any others in the data) and each model's
    share in % per class (0 where a model lacks a class)."""
    if not shares:
        raise ValueError("need at least one model's attention shares")
    if classes is None:
        extra = [c for vals in shares.values() for c in vals if c not in SEMANTIC_CLASSES]
        classes = [*SEMANTIC_CLASSES, *dict.fromkeys(extra)]
    factor = as_percent([v for vals in shares.values() for v in vals.values()], as_fraction)
    table = {m: np.array([float(vals.get(c, 0.0)) * factor for c in classes]) for m, vals in shares.items()}
    return list(classes), table


def attention_bars(
    shares: Mapping[str, Mapping[str, float]],
    *,
    classes: Sequence[str] | None = None,
    errors: Mapping[str, Mapping[str, float]] | None = None,
    as_fraction: bool | None = None,
    annotate: bool = False,
    width: Width = "two",
    height: float | None = None,
    title: str | None = None,
) -> Figure:
    """Share of heatmap mass (%) per semantic class, one bar per model in each class group.

    ``shares`` is ``{model: {class: share}}`` (fractions or %); ``errors`` (same units) adds
    error bars; ``annotate`` writes each value above its bar. One axes labelled ``"attention"``.
    """
    classes, table = attention_table(shares, classes, as_fraction)
    err_table = attention_table(errors, classes, as_fraction)[1] if errors else {}
    return _grouped_bars(classes, table, err_table, ylabel="share of attention (%)", label="attention",
                         annotate=annotate, width=width, height=height, title=title)


def recall_by_condition(
    recall: Mapping[str, Mapping[str, float]],
    errors: Mapping[str, Mapping[str, float]] | None = None,
    *,
    n: int = 1,
    annotate: bool = True,
    width: Width = "one",
    height: float | None = None,
    title: str | None = None,
) -> Figure:
    """Recall@``n`` (%) per query condition, one bar per model in each condition group.

    ``recall`` is ``{model: {condition: recall}}`` (fractions or %; e.g. all / day / dusk /
    night), ``errors`` the same shape (e.g. the standard deviation over seeds) drawn as error
    bars. One axes labelled ``"recall"``.
    """
    conditions = list(dict.fromkeys(c for vals in recall.values() for c in vals))
    factor = as_percent([v for vals in recall.values() for v in vals.values()], None)
    table = {m: np.array([float(v.get(c, np.nan)) * factor for c in conditions]) for m, v in recall.items()}
    err_table = {m: np.array([float(v.get(c, 0.0)) * factor for c in conditions]) for m, v in (errors or {}).items()}
    return _grouped_bars(conditions, table, err_table, ylabel=f"recall@{n} (%)", label="recall",
                         annotate=annotate, width=width, height=height, title=title, top=100.0)


def _grouped_bars(groups: Sequence[str], table: Mapping[str, np.ndarray], err_table: Mapping[str, np.ndarray], *,
                  ylabel: str, label: str, annotate: bool, width: Width, height: float | None, title: str | None,
                  top: float | None = None) -> Figure:
    """Bars of each model (``table``: one value per group) side by side in each group, with optional
    error bars; one axes labelled ``label``."""
    models = list(table)
    colors = color_map(models)
    w = figure_width(width)
    n = len(models)
    group = 0.8
    bar_w = group / n
    x = np.arange(len(groups))
    with paper_rc():
        fig = new_figure(w, height or (2.0 if w >= 5 else 1.9), layout="constrained")
        ax = style_axes(fig.add_subplot(label=label), grid="y")
        for i, model in enumerate(models):
            offs = x - group / 2 + (i + 0.5) * bar_w
            yerr = err_table.get(model)
            bars = ax.bar(offs, table[model], width=bar_w * 0.92, color=colors[model], label=model, linewidth=0,
                          yerr=yerr, error_kw={"elinewidth": 0.6, "capsize": 1.2, "capthick": 0.6, "ecolor": "#333333"})
            if annotate:
                ax.bar_label(bars, fmt="%.0f", fontsize=SMALL_SIZE - 1.5, padding=1, color="#444444")
        if w < 5 and max(len(g) for g in groups) > 5:
            ax.set_xticks(x, groups, rotation=40, ha="right", rotation_mode="anchor")
        else:
            ax.set_xticks(x, groups)
        ax.set_xlim(-0.55, len(groups) - 0.45)
        highest = max(float(np.nanmax(v + (err_table.get(m, 0.0)))) for m, v in table.items())
        highest = max(highest, 1e-9) * (1.1 if annotate else 1.04)
        ax.set_ylim(0, min(highest, top * 1.1) if top else highest)
        ax.yaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10], integer=highest > 4))
        ax.set_ylabel(ylabel)
        ax.tick_params(axis="x", length=0)
        ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=min(n, 4), borderaxespad=0.2,
                  handlelength=1.0, columnspacing=1.2)
        if title:
            ax.set_title(title, fontsize=TITLE_SIZE)
    return fig
