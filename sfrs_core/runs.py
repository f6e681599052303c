"""Finished (or running) training runs on disk: discovery and lazy access to their contents.

A run is a folder with ``config.json`` (see :mod:`sfrs_core.training`). The app and the CLI
find runs by scanning folders (by default the shipped ``assets/demo`` and ``runs``).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

DEFAULT_RUN_DIRS = ("assets/demo", "runs")
RUN_DIRS_ENV = "SFRS_STUDIO_RUN_DIRS"  # the app's run folders, separated by os.pathsep


def app_run_dirs() -> tuple[str, ...]:
    """The folders the app finds runs in: ``$SFRS_STUDIO_RUN_DIRS`` or :data:`DEFAULT_RUN_DIRS`."""
    env = os.environ.get(RUN_DIRS_ENV)
    return tuple(p for p in env.split(os.pathsep) if p) if env else DEFAULT_RUN_DIRS


@dataclass
class Run:
    """One run folder."""

    path: Path
    _models: dict[int, Any] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.path.name

    @cached_property
    def config(self) -> dict[str, Any]:
        return json.loads((self.path / "config.json").read_text())

    @property
    def data(self) -> str:
        """The dataset the run was trained on (as given to ``train``)."""
        return self.config["data"]

    @property
    def loss(self) -> str:
        return self.config["loss"]

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))

    @property
    def generations(self) -> list[int]:
        """Finished generations (those with a checkpoint)."""
        return sorted(int(p.stem[3:]) for p in self.path.glob("gen*.pt") if p.stem[3:].isdigit())

    @property
    def result_generations(self) -> list[int]:
        """Generations with test or validation results: those of :attr:`generations`, and in a
        shipped run whose middle generations' weights were left out to save space
        (``training.export.leave_out_weights``), those too (their recall is there, not their model)."""
        found = {int(p.stem.rsplit("_gen", 1)[1]) for p in (self.path / "results").glob("*_gen*.npz")
                 if p.stem.rsplit("_gen", 1)[-1].isdigit()}
        return sorted(found | set(self.generations))

    @property
    def last_generation(self) -> int:
        gens = self.generations
        if not gens:
            raise FileNotFoundError(f"{self.path}: no finished generation yet")
        return gens[-1]

    @property
    def trunk_weights(self) -> dict[str, Any] | None:
        """Where the run's trunk weights came from and their input normalisation, from its
        ``trunk_weights.json`` (written by the trainer when it makes the initial weights, from
        ``sfrs_core.models.backbones.weights_provenance``): keys ``trunk``, ``source`` ("file",
        "torchvision" or "random"), ``path`` and ``sha256`` and ``bytes`` of the file loaded (None
        for random), ``weights`` (torchvision's enum name, e.g. "VGG16_Weights.IMAGENET1K_V1"),
        ``normalization`` {``name`` ("matconvnet"/"imagenet"), ``mean``, ``std``,
        ``description``}, ``random_trunk`` (asked for with --random-trunk) and ``recorded``;
        None for a run that predates the record."""
        try:
            return json.loads((self.path / "trunk_weights.json").read_text())
        except (OSError, ValueError):
            return None

    @property
    def trunk_weights_text(self) -> str:
        """:attr:`trunk_weights` in a few words, e.g. ``'torchvision VGG16_Weights.IMAGENET1K_V1 ·
        imagenet'``, ``'file 1a2b3c4d5e6f… · matconvnet'``, ``'random'``; ``'not recorded'`` for an
        older run."""
        rec = self.trunk_weights
        if not rec:
            return "not recorded"
        norm = (rec.get("normalization") or {}).get("name")
        source = rec.get("source")
        if source == "file":
            what = f"file {Path(str(rec.get('path') or '')).name} (sha256 {str(rec.get('sha256') or '')[:12]}…)"
        elif source == "torchvision":
            what = f"torchvision {rec.get('weights')}"
        else:
            what = "random" + (" (--random-trunk)" if rec.get("random_trunk") else "")
        return f"{what} · {norm}" if norm and source != "random" else what

    @property
    def kind(self) -> str:
        """'SARE' for a one-generation run, 'SFRS' otherwise (as trained, not as far as it got)."""
        return "SARE" if self.config.get("generations", 1) == 1 else "SFRS"

    def metrics(self) -> list[dict[str, Any]]:
        from .training.metrics_log import read_metrics

        return read_metrics(self.path / "metrics.jsonl")

    def progress(self) -> dict[str, Any] | None:
        p = self.path / "progress.json"
        return json.loads(p.read_text()) if p.is_file() else None

    def recall(self, split: str = "test", generation: int | None = None) -> dict[int, float]:
        """Final recall@N of a generation (default: the last) on ``split``, from the metrics log."""
        g = self.last_generation if generation is None else generation
        for r in self.metrics():
            if r.get("final") and r["generation"] == g and r["split"] == split:
                return {int(k.split("@")[1]): v for k, v in r.items() if k.startswith("recall@")}
        return {}

    def results(self, split: str = "test", generation: int | None = None):
        """Per-query results (:class:`~sfrs_core.retrieval.results.QueryResults`) of a generation."""
        from .retrieval.results import QueryResults

        g = self.last_generation if generation is None else generation
        return QueryResults.load(self.path / "results" / f"{split}_gen{g}.npz")

    def soft_labels(self):
        from .explain.soft_labels import load_snapshots

        return load_snapshots(self.path)

    def model(self, generation: int | None = None, device: str = "cpu"):
        """The model of a generation (default: the last), loaded once and kept."""
        from .training.checkpoint import load_model

        g = self.last_generation if generation is None else generation
        if g not in self._models:
            self._models[g] = load_model(self.path / f"gen{g}.pt", device)[0]
        return self._models[g]

    def temperature(self, generation: int) -> float:
        temps = self.config.get("temperatures") or [0.07]
        return float(temps[min(generation, len(temps) - 1)])

    def image_size(self) -> tuple[int, int] | None:
        size = self.config.get("image_size")
        return tuple(size) if size else None

    def problem(self) -> str | None:
        """Why the run cannot be shown (None when it can): an unreadable config, no metrics log, or
        a finished generation whose checkpoint is unreadable (truncated, corrupt, code-carrying:
        checked against the run's manifest, or loaded safely where the manifest has no entry) or whose evaluation results are
        missing or unreadable. One line, naming the file."""
        from .errors import CheckpointError
        from .retrieval.results import QueryResults
        from .training.checkpoint import load_checkpoint, verify_checkpoint

        try:
            config = self.config
        except (OSError, ValueError) as err:
            return f"{self.path / 'config.json'}: unreadable ({type(err).__name__})"
        if not (self.path / "metrics.jsonl").is_file():
            return f"{self.path / 'metrics.jsonl'}: missing"
        splits = [s for s in (config.get("val_split", "val"), config.get("test_split", "test")) if s]
        for g in self.generations:
            try:
                # a checkpoint matching its manifest checksum is what the trainer wrote: no need to
                # unpickle it here (the app's first page would load every run's every generation)
                if not verify_checkpoint(self.path / f"gen{g}.pt"):
                    load_checkpoint(self.path / f"gen{g}.pt")
            except CheckpointError as err:
                return str(err)
            found = [s for s in splits if (self.path / "results" / f"{s}_gen{g}.npz").is_file()]
            if not found:
                return f"{self.path / 'results'}: no evaluation results of generation {g}"
            for split in found:
                try:
                    QueryResults.load(self.path / "results" / f"{split}_gen{g}.npz")
                except Exception as err:  # noqa: BLE001 - any unreadable file is the same problem
                    return f"{self.path / 'results' / f'{split}_gen{g}.npz'}: unreadable ({type(err).__name__})"
        return None


def open_run(path_or_name: str | os.PathLike, dirs: tuple[str, ...] = DEFAULT_RUN_DIRS) -> Run:
    """A run by folder path, or by name inside one of ``dirs``."""
    path = Path(path_or_name)
    if (path / "config.json").is_file():
        return Run(path)
    for d in dirs:
        if (Path(d) / str(path_or_name) / "config.json").is_file():
            return Run(Path(d) / str(path_or_name))
    raise FileNotFoundError(f"no run {str(path_or_name)!r}: not a run folder, and not found in {', '.join(dirs)}")


def files_stamp(path: str | os.PathLike) -> tuple:
    """Names, sizes and times of the files of a run folder and its ``results/``: what its health
    check (:meth:`Run.problem`) reads, so a changed file means checking again."""
    path = Path(path)
    folders = [p for p in (path, path / "results") if p.is_dir()]
    return tuple((f.name, f.stat().st_size, f.stat().st_mtime) for d in folders for f in sorted(d.iterdir())
                 if f.is_file())


_PROBLEMS: dict[str, tuple[tuple, str | None]] = {}  # run folder -> (files_stamp, problem)


def run_problem(path: str | os.PathLike) -> str | None:
    """:meth:`Run.problem` of the run at ``path``, remembered in this process until one of the
    run's files changes (checking means hashing or loading every checkpoint and results file:
    a server checks its runs once, e.g. before its first visitor)."""
    key = str(Path(path).resolve())
    stamp = files_stamp(path)
    known = _PROBLEMS.get(key)
    if known is not None and known[0] == stamp:
        return known[1]
    problem = Run(Path(path)).problem()
    _PROBLEMS[key] = (stamp, problem)
    return problem


def discover_runs(dirs: tuple[str, ...] = DEFAULT_RUN_DIRS) -> list[Run]:
    """Every run folder directly inside ``dirs`` (missing folders are skipped), sorted by path."""
    runs = []
    for d in dirs:
        base = Path(d)
        if base.is_dir():
            runs += [Run(p) for p in sorted(base.iterdir()) if (p / "config.json").is_file()]
    return runs
