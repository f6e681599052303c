"""Paper-ready figures (matplotlib, vector without a browser) and their plotly versions for the app.

Every builder takes plain data (arrays, PIL images, numbers, strings) and returns a figure;
:func:`save_figure` writes PDF + SVG + PNG atomically, :func:`figure_bytes` gives the bytes of
one format (download buttons). One style (:mod:`.style`): DejaVu Sans, one-column 3.3 in /
two-column 6.9 in, SARE blue and SFRS orange everywhere, green/red by the 25 m rule.

Plotly (``interactive``) is imported lazily, so the matplotlib path never needs plotly.
"""
from __future__ import annotations

from .curves import RECALL_NS, attention_bars, recall_by_condition, recall_curves
from .export import FIGURE_FORMATS, MIME_TYPES, figure_bytes, figure_paths, save_figure, screen_bytes
from .grids import format_distance, heatmap_grid, retrieval_grid
from .images import as_rgb, overlay_heatmap
from .softlabels import distribution_entropy, soft_label_evolution
from .training import smooth, training_curves, training_series
from .style import (
    CORRECT_COLOR,
    CORRECT_RADIUS_M,
    ONE_COLUMN_IN,
    REGION_NAMES,
    SARE_COLOR,
    SEMANTIC_CLASSES,
    SFRS_COLOR,
    TWO_COLUMN_IN,
    WRONG_COLOR,
    color_map,
    paper_rc,
)

_INTERACTIVE = {
    "StaticExportUnavailable", "attention_bars_plotly", "entropy_curve_plotly", "plotly_to_bytes",
    "recall_curves_plotly", "soft_label_entropies", "soft_label_heatmaps_plotly", "static_export_available",
    "find_browser", "training_curves_plotly",
}


def __getattr__(name: str):
    if name in _INTERACTIVE:
        from . import interactive

        return getattr(interactive, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CORRECT_COLOR",
    "CORRECT_RADIUS_M",
    "FIGURE_FORMATS",
    "MIME_TYPES",
    "ONE_COLUMN_IN",
    "RECALL_NS",
    "REGION_NAMES",
    "SARE_COLOR",
    "SEMANTIC_CLASSES",
    "SFRS_COLOR",
    "TWO_COLUMN_IN",
    "WRONG_COLOR",
    "recall_by_condition",
    "StaticExportUnavailable",
    "as_rgb",
    "smooth",
    "training_curves",
    "training_series",
    "attention_bars",
    "attention_bars_plotly",
    "color_map",
    "distribution_entropy",
    "entropy_curve_plotly",
    "figure_bytes",
    "figure_paths",
    "find_browser",
    "format_distance",
    "heatmap_grid",
    "overlay_heatmap",
    "paper_rc",
    "plotly_to_bytes",
    "recall_curves",
    "recall_curves_plotly",
    "retrieval_grid",
    "save_figure",
    "screen_bytes",
    "soft_label_entropies",
    "soft_label_evolution",
    "soft_label_heatmaps_plotly",
    "static_export_available",
]
