"""Shared fixtures: one tiny SynthCity rendered per test session."""
from __future__ import annotations

from pathlib import Path

import pytest

from sfrs_core.data.synthcity import generate, preset


@pytest.fixture(scope="session")
def tiny_city(tmp_path_factory) -> Path:
    """The ``tiny`` SynthCity preset (seed 0), rendered once with two workers."""
    return generate(preset("tiny"), tmp_path_factory.mktemp("synth") / "tiny", workers=2, progress=False)
