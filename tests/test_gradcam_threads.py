"""Grad-CAM while other threads use the same model (the app's visitors share its models)."""
from __future__ import annotations

import threading

import numpy as np
import torch

from sfrs_core.data import load_dataset
from sfrs_core.explain.gradcam import gradcam_heatmap
from sfrs_core.explain.heatmaps import describe
from sfrs_core.runs import open_run


def test_gradcam_is_right_while_other_threads_run_the_same_model(tiny_runs):
    run = open_run(tiny_runs / "tiny-sfrs")
    model = run.model(run.last_generation).eval()
    split = load_dataset(run.data)["test"]
    images = [str(split.queries.image_path(i)) for i in range(4)]
    other = describe(model, str(split.database.image_path(0)))
    expected = [gradcam_heatmap(model, im, other).image for im in images]  # one thread: the reference
    plain = [describe(model, im) for im in images]
    failures: list[str] = []

    def cams(i: int) -> None:
        for _ in range(3):
            got = gradcam_heatmap(model, images[i], other).image
            if not np.allclose(got, expected[i], atol=1e-5):
                failures.append(f"gradcam {i} differs")

    def forwards(i: int) -> None:
        for _ in range(6):
            if not torch.allclose(describe(model, images[i]), plain[i], atol=1e-5):
                failures.append(f"descriptor {i} differs")

    threads = [threading.Thread(target=f, args=(i,)) for i in range(4) for f in (cams, forwards)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert all(not p.requires_grad or p.grad is None for p in model.parameters())  # the model left as it was
