"""Where the shipped demo models come from and go: one light table that the CLI and the trainer of
the demo models (``training/demo.py``) both read, without importing torch."""
from __future__ import annotations

#: The seeds every demo city is trained with.
DEMO_SEEDS = (0, 1, 2, 3, 4)
#: city -> (SynthCity preset, dataset folder, export folder)
CITIES = {
    "demo": ("demo", "data/synthcity", "assets/demo"),
    "challenge": ("challenge", "data/synthcity-challenge", "assets/challenge"),
}
