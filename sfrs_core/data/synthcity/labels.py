"""Semantic classes of SynthCity label maps (stored as palette PNGs: pixel value = class id)."""
from __future__ import annotations

import numpy as np

CLASSES: tuple[str, ...] = (
    "sky", "road", "sidewalk", "facade", "window", "door", "sign", "storefront",
    "tree", "vehicle", "pole", "person",
)
CLASS_ID = {name: i for i, name in enumerate(CLASSES)}

#: Display colours (RGB) of the classes, also the PNG palette.
PALETTE = np.array(
    [
        (135, 190, 235),  # sky
        (70, 70, 75),  # road
        (175, 170, 160),  # sidewalk
        (180, 120, 90),  # facade
        (60, 100, 160),  # window
        (120, 70, 40),  # door
        (250, 40, 160),  # sign
        (255, 200, 0),  # storefront
        (40, 150, 50),  # tree
        (220, 30, 30),  # vehicle
        (140, 140, 140),  # pole
        (150, 60, 220),  # person
    ],
    dtype=np.uint8,
)


def colorize(label: np.ndarray) -> np.ndarray:
    """Map an H×W class-id array to an H×W×3 RGB picture."""
    return PALETTE[np.clip(label, 0, len(CLASSES) - 1)]
