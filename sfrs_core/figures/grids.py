"""Image grids: query-retrieval grids (green/red by the 25 m rule) and heatmap comparisons.

Layouts are computed in inches (no tight bounding box), so the figure is exactly as wide as a
paper column and every tile keeps the pictures' aspect ratio (pictures of another aspect are
centre-cropped to the first query's).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from .images import ImageLike, as_rgb, fit_tile, is_raw_map, overlay_heatmap
from .style import (
    BORDER_WIDTH,
    CORRECT_RADIUS_M,
    FONT_SIZE,
    HEATMAP_CMAP,
    MUTED_TEXT,
    QUERY_COLOR,
    SMALL_SIZE,
    TITLE_SIZE,
    Width,
    correctness_color,
    figure_width,
    label_color,
    new_figure,
    paper_rc,
)

_HEADER_IN = 0.17  # column titles above the first row
_CAPTION_IN = 0.15  # one line of text under a tile
_TITLE_IN = 0.22  # optional figure title
_TILE_GAP_IN = 0.04
_BLOCK_GAP_IN = 0.12  # between the query column and the rest
_ROW_GAP_IN = 0.03
_GROUP_GAP_IN = 0.10
_MARGIN_IN = 0.03
_ROW_LABEL_IN = 0.17
_COLORBAR_IN = 0.55
_FRAME_WIDTH = 0.5


@dataclass
class _Layout:
    """Tile rectangles of a grid, in inches from the bottom-left corner of the figure."""

    width: float
    left: float
    right: float
    top: float
    col_gaps: list[float]  # gap before each column
    row_gaps: list[float]  # gap before each row
    aspect: float
    caption: float

    @property
    def tile_w(self) -> float:
        free = self.width - self.left - self.right - sum(self.col_gaps)
        if free <= 0:
            raise ValueError("too many columns for the figure width; use a wider figure")
        return free / len(self.col_gaps)

    @property
    def tile_h(self) -> float:
        return self.tile_w / self.aspect

    @property
    def height(self) -> float:
        rows = len(self.row_gaps)
        return self.top + sum(self.row_gaps) + rows * (self.tile_h + self.caption) + _MARGIN_IN

    def rect(self, row: int, col: int) -> list[float]:
        """``[x0, y0, w, h]`` of tile (row, col) in figure fractions (for ``fig.add_axes``)."""
        x = self.left + sum(self.col_gaps[: col + 1]) + col * self.tile_w
        y_top = self.top + sum(self.row_gaps[: row + 1]) + row * (self.tile_h + self.caption)
        y = self.height - y_top - self.tile_h
        h_total = self.height
        return [x / self.width, y / h_total, self.tile_w / self.width, self.tile_h / h_total]


def _tile(fig: Figure, rect: Sequence[float], image: np.ndarray, *, label: str, color: str, linewidth: float) -> Axes:
    ax = fig.add_axes(rect, label=label)
    ax.imshow(image, aspect="auto", interpolation="antialiased")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_color(color)
        spine.set_linewidth(linewidth)
    return ax


def _caption(ax: Axes, text: str, *, linewidth: float, color: str = MUTED_TEXT) -> None:
    ax.annotate(
        text, xy=(0.5, 0.0), xycoords="axes fraction", xytext=(0, -(linewidth / 2 + 1.5)),
        textcoords="offset points", ha="center", va="top", fontsize=SMALL_SIZE, color=color,
    )


def _header(ax: Axes, text: str, *, linewidth: float, color: str | None = None, bold: bool = False) -> None:
    ax.annotate(
        text, xy=(0.5, 1.0), xycoords="axes fraction", xytext=(0, linewidth / 2 + 2.0),
        textcoords="offset points", ha="center", va="bottom", fontsize=FONT_SIZE,
        color=color or label_color(text), fontweight="bold" if bold else "normal",
    )


def _row_label(ax: Axes, text: str) -> None:
    ax.annotate(
        text, xy=(0.0, 0.5), xycoords="axes fraction", xytext=(-(BORDER_WIDTH + 3.0), 0),
        textcoords="offset points", ha="right", va="center", rotation=90, fontsize=FONT_SIZE,
        color=label_color(text), fontweight="bold",
    )


def _title(fig: Figure, text: str, height: float) -> None:
    fig.text(0.5, 1.0 - 0.04 / height, text, ha="center", va="top", fontsize=TITLE_SIZE, fontweight="bold")


def format_distance(meters: float) -> str:
    """``"3.4 m"``, ``"12 m"``, ``"1,234 m"``; ``"n/a"`` when unknown."""
    if meters is None or not math.isfinite(float(meters)):
        return "n/a"
    meters = float(meters)
    return f"{meters:.1f} m" if meters < 10 else f"{meters:,.0f} m"


def _row_groups(n_rows: int, group_size: int) -> list[float]:
    if group_size < 1:
        raise ValueError("group_size must be at least 1")
    return [0.0 if r == 0 else (_GROUP_GAP_IN if r % group_size == 0 else _ROW_GAP_IN) for r in range(n_rows)]


def _query_tile(fig, layout, r: int, image, aspect: float, row_labels, query_captions) -> None:
    """The query tile of row ``r`` (first column) with its header, row label and caption."""
    ax = _tile(fig, layout.rect(r, 0), fit_tile(as_rgb(image), aspect, layout.tile_w),
               label=f"query r{r}", color=QUERY_COLOR, linewidth=_FRAME_WIDTH)
    if r == 0:
        _header(ax, "Query", linewidth=_FRAME_WIDTH)
    if row_labels:
        _row_label(ax, row_labels[r])
    if query_captions:
        _caption(ax, query_captions[r], linewidth=_FRAME_WIDTH)


def retrieval_grid(
    queries: Sequence[ImageLike],
    retrieved: Sequence[Sequence[ImageLike]],
    distances_m: Sequence[Sequence[float]],
    *,
    row_labels: Sequence[str] | None = None,
    correct: Sequence[Sequence[bool]] | None = None,
    radius_m: float = CORRECT_RADIUS_M,
    query_captions: Sequence[str] | None = None,
    captions: Sequence[Sequence[str]] | None = None,
    group_size: int = 1,
    width: Width = "two",
    border_width: float = BORDER_WIDTH,
    title: str | None = None,
) -> Figure:
    """Rows of (query + top-K retrieved), each retrieved tile framed green (correct) or red (wrong).

    ``distances_m[r][j]`` is the distance in metres from row r's query to its j-th retrieved
    image; it is written under the tile and decides the frame colour (``<= radius_m`` is correct)
    unless ``correct`` is given. ``row_labels`` (e.g. ``"SARE"``, ``"SFRS"``, drawn in the
    method's colour) and ``group_size=2`` put two models' rows for the same query one above the
    other, with a wider gap between queries. ``captions`` replaces the distance text.
    Tiles are labelled ``"query r{r}"`` / ``"retrieved r{r} c{j}"`` (``Axes.get_label()``).
    """
    n_rows = len(queries)
    if n_rows == 0:
        raise ValueError("retrieval_grid needs at least one query")
    if len(retrieved) != n_rows or len(distances_m) != n_rows:
        raise ValueError("queries, retrieved and distances_m must have one entry per row")
    k = max(len(r) for r in retrieved)
    if k == 0:
        raise ValueError("retrieval_grid needs at least one retrieved image per row")
    for r in range(n_rows):
        if len(distances_m[r]) != len(retrieved[r]):
            raise ValueError(f"row {r}: {len(retrieved[r])} retrieved images but {len(distances_m[r])} distances")
    for name, seq in (("row_labels", row_labels), ("query_captions", query_captions), ("correct", correct),
                      ("captions", captions)):
        if seq is not None and len(seq) != n_rows:
            raise ValueError(f"{name} must have one entry per row ({n_rows})")

    q0 = as_rgb(queries[0])
    aspect = q0.shape[1] / q0.shape[0]
    w = figure_width(width)
    layout = _Layout(
        width=w,
        left=_MARGIN_IN + (_ROW_LABEL_IN if row_labels else 0.0),
        right=_MARGIN_IN,
        top=_MARGIN_IN + _HEADER_IN + (_TITLE_IN if title else 0.0),
        col_gaps=[0.0, _BLOCK_GAP_IN] + [_TILE_GAP_IN] * (k - 1),
        row_gaps=_row_groups(n_rows, group_size),
        aspect=aspect,
        caption=_CAPTION_IN,
    )
    with paper_rc():
        fig = new_figure(w, layout.height)
        for r in range(n_rows):
            _query_tile(fig, layout, r, queries[r], aspect, row_labels, query_captions)
            for j, image in enumerate(retrieved[r]):
                dist = distances_m[r][j]
                ok = (
                    bool(correct[r][j]) if correct is not None
                    else (None if dist is None or not math.isfinite(float(dist)) else float(dist) <= radius_m)
                )
                ax = _tile(fig, layout.rect(r, j + 1), fit_tile(as_rgb(image), aspect, layout.tile_w),
                           label=f"retrieved r{r} c{j}", color=correctness_color(ok), linewidth=border_width)
                if r == 0:
                    _header(ax, f"Top-{j + 1}", linewidth=border_width)
                _caption(ax, captions[r][j] if captions is not None else format_distance(dist), linewidth=border_width)
        if title:
            _title(fig, title, layout.height)
    return fig


def _as_list(item) -> list:
    if item is None:
        return []
    if isinstance(item, (list, tuple)):
        return list(item)
    return [item]


def heatmap_grid(
    queries: Sequence[ImageLike],
    maps: Mapping[str, Sequence[ImageLike]],
    matches: Sequence[ImageLike | Sequence[ImageLike]] | None = None,
    *,
    similarities: Mapping[str, Sequence[float]] | None = None,
    match_titles: Sequence[str] | None = None,
    match_captions: Sequence[str | Sequence[str]] | None = None,
    match_correct: Sequence[bool | Sequence[bool] | None] | None = None,
    query_captions: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
    base_images: Sequence[ImageLike] | None = None,
    cmap: str = HEATMAP_CMAP,
    alpha: float = 0.5,
    colorbar: bool = False,
    width: Width = "two",
    title: str | None = None,
) -> Figure:
    """Columns query | one map per model (e.g. SARE, SFRS) | match(es), one row per example.

    ``maps[model][r]`` is either an already-overlaid uint8 RGB picture or a raw H×W float map,
    which is min–max scaled and blended with ``cmap`` at opacity ``alpha`` over
    ``base_images[r]`` (default: the query). ``similarities[model][r]`` is written under the
    map as ``s = 0.823``. ``matches[r]`` is one picture or a list (e.g. each model's top-1);
    ``match_titles`` names the match columns, ``match_correct`` frames matches green/red.
    Model names are drawn in the method's colour (SARE blue, SFRS orange).
    """
    n_rows = len(queries)
    if n_rows == 0:
        raise ValueError("heatmap_grid needs at least one query")
    if not maps:
        raise ValueError("heatmap_grid needs at least one model's maps")
    models = list(maps)
    for name in models:
        if len(maps[name]) != n_rows:
            raise ValueError(f"maps[{name!r}] has {len(maps[name])} entries for {n_rows} queries")
        if similarities is not None and name in similarities and len(similarities[name]) != n_rows:
            raise ValueError(f"similarities[{name!r}] must have one value per query")
    match_rows = [_as_list(m) for m in matches] if matches is not None else [[] for _ in range(n_rows)]
    if len(match_rows) != n_rows:
        raise ValueError("matches must have one entry per query")
    n_match = max((len(m) for m in match_rows), default=0)
    bases = base_images if base_images is not None else queries
    if len(bases) != n_rows:
        raise ValueError("base_images must have one entry per query")

    q0 = as_rgb(queries[0])
    aspect = q0.shape[1] / q0.shape[0]
    any_raw = any(is_raw_map(maps[name][r]) for name in models for r in range(n_rows))
    has_cbar = colorbar and any_raw
    w = figure_width(width)
    col_gaps = [0.0] + [_BLOCK_GAP_IN] + [_TILE_GAP_IN] * (len(models) - 1)
    if n_match:
        col_gaps += [_BLOCK_GAP_IN] + [_TILE_GAP_IN] * (n_match - 1)
    need_caption = bool(similarities or query_captions or match_captions)
    layout = _Layout(
        width=w,
        left=_MARGIN_IN + (_ROW_LABEL_IN if row_labels else 0.0),
        right=_MARGIN_IN + (_COLORBAR_IN if has_cbar else 0.0),
        top=_MARGIN_IN + _HEADER_IN + (_TITLE_IN if title else 0.0),
        col_gaps=col_gaps,
        row_gaps=[0.0] + [_ROW_GAP_IN] * (n_rows - 1),
        aspect=aspect,
        caption=_CAPTION_IN if need_caption else 0.02,
    )
    if n_match > 1 and match_titles is None:
        match_titles = [f"Match {i + 1}" for i in range(n_match)]
    elif n_match == 1 and match_titles is None:
        match_titles = ["Match"]

    titled: set[int] = set()
    with paper_rc():
        fig = new_figure(w, layout.height)
        for r in range(n_rows):
            _query_tile(fig, layout, r, queries[r], aspect, row_labels, query_captions)
            for m, name in enumerate(models):
                item = maps[name][r]
                picture = (overlay_heatmap(bases[r], item, cmap=cmap, alpha=alpha) if is_raw_map(item)
                           else as_rgb(item))
                ax = _tile(fig, layout.rect(r, 1 + m), fit_tile(picture, aspect, layout.tile_w),
                           label=f"map {name} r{r}", color=QUERY_COLOR, linewidth=_FRAME_WIDTH)
                if r == 0:
                    _header(ax, name, linewidth=_FRAME_WIDTH, bold=True)
                if similarities is not None and name in similarities:
                    _caption(ax, f"s = {float(similarities[name][r]):.3f}", linewidth=_FRAME_WIDTH)
            caps = _as_list(match_captions[r]) if match_captions is not None else []
            oks = _as_list(match_correct[r]) if match_correct is not None else []
            for j, image in enumerate(match_rows[r]):
                ok = oks[j] if j < len(oks) else None
                color, lw = (QUERY_COLOR, _FRAME_WIDTH) if ok is None else (correctness_color(bool(ok)), BORDER_WIDTH)
                ax = _tile(fig, layout.rect(r, 1 + len(models) + j), fit_tile(as_rgb(image), aspect, layout.tile_w),
                           label=f"match r{r} c{j}", color=color, linewidth=lw)
                if j not in titled and match_titles is not None and j < len(match_titles):
                    titled.add(j)  # above the first row that has this match column
                    _header(ax, match_titles[j], linewidth=BORDER_WIDTH)
                if j < len(caps) and caps[j]:
                    _caption(ax, caps[j], linewidth=lw)
        if has_cbar:
            first = layout.rect(0, len(col_gaps) - 1)
            last = layout.rect(n_rows - 1, len(col_gaps) - 1)
            x0 = first[0] + first[2] + 0.08 / w
            cax = fig.add_axes([x0, last[1], 0.07 / w, first[1] + first[3] - last[1]], label="colorbar")
            cb = fig.colorbar(ScalarMappable(Normalize(0, 1), cmap=cmap), cax=cax)
            cb.set_ticks([0, 1], labels=["low", "high"])
            cb.ax.tick_params(labelsize=SMALL_SIZE, length=2, width=0.5, pad=1.5)
            cb.outline.set_linewidth(0.5)
            cb.set_label("relevance", fontsize=SMALL_SIZE, labelpad=1)
        if title:
            _title(fig, title, layout.height)
    return fig
