"""Why a model matches: heatmaps (Grad-CAM, exact similarity decomposition, activations)."""
from sfrs_core.explain.decomposition import decomposition_heatmap, decomposition_map, pixel_contributions
from sfrs_core.explain.gradcam import DescriptorSimilarityTarget, gradcam_heatmap, gradcam_map
from sfrs_core.explain.heatmap_core import Heatmap, load_rgb, prepare_image
from sfrs_core.explain.heatmaps import (
    METHODS,
    PairHeatmaps,
    activation_heatmap,
    activation_map,
    compare_heatmaps,
    comparison_grid,
    compute_heatmap,
    describe,
)
from sfrs_core.explain.overlay import colorize, normalize_for_display, overlay

__all__ = [
    "METHODS", "DescriptorSimilarityTarget", "Heatmap", "PairHeatmaps",
    "activation_heatmap", "activation_map", "colorize", "compare_heatmaps", "comparison_grid",
    "compute_heatmap", "decomposition_heatmap", "decomposition_map", "describe", "gradcam_heatmap",
    "gradcam_map", "load_rgb", "normalize_for_display", "overlay", "pixel_contributions", "prepare_image",
]
