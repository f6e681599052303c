"""The app's side of background training: where new runs go, what the forms offer, and the
``train`` flags they become. Starting, watching and stopping the process is
:mod:`sfrs_core.training.background` (the same ``python -m sfrs_core train`` the CLI runs).

New runs are written to the *training folder*: the last entry of ``SFRS_STUDIO_RUN_DIRS``
(``runs/`` by default, after the read-only ``assets/demo``). Only that folder must be writable;
every run folder in it shows in the Train page's list, and its finished generations in every
page's run list (which scans all of ``SFRS_STUDIO_RUN_DIRS`` on each rerun).

A dataset path a visitor types is read only inside the server's data roots
(:func:`viz_app.access.inside_data_roots`), and any other path gets one fixed answer
(:data:`~viz_app.access.OUTSIDE_ROOTS`); the datasets of the runs found are the server's own.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import logging

from sfrs_core.data import DatasetError
from sfrs_core.losses import LOSS_TYPES
from sfrs_core.models.backbones import TRUNKS, shipped_mobilenet_v2_file
from sfrs_core.training.config import TrainConfig
from sfrs_core.training.presets import PRESETS
from viz_app.access import OUTSIDE_ROOTS, inside_data_roots, max_trainings
from viz_app.cache import dataset, run_dirs, runs

LOG = logging.getLogger("sfrs_studio.jobs")
UNREADABLE = "This dataset cannot be read (the server's log says why)."

DEFAULT_DATA = "data/synthcity"
APP_PRESETS = ("tiny", "demo", "paper")  # the sidebar offers the first two (CPU-sized)


def training_dir() -> Path:
    """Where the app writes new runs: the last folder of ``SFRS_STUDIO_RUN_DIRS`` (default ``runs``)."""
    return Path(run_dirs()[-1])


def preset_config(preset: str, data: str, run: str = "run") -> TrainConfig:
    """The configuration a preset starts from (what the form shows before any change)."""
    return PRESETS[preset](data, run)


def offline_weights(trunk: str) -> bool:
    """Whether ImageNet weights for ``trunk`` load without a download: MobileNetV2's ship with the
    app; the others only when already in torch's hub cache (else the trunk starts from random weights)."""
    if trunk == "mobilenet_v2" and shipped_mobilenet_v2_file() is not None:
        return True
    import torch

    return any((Path(torch.hub.get_dir()) / "checkpoints").glob(f"{trunk}-*.pth"))


def dataset_options() -> list[str]:
    """Datasets to offer: those of the runs found, then ``data/synthcity`` if rendered."""
    options = list(dict.fromkeys(sorted(r.data for r in runs())))
    if (Path(DEFAULT_DATA) / "synthcity.json").is_file() and not any(_same_path(o, DEFAULT_DATA) for o in options):
        options.append(DEFAULT_DATA)
    return options


def _same_path(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def canonical_data(path: str) -> str:
    """``path`` as the runs already spell it when it is one of theirs (so a new run is listed with
    them: pages group runs by this string), else normalised."""
    path = path.strip()
    return next((o for o in dataset_options() if _same_path(o, path)), os.path.normpath(path) if path else path)


def typed_path_problem(path: str) -> str | None:
    """:data:`~viz_app.access.OUTSIDE_ROOTS` for a typed dataset path outside the data roots (checked
    before anything reads it), else None."""
    return None if inside_data_roots(path) is not None else OUTSIDE_ROOTS


def dataset_problem(path: str, splits: tuple[str, ...] = ("train", "val")) -> str | None:
    """Why ``path`` cannot be trained on (the reader's message, naming the file), or None when it
    can. A path that is not one of the runs' datasets must lie in the data roots; anything but a
    dataset error (a permission, a disk error) is one line here and its traceback in the log."""
    if not path.strip():
        return "Choose a dataset folder (or a .mat file)."
    if path not in dataset_options():
        problem = typed_path_problem(path)
        if problem:
            return problem
    try:
        ds = dataset(path)
    except DatasetError as err:
        return f"{err}"
    except Exception:  # noqa: BLE001 - the visitor gets one line, the log the traceback
        LOG.exception("reading the dataset %r", path)
        return UNREADABLE
    missing = [s for s in splits if s not in ds.splits]
    if missing:
        return f"{path}: the dataset has no {' / '.join(missing)} split (it has {', '.join(sorted(ds.splits))}); training needs train and val."
    return None


def job_slots() -> int:
    """Background trainings that may start now beside the live ones (``SFRS_STUDIO_MAX_TRAININGS``,
    the set-up job counted among them)."""
    from viz_app.bootstrap import bootstrap_status, state_dir

    setup = 1 if bootstrap_status(state_dir(DEFAULT_DATA)).alive else 0
    return max_trainings() - setup


def free_run_name(base: str, folder: Path | None = None) -> str:
    """``base``, or ``base-2``, ``base-3``... whichever names no run folder yet."""
    folder = training_dir() if folder is None else folder
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", base).strip("-.") or "run"
    name, n = base, 1
    while (folder / name).exists():
        n += 1
        name = f"{base}-{n}"
    return name


@dataclass(frozen=True)
class TrainOptions:
    """The choices of a training form; ``None`` keeps the preset's value."""

    data: str
    preset: str = "tiny"
    loss: str | None = None
    generations: int | None = None
    epochs: int | None = None
    trunk: str | None = None
    temperatures: tuple[float, ...] | None = None
    lambda_soft: float | None = None

    def args(self) -> list[str]:
        """The ``python -m sfrs_core train`` flags (without ``--run`` / ``--runs-dir``)."""
        out = ["--data", self.data, "--preset", self.preset]
        for flag, value in (("--loss", self.loss), ("--generations", self.generations), ("--epochs", self.epochs),
                            ("--trunk", self.trunk), ("--lambda-soft", self.lambda_soft)):
            if value is not None:
                out += [flag, str(value)]
        if self.temperatures:
            out += ["--temperatures", *(str(t) for t in self.temperatures)]
        return out


def parse_temperatures(text: str) -> tuple[float, ...]:
    """``"0.07, 0.07, 0.06"`` -> ``(0.07, 0.07, 0.06)``; ValueError with a readable message."""
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    if not parts:
        raise ValueError("give at least one temperature, e.g. 0.07, 0.07, 0.06, 0.05")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise ValueError(f"temperatures must be numbers separated by commas, not {text!r}") from None
    if any(v <= 0 for v in values):
        raise ValueError("temperatures must be positive")
    return values


__all__ = ["APP_PRESETS", "DEFAULT_DATA", "LOSS_TYPES", "TRUNKS", "TrainOptions", "canonical_data", "dataset_options",
           "dataset_problem", "free_run_name", "job_slots", "offline_weights", "parse_temperatures", "preset_config",
           "training_dir", "typed_path_problem"]
