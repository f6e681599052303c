"""SynthCity: the procedural, GPS-tagged city that SFRS Studio renders itself (DESIGN.md §2)."""
from .config import PRESETS, DistrictSpec, SynthCityConfig, preset
from .generate import generate, is_complete, plan_views, read_meta
from .labels import CLASSES, PALETTE, colorize

__all__ = [
    "PRESETS", "DistrictSpec", "SynthCityConfig", "preset", "generate", "is_complete",
    "plan_views", "read_meta", "CLASSES", "PALETTE", "colorize",
]
