"""The compact training panel drawn at the bottom of every page's sidebar (being built)."""
from __future__ import annotations

from viz_app.state import Selection


def training_panel(selection: Selection | None) -> None:
    """Start a run from the current choices, watch its progress, stop it."""
