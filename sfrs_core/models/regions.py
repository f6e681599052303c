"""The 9 region descriptors of SFRS: global, 4 halves, 4 quarters of the feature map.

The feature map is split into 2x2 quarters at row ``H // 2`` and column ``W // 2`` (floor: for an
odd size the bottom / right parts get the extra row / column, so the quarters tile the map
exactly and the "global" region *is* the whole-map descriptor). Each quarter is aggregated by the
model's NetVLAD layer *before* normalisation; halves are sums of quarter pairs and the global
VLAD is the sum of the four - exact, since un-normalised VLAD is a sum over pixels. Then each of
the 9 is intra-normalised + L2 (and PCA-whitened + L2 when the model has a fitted PCA layer).

Fixed order along dim 1 (``REGION_NAMES``, as OpenIBL's ``EmbedRegionNet``)::

    0 global | 1 top, 2 bottom, 3 left, 4 right | 5 q_tl, 6 q_tr, 7 q_bl, 8 q_br
"""
from __future__ import annotations

from typing import Callable

import torch

from sfrs_core.models.netvlad import NetVLAD, intra_l2

REGION_NAMES = ("global", "top", "bottom", "left", "right", "q_tl", "q_tr", "q_bl", "q_br")
NUM_REGIONS = len(REGION_NAMES)


def quarter_slices(height: int, width: int) -> list[tuple[slice, slice]]:
    """(rows, cols) of the quarters tl, tr, bl, br of a ``height x width`` map (floor split)."""
    if height < 2 or width < 2:
        raise ValueError(f"regions need a feature map of at least 2x2, got {height}x{width}")
    h, w = height // 2, width // 2
    top, bottom, left, right = slice(0, h), slice(h, height), slice(0, w), slice(w, width)
    return [(top, left), (top, right), (bottom, left), (bottom, right)]


def region_boxes(height: int, width: int) -> list[tuple[int, int, int, int]]:
    """``(row0, row1, col0, col1)`` of the 9 regions in ``REGION_NAMES`` order (for display)."""
    h, w = height // 2, width // 2
    return [
        (0, height, 0, width),
        (0, h, 0, width), (h, height, 0, width), (0, height, 0, w), (0, height, w, width),
        (0, h, 0, w), (0, h, w, width), (h, height, 0, w), (h, height, w, width),
    ]


def region_vlads(net_vlad: NetVLAD, feature_map: torch.Tensor) -> torch.Tensor:
    """Un-normalised VLADs ``N x 9 x K x D`` of the 9 regions, from 4 quarter aggregations."""
    x, a = net_vlad.assign(feature_map)
    quarters = torch.stack(
        [net_vlad.aggregate(x[..., rows, cols], a[..., rows, cols])
         for rows, cols in quarter_slices(*feature_map.shape[-2:])],
        dim=1,
    )
    tl, tr, bl, br = quarters.unbind(1)
    halves = torch.stack((tl + tr, bl + br, tl + bl, tr + br), dim=1)
    whole = (tl + tr + bl + br).unsqueeze(1)
    return torch.cat((whole, halves, quarters), dim=1)


def region_descriptors(
    net_vlad: NetVLAD,
    feature_map: torch.Tensor,
    post: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Normalised region descriptors ``N x 9 x dim``; ``post`` (e.g. PCA-whitening) if given."""
    desc = intra_l2(region_vlads(net_vlad, feature_map))
    return post(desc) if post is not None else desc
