"""One paper-ready look for every figure (matplotlib and plotly alike).

Fonts are DejaVu Sans (shipped with matplotlib, so every machine renders the same glyphs),
sizes fit a one-column (3.3 in) or two-column (6.9 in) paper figure, SARE and SFRS always get
the same colours, and correct/wrong retrievals (25 m rule) are green/red. Builders apply the
style through :func:`paper_rc` (a context, so the global ``rcParams`` are left untouched).
"""
from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Literal

from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.figure import Figure

# --------------------------------------------------------------------------- sizes
ONE_COLUMN_IN = 3.3
TWO_COLUMN_IN = 6.9
Width = float | Literal["one", "two"]

FONT_FAMILY = "DejaVu Sans"
FONT_SIZE = 7.5  # body text, axis labels
SMALL_SIZE = 6.5  # tick labels, captions under tiles, legends
TITLE_SIZE = 8.0  # panel titles
LINE_WIDTH = 1.3  # data lines
SPINE_WIDTH = 0.6
BORDER_WIDTH = 2.0  # correct/wrong frame around a retrieved tile, in points
GRID_COLOR = "#E3E3E3"

# --------------------------------------------------------------------------- colours
#: Fixed colours of the two methods (Okabe–Ito blue and orange, colour-blind safe, and far from
#: the green/red of correct/wrong).
SARE_COLOR = "#0072B2"
SFRS_COLOR = "#E69F00"
METHOD_COLORS: dict[str, str] = {"sare": SARE_COLOR, "sfrs": SFRS_COLOR}
METHOD_MARKERS: dict[str, str] = {"sare": "o", "sfrs": "s"}
#: Colours for further runs (the rest of Okabe–Ito, then greys), in order of appearance.
EXTRA_COLORS: tuple[str, ...] = ("#CC79A7", "#009E73", "#56B4E9", "#7F5539", "#5E5E5E", "#B8B800", "#A6A6A6")
EXTRA_MARKERS: tuple[str, ...] = ("^", "D", "v", "P", "X", "<", ">")

CORRECT_COLOR = "#1A9850"  # green: within the radius
WRONG_COLOR = "#D73027"  # red: farther
UNKNOWN_COLOR = "#9E9E9E"  # no distance known
QUERY_COLOR = "#333333"  # neutral frame of a query tile
TEXT_COLOR = "#222222"
MUTED_TEXT = "#555555"
SEQUENTIAL_CMAP = "viridis"  # soft-label heatmaps (perceptual, prints in grey)
HEATMAP_CMAP = "jet"  # default colormap of relevance overlays (what Grad-CAM papers use)
PLOTLY_SEQUENTIAL = "Viridis"

CORRECT_RADIUS_M = 25.0  # the 25 m rule

REGION_NAMES: tuple[str, ...] = ("global", "top", "bottom", "left", "right", "q_tl", "q_tr", "q_bl", "q_br")
REGION_LABELS: tuple[str, ...] = ("global", "top", "bottom", "left", "right", "TL", "TR", "BL", "BR")
#: One-glyph region labels for small paper panels: G(lobal) | halves ↑ ↓ ← → | quarters ↖ ↗ ↙ ↘.
REGION_SHORT: tuple[str, ...] = ("G", "\u2191", "\u2193", "\u2190", "\u2192", "\u2196", "\u2197", "\u2199", "\u2198")
SEMANTIC_CLASSES: tuple[str, ...] = (
    "sky", "road", "sidewalk", "facade", "window", "door", "sign", "storefront",
    "tree", "vehicle", "pole", "person",
)

PAPER_RC: dict[str, object] = {
    "font.family": "sans-serif",
    "font.sans-serif": [FONT_FAMILY],
    "font.size": FONT_SIZE,
    "axes.titlesize": TITLE_SIZE,
    "axes.titleweight": "normal",
    "axes.titlepad": 3.0,
    "axes.labelsize": FONT_SIZE,
    "axes.labelpad": 2.0,
    "axes.linewidth": SPINE_WIDTH,
    "axes.edgecolor": "#444444",
    "axes.labelcolor": TEXT_COLOR,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": False,
    "axes.axisbelow": True,
    "axes.prop_cycle": None,  # set below (needs cycler)
    "grid.color": GRID_COLOR,
    "grid.linewidth": 0.5,
    "xtick.labelsize": SMALL_SIZE,
    "ytick.labelsize": SMALL_SIZE,
    "xtick.major.width": SPINE_WIDTH,
    "ytick.major.width": SPINE_WIDTH,
    "xtick.major.size": 2.5,
    "ytick.major.size": 2.5,
    "xtick.major.pad": 1.5,
    "ytick.major.pad": 1.5,
    "xtick.color": "#444444",
    "ytick.color": "#444444",
    "legend.fontsize": SMALL_SIZE,
    "legend.frameon": False,
    "legend.handlelength": 1.6,
    "legend.borderaxespad": 0.3,
    "lines.linewidth": LINE_WIDTH,
    "lines.markersize": 3.5,
    "text.color": TEXT_COLOR,
    "figure.facecolor": "white",
    "figure.dpi": 100,
    "savefig.facecolor": "white",
    "savefig.transparent": False,
    "pdf.fonttype": 42,  # embed TrueType: text stays text (editable, searchable) in the PDF
    "svg.fonttype": "path",  # glyphs as paths: the SVG looks the same without DejaVu installed
    "svg.hashsalt": "sfrs-studio",  # deterministic ids in SVG output
}


