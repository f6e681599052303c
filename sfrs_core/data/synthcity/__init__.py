"""SynthCity: the procedural, GPS-tagged city that SFRS Studio renders itself (docs/design.md §2)."""
from .basemap import Basemap, district_basemap, load_basemap
from .config import PRESETS, DistrictSpec, SynthCityConfig, preset
from .generate import generate, is_complete, plan_views, read_meta
from .labels import CLASSES, PALETTE, colorize

__all__ = [
    "PRESETS", "DistrictSpec", "SynthCityConfig", "preset", "generate", "is_complete",
    "plan_views", "read_meta", "CLASSES", "PALETTE", "colorize", "Basemap", "district_basemap", "load_basemap",
]
