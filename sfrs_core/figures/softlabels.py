"""Region soft labels across generations: k×9 heatmaps as small multiples + an entropy curve."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, LogLocator, MaxNLocator, NullLocator

from .style import (
    MUTED_TEXT,
    REGION_SHORT,
    SEQUENTIAL_CMAP,
    SMALL_SIZE,
    TITLE_SIZE,
    Width,
    figure_width,
    label_color,
    new_figure,
    paper_rc,
    style_axes,
)


def check_distributions(distributions: Sequence[np.ndarray], temperatures: Sequence[float],
                        generation_labels: Sequence[str] | None = None,
                        n_regions: int = len(REGION_SHORT)) -> tuple[np.ndarray, list[float], list[str]]:
    """Stack the per-generation k×9 arrays into (G, k, 9); default labels ``Gen 1`` … ``Gen G``."""
    if len(distributions) == 0:
        raise ValueError("need the soft labels of at least one generation")
    arrays = [np.asarray(d, dtype=np.float64) for d in distributions]
    shape = arrays[0].shape
    if len(shape) != 2 or shape[1] != n_regions:
        raise ValueError(f"each generation's soft labels must be a k×{n_regions} array, got shape {shape}")
    if any(a.shape != shape for a in arrays):
        raise ValueError("every generation must have the same k×9 shape")
    if len(temperatures) != len(arrays):
        raise ValueError(f"{len(arrays)} generations but {len(temperatures)} temperatures")
    labels = list(generation_labels) if generation_labels is not None else [f"Gen {i + 1}" for i in range(len(arrays))]
    if len(labels) != len(arrays):
        raise ValueError(f"{len(arrays)} generations but {len(labels)} labels")
    return np.stack(arrays), [float(t) for t in temperatures], labels


def distribution_entropy(distribution: np.ndarray) -> float:
    """Entropy in nats of one k×9 distribution (normalised to sum 1 first)."""
    p = np.clip(np.asarray(distribution, dtype=np.float64).ravel(), 0.0, None)
    total = p.sum()
    if total <= 0:
        return float("nan")
    p = p / total
    nz = p[p > 0]
    return float(-(nz * np.log(nz)).sum())


def shared_scale(stack: np.ndarray, log: bool = False) -> tuple[float, float]:
    """(vmin, vmax) shared by every panel: 0 … max (log: smallest positive … max)."""
    vmax = float(stack.max()) if stack.size else 1.0
    if log:
        pos = stack[stack > 0]
        vmin = float(pos.min()) if pos.size else 1e-6
        return vmin, max(vmax, vmin * 10)
    return 0.0, vmax if vmax > 0 else 1.0


_CBAR_W = 0.08  # colour bar width (in)
_GAP = 0.06  # between panels (in)
#: Smallest cell side (in) before the panels wrap onto more rows: beside the entropy curve the
#: panels wrap early (balanced heights), above it they stay in one row as long as they can.
_MIN_CELL_IN = {"row": 0.13, "stacked": 0.08}


@dataclass
class _SoftLayout:
    """Inches from the figure's bottom-left corner: square cells, panels wrapped onto ``rows``
    rows of ``cols``, one colour bar as tall as the panel grid, the entropy axes beside or below."""

    width: float
    height: float
    left: float
    cols: int
    rows: int
    panel_w: float
    panel_h: float
    title_h: float
    grid_top: float  # top of the first row's titles
    entropy_rect: tuple[float, float, float, float]

    def row_h(self) -> float:
        return self.title_h + self.panel_h + _TICKS_IN + _VGAP

    def panel_rect(self, g: int) -> list[float]:
        r, c = divmod(g, self.cols)
        x = self.left + c * (self.panel_w + _GAP)
        y = self.grid_top - r * self.row_h() - self.title_h - self.panel_h
        return self.frac(x, y, self.panel_w, self.panel_h)

    def cbar_rect(self) -> list[float]:
        x = self.left + self.cols * (self.panel_w + _GAP)
        top = self.grid_top - self.title_h
        bottom = self.grid_top - (self.rows - 1) * self.row_h() - self.title_h - self.panel_h
        return self.frac(x, bottom, _CBAR_W, top - bottom)

    def frac(self, x: float, y: float, w: float, h: float) -> list[float]:
        return [x / self.width, y / self.height, w / self.width, h / self.height]


_TICKS_IN = 0.13  # region labels under a panel
_CROWDED_IN = 0.36  # less room than this per generation label on the entropy axis: rotate the labels
_VGAP = 0.04  # between panel rows


def _soft_layout(w: float, n_gen: int, k: int, n_reg: int, layout: str, has_title: bool) -> _SoftLayout:
    left, top, bottom = 0.36, 0.04 + (0.2 if has_title else 0.0), 0.04
    cbar_total = _CBAR_W + 0.45  # bar + tick labels + its label
    ent_w = max(1.55, 0.3 * w) if layout == "row" else 0.0
    avail = w - left - _GAP - cbar_total - ent_w
    for rows in range(1, n_gen + 1):
        cols = -(-n_gen // rows)
        panel_w = (avail - (cols - 1) * _GAP) / cols
        if panel_w / n_reg >= _MIN_CELL_IN[layout]:
            break
    if panel_w <= 0.3:
        raise ValueError("figure too narrow for the soft-label panels; use a wider figure")
    rows = -(-n_gen // cols)
    panel_h = panel_w * k / n_reg
    title_h = 0.18 if panel_w >= 1.05 else 0.3
    grid_h = rows * (title_h + panel_h + _TICKS_IN) + (rows - 1) * _VGAP
    ent_x = w - ent_w + 0.42 if layout == "row" else left
    ent_w_axes = w - 0.08 - ent_x
    xlab = 0.3 if ent_w_axes / n_gen < _CROWDED_IN else 0.15  # rotated generation labels need more room
    if layout == "row":
        height = max(top + grid_h + bottom, 1.45 + top - 0.04)
        grid_top = height - top - (height - top - bottom - grid_h) / 2
        entropy_rect = (ent_x, bottom + xlab, ent_w_axes, height - top - bottom - xlab - 0.18)
    else:
        ent_h = 1.1
        height = top + grid_h + 0.12 + 0.18 + ent_h + xlab + bottom
        grid_top = height - top
        entropy_rect = (ent_x, bottom + xlab, ent_w_axes, ent_h)
    return _SoftLayout(w, height, left, cols, rows, panel_w, panel_h, title_h, grid_top, entropy_rect)


def soft_label_evolution(
    distributions: Sequence[np.ndarray],
    temperatures: Sequence[float],
    generation_labels: Sequence[str] | None = None,
    *,
    positive_labels: Sequence[str] | None = None,
    region_labels: Sequence[str] = REGION_SHORT,
    entropies: Sequence[float] | None = None,
    model: str | None = "SFRS",
    log_scale: bool = False,
    cmap: str = SEQUENTIAL_CMAP,
    width: Width = "two",
    layout: str | None = None,
    title: str | None = None,
) -> Figure:
    """For one query: its k×9 soft labels (positives × regions) per generation, one panel each on
    one shared colour scale, and the entropy per generation (computed unless ``entropies``).

    ``layout="row"`` puts the entropy curve to the right of the panels (default for two-column
    width); ``"stacked"`` puts it below (default for one column). The dashed line marks the
    entropy of the uniform distribution, ln(9k). Heatmap panels are labelled ``"soft r0 g{g}"``.
    """
    stack, temps, labels = check_distributions(distributions, temperatures, generation_labels, len(region_labels))
    n_gen, k, n_reg = stack.shape
    ents = list(entropies) if entropies is not None else [distribution_entropy(d) for d in stack]
    if len(ents) != n_gen:
        raise ValueError("entropies must have one value per generation")
    pos_labels = list(positive_labels) if positive_labels is not None else [f"p{i + 1}" for i in range(k)]
    if len(pos_labels) != k:
        raise ValueError(f"{k} positives but {len(pos_labels)} positive labels")
    w = figure_width(width)
    layout = layout or ("row" if w >= 5.0 else "stacked")
    if layout not in ("row", "stacked"):
        raise ValueError("layout must be 'row' or 'stacked'")

    vmin, vmax = shared_scale(stack, log_scale)
    norm = LogNorm(vmin, vmax) if log_scale else Normalize(vmin, vmax)
    box = _soft_layout(w, n_gen, k, n_reg, layout, bool(title))

    with paper_rc():
        fig = new_figure(w, box.height)
        heat_axes = []
        image = None
        two_line = box.panel_w < 1.05
        for g in range(n_gen):
            ax = fig.add_axes(box.panel_rect(g), label=f"soft r0 g{g}")
            image = ax.imshow(stack[g], cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
            sep = "\n" if two_line else "  "
            ax.set_title(f"{labels[g]}{sep}τ = {temps[g]:.3g}", fontsize=SMALL_SIZE + 0.5, pad=2, linespacing=1.1)
            ax.set_xticks(range(n_reg), region_labels, fontsize=SMALL_SIZE - 1.0)
            first_col = g % box.cols == 0
            ax.set_yticks(range(k), pos_labels if first_col else [""] * k, fontsize=SMALL_SIZE - 0.5)
            if first_col:
                ax.set_ylabel("positive", fontsize=SMALL_SIZE, labelpad=1)
            ax.tick_params(length=0, pad=1.5)
            for spine in ax.spines.values():
                spine.set_visible(False)
            for x in (0.5, 4.5):  # separate global | halves | quarters
                if x < n_reg - 1:
                    ax.axvline(x, color="white", linewidth=1.0)
            heat_axes.append(ax)
        cax = fig.add_axes(box.cbar_rect(), label="colorbar")
        cbar = fig.colorbar(image, cax=cax)
        cbar.ax.tick_params(labelsize=SMALL_SIZE - 1.0, length=2, width=0.5, pad=1)
        if log_scale:
            few_decades = np.log10(vmax / vmin) < 2.0
            cbar.ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if few_decades else (1.0,)))
            cbar.ax.yaxis.set_minor_locator(NullLocator())
            cbar.ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        else:
            cbar.locator = MaxNLocator(nbins=max(3, min(6, int(box.rows * box.panel_h / 0.25))))
            cbar.update_ticks()
        cbar.outline.set_linewidth(0.4)
        cbar.set_label("soft label", fontsize=SMALL_SIZE - 0.5, labelpad=2)

        ax = style_axes(fig.add_axes(box.frac(*box.entropy_rect), label="entropy"), grid="y")
        color = label_color(model) if model else "#333333"
        x = np.arange(n_gen)
        ax.plot(x, ents, marker="o", color=color, label=model or "entropy", clip_on=False, zorder=3)
        uniform = float(np.log(k * n_reg))
        ax.axhline(uniform, color=MUTED_TEXT, linestyle=(0, (3, 2)), linewidth=0.7)
        ax.annotate("uniform", xy=(1.0, uniform), xycoords=("axes fraction", "data"), xytext=(0, -2),
                    textcoords="offset points", ha="right", va="top", fontsize=SMALL_SIZE - 0.5, color=MUTED_TEXT)
        crowded = box.entropy_rect[2] / n_gen < _CROWDED_IN
        ax.set_xticks(x, labels, rotation=40 if crowded else 0, ha="right" if crowded else "center",
                      rotation_mode="anchor")
        ax.set_xlim(-0.3, n_gen - 0.7) if n_gen > 1 else ax.set_xlim(-0.5, 0.5)
        finite = [e for e in ents if np.isfinite(e)]
        top = max([uniform, *finite]) * 1.06
        ax.set_ylim(0.0, top)
        ax.set_ylabel("entropy (nats)")
        ax.set_title("Soft-label entropy", fontsize=SMALL_SIZE + 0.5, pad=2)
        if title:
            fig.text(0.5, 1.0 - 0.04 / box.height, title, ha="center", va="top", fontsize=TITLE_SIZE,
                     fontweight="bold")
    return fig
