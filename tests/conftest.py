"""Shared fixtures: one tiny SynthCity rendered per test session."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# the app's disk caches (figures) of the tests' runs go to a folder of their own, not the checkout's
os.environ.setdefault("SFRS_STUDIO_CACHE", tempfile.mkdtemp(prefix="sfrs-studio-test-cache-"))

from sfrs_core.data.synthcity import generate, preset


@pytest.fixture(scope="session")
def tiny_city(tmp_path_factory) -> Path:
    """The ``tiny`` SynthCity preset (seed 0), rendered once with two workers."""
    return generate(preset("tiny"), tmp_path_factory.mktemp("synth") / "tiny", workers=2, progress=False)


@pytest.fixture(scope="session")
def tiny_runs(tiny_city, tmp_path_factory) -> Path:
    """A folder holding a tiny SFRS run (2 generations) and its SARE baseline (generation 0)."""
    from sfrs_core.training import train
    from sfrs_core.training.export import export_run
    from sfrs_core.training.presets import tiny_config

    base = tmp_path_factory.mktemp("app_runs")
    sfrs = train(tiny_config(str(tiny_city), "tiny-sfrs").replace(runs_dir=str(base)), progress=False)
    export_run(sfrs, base / "tiny-sare", generations=1)
    return base


@pytest.fixture
def app_env(tiny_runs, monkeypatch) -> Path:
    """The app's pages see only the tiny runs."""
    monkeypatch.setenv("SFRS_STUDIO_RUN_DIRS", str(tiny_runs))
    return tiny_runs


@pytest.fixture(scope="module")
def tiny_test(tiny_city):
    """The tiny SynthCity's test split."""
    from sfrs_core.data.vpr_folder import read_vpr_folder

    return read_vpr_folder(tiny_city)["test"]


@pytest.fixture(scope="module")
def model():
    """An untrained MobileNetV2 + NetVLAD (K=8), seed 0: extraction and retrieval tests need a
    model, not a good one (a test module may define its own)."""
    import torch

    from sfrs_core.models import ModelConfig, build_model

    torch.manual_seed(0)
    return build_model(ModelConfig(trunk="mobilenet_v2", pretrained=False, num_clusters=8))


@pytest.fixture(autouse=True)
def _torch_threads():
    """A test that runs ``app.py`` in this process sets the server's one torch thread
    (:func:`viz_app.serve.server_threads`); the tests after it keep torch's own count."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # for this thread and the threads started from now on