def _prop_cycle():
    from cycler import cycler

    return cycler(color=[SARE_COLOR, SFRS_COLOR, *EXTRA_COLORS])


PAPER_RC["axes.prop_cycle"] = _prop_cycle()


@contextlib.contextmanager
def paper_rc() -> Iterator[None]:
    """Context in which matplotlib uses the paper style (fonts, sizes, spines, font embedding)."""
    with rc_context(PAPER_RC):
        yield


def figure_width(width: Width) -> float:
    """Width in inches of ``"one"`` (3.3 in) or ``"two"`` (6.9 in) columns, or a number of inches."""
    if width == "one":
        return ONE_COLUMN_IN
    if width == "two":
        return TWO_COLUMN_IN
    value = float(width)
    if not value > 0:
        raise ValueError(f"figure width must be positive, got {width!r}")
    return value


def new_figure(width: Width, height: float, *, layout: str | None = None) -> Figure:
    """A bare :class:`Figure` (no pyplot, so nothing global is kept alive) of ``width`` × ``height`` in."""
    with paper_rc():
        return Figure(figsize=(figure_width(width), float(height)), layout=layout)


def style_axes(ax: Axes, *, grid: Literal["x", "y", "both"] | None = None) -> Axes:
    """Thin left/bottom spines, small ticks, optional light grid: no chart junk."""
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_linewidth(SPINE_WIDTH)
        ax.spines[side].set_color("#444444")
    ax.tick_params(labelsize=SMALL_SIZE, width=SPINE_WIDTH, length=2.5, pad=1.5, colors="#444444")
    if grid:
        ax.grid(True, axis=grid, color=GRID_COLOR, linewidth=0.5)
        ax.set_axisbelow(True)
    return ax


def method_of(name: str) -> str | None:
    """``"sare"`` or ``"sfrs"`` when a run/model name says which method it is, else None.

    The last path component is looked at (``assets/demo/sfrs`` → ``sfrs``); SFRS is checked first
    because SFRS runs are trained with a SARE-style loss and their names may say both.
    """
    base = os.path.basename(os.path.normpath(str(name))).lower() or str(name).lower()
    for key in ("sfrs", "sare"):
        if re.search(rf"(^|[^a-z]){key}([^a-z]|$)", base):
            return key
    return None


def color_map(names: Iterable[str]) -> dict[str, str]:
    """Colour of each name: the first SARE-like name gets :data:`SARE_COLOR`, the first SFRS-like
    :data:`SFRS_COLOR`, everything else the :data:`EXTRA_COLORS` in order of appearance."""
    return {name: style[0] for name, style in _styles(names).items()}


def marker_map(names: Iterable[str]) -> dict[str, str]:
    """Marker of each name, assigned like :func:`color_map` (SARE circles, SFRS squares)."""
    return {name: style[1] for name, style in _styles(names).items()}


def _styles(names: Iterable[str]) -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}
    taken: set[str] = set()
    extra = 0
    for name in names:
        if name in out:
            continue
        key = method_of(name)
        if key is not None and key not in taken:
            taken.add(key)
            out[name] = (METHOD_COLORS[key], METHOD_MARKERS[key])
        else:
            out[name] = (EXTRA_COLORS[extra % len(EXTRA_COLORS)], EXTRA_MARKERS[extra % len(EXTRA_MARKERS)])
            extra += 1
    return out


def label_color(name: str) -> str:
    """Text colour for a row/column label: the method colour if the name is SARE/SFRS, else text."""
    key = method_of(name)
    return METHOD_COLORS[key] if key else TEXT_COLOR


def correctness_color(correct: bool | None) -> str:
    """Green for correct, red for wrong, grey for unknown."""
    if correct is None:
        return UNKNOWN_COLOR
    return CORRECT_COLOR if correct else WRONG_COLOR


def as_percent(values: Sequence[float] | Mapping[object, float], as_fraction: bool | None) -> float:
    """Factor turning ``values`` into percent: 100 for fractions, 1 for percentages.

    ``as_fraction=None`` decides from the data (all values within [0, 1] → fractions).
    """
    vals = list(values.values()) if isinstance(values, Mapping) else list(values)
    if as_fraction is None:
        as_fraction = all(0.0 <= float(v) <= 1.0 for v in vals)
    return 100.0 if as_fraction else 1.0


def plotly_template():
    """A plotly ``Template`` with the same font, palette and thin axes as the matplotlib figures."""
    import plotly.graph_objects as go

    axis = {
        "showgrid": False, "zeroline": False, "showline": True, "linewidth": 1, "linecolor": "#444444",
        "ticks": "outside", "ticklen": 3, "tickwidth": 1, "tickcolor": "#444444",
        "title": {"font": {"size": 13}},
    }
    return go.layout.Template(
        layout=go.Layout(
            font={"family": f"{FONT_FAMILY}, Arial, sans-serif", "size": 12, "color": TEXT_COLOR},
            colorway=[SARE_COLOR, SFRS_COLOR, *EXTRA_COLORS],
            paper_bgcolor="white",
            plot_bgcolor="white",
            xaxis=axis,
            yaxis=dict(axis, showgrid=True, gridcolor=GRID_COLOR, gridwidth=1),
            legend={"bgcolor": "rgba(255,255,255,0)", "borderwidth": 0},
            margin={"l": 60, "r": 20, "t": 40, "b": 50},
            colorscale={"sequential": PLOTLY_SEQUENTIAL},
        )
    )
