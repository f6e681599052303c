"""Training curves of a run from its metrics log: hard/soft loss per iteration, recall@1 per epoch."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from .style import MUTED_TEXT, SARE_COLOR, SFRS_COLOR, TITLE_SIZE, Width, figure_width, new_figure, paper_rc, style_axes


LOSS_COLORS = {"loss_hard": SARE_COLOR, "loss_soft": SFRS_COLOR}


@dataclass
class TrainingSeries:
    """What the curves plot, read from ``metrics.jsonl`` records (see :mod:`sfrs_core.training.metrics_log`)."""

    iteration: np.ndarray  # (S,) step records
    generation: np.ndarray  # (S,)
    loss_hard: np.ndarray  # (S,)
    loss_soft: np.ndarray  # (S,)
    eval_iteration: np.ndarray  # (E,) per-epoch validation evaluations
    eval_recall1: np.ndarray  # (E,) recall@1 in %
    generation_starts: list[int]  # first iteration of each generation after the first


def training_series(metrics: Sequence[Mapping], split: str = "val") -> TrainingSeries:
    """Steps and per-epoch ``split`` evaluations (not the final re-evaluations) of a metrics log."""
    steps = [r for r in metrics if r.get("event") == "step"]
    evals = [r for r in metrics if r.get("event") == "eval" and r.get("split") == split and not r.get("final")]
    starts, seen = [], set()
    for r in steps:
        g = r.get("generation", 0)
        if g not in seen:
            seen.add(g)
            if g > 0:
                starts.append(int(r["iteration"]))
    return TrainingSeries(
        np.array([r["iteration"] for r in steps], dtype=float),
        np.array([r.get("generation", 0) for r in steps], dtype=int),
        np.array([r.get("loss_hard", r.get("loss", np.nan)) for r in steps], dtype=float),
        np.array([r.get("loss_soft", 0.0) for r in steps], dtype=float),
        np.array([r["iteration"] for r in evals], dtype=float),
        np.array([100.0 * r.get("recall@1", np.nan) for r in evals], dtype=float),
        starts,
    )


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over up to ``window`` values (same length as ``values``)."""
    values = np.asarray(values, dtype=float)
    if window <= 1 or values.size == 0:
        return values
    cumsum = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, values.size + 1)
    lo = np.maximum(idx - window, 0)
    return (cumsum[idx] - cumsum[lo]) / (idx - lo)


def smooth_per_generation(values: np.ndarray, generation: np.ndarray, window: int) -> np.ndarray:
    """:func:`smooth` within each generation (a new generation's loss does not average with the last's);
    the soft loss of generation 0 (always 0: no teacher yet) becomes NaN, so it is not drawn."""
    out = np.empty(len(values), dtype=float)
    for g in np.unique(generation):
        at = generation == g
        out[at] = smooth(values[at], window)
    return out


def loss_curves(s: TrainingSeries, window: int) -> dict[str, np.ndarray]:
    """The smoothed loss curves to draw: ``loss_hard`` always, ``loss_soft`` from generation 1 on."""
    curves = {"loss_hard": smooth_per_generation(s.loss_hard, s.generation, window)}
    if np.any(s.generation > 0):
        curves["loss_soft"] = np.where(s.generation > 0, smooth_per_generation(s.loss_soft, s.generation, window), np.nan)
    return curves


def training_curves(metrics: Sequence[Mapping], *, window: int = 15, width: Width = "two",
                    title: str | None = None) -> Figure:
    """Two panels: hard and soft loss against iteration (moving average of ``window`` steps, raw
    values faint), and validation recall@1 after each epoch; dotted lines mark new generations."""
    s = training_series(metrics)
    if s.iteration.size == 0:
        raise ValueError("the metrics log has no training steps yet")
    w = figure_width(width)
    with paper_rc():
        fig = new_figure(w, max(1.8, 0.3 * w), layout="constrained")
        loss_ax, rec_ax = (style_axes(fig.add_subplot(1, 2, i + 1, label=name), grid="y")
                           for i, name in enumerate(("loss", "recall")))
        raw = {"loss_hard": s.loss_hard, "loss_soft": np.where(s.generation > 0, s.loss_soft, np.nan)}
        for name, curve in loss_curves(s, window).items():
            color = LOSS_COLORS[name]
            loss_ax.plot(s.iteration, raw[name], color=color, alpha=0.2, linewidth=0.6)
            loss_ax.plot(s.iteration, curve, color=color, label=name)
        loss_ax.set_xlabel("iteration")
        loss_ax.set_ylabel("loss")
        loss_ax.legend(loc="upper right")
        if s.eval_iteration.size:
            rec_ax.plot(s.eval_iteration, s.eval_recall1, marker="o", color=SFRS_COLOR, markeredgewidth=0)
        rec_ax.set_xlabel("iteration")
        rec_ax.set_ylabel("val recall@1 (%)")
        for ax in (loss_ax, rec_ax):
            for x in s.generation_starts:
                ax.axvline(x, color=MUTED_TEXT, linestyle=":", linewidth=0.8)
        if title:
            fig.suptitle(title, fontsize=TITLE_SIZE)
    return fig
