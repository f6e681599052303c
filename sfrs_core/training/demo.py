"""The shipped demo models: SARE baselines and 4-generation SFRS runs on SynthCity, over seeds.

Each seed trains one SFRS run (``runs/{city}-sfrs-seed{s}``); its generation 0 is the SARE
baseline. Seed 0 is exported as ``sare/`` and ``sfrs/`` (the runs the app shows by default), the
other seeds as ``sare-seed{s}/`` and ``sfrs-seed{s}/``: runs that differ only in their seed, which
the app and the README report together as mean ± std, and pair (``sfrs_core.seeds``). Two cities,
each a SynthCity preset with its own folders (:data:`CITIES`): ``demo`` and ``challenge`` (the
paper's challenges on).
"""
from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

from ..data.synthcity import generate, is_complete, preset
from ..demo_cities import CITIES, DEMO_SEEDS
from ..io import atomic_write_json
from .export import export_run
from .presets import demo_config
from .trainer import resume_run, train



def demo_run_names(seed: int) -> tuple[str, str]:
    """Folder names of a seed's exported SARE and SFRS runs."""
    return ("sare", "sfrs") if seed == 0 else (f"sare-seed{seed}", f"sfrs-seed{seed}")


def build_demo_models(data: str | Path | None = None, out: str | Path | None = None,
                      runs_dir: str | Path = "runs", progress: bool = True,
                      seeds: Sequence[int] = DEMO_SEEDS, city: str = "demo") -> dict[str, Path]:
    """Render the ``city``'s SynthCity if missing, train the SFRS demo run of every seed (resuming
    a partial one, skipping a finished one), and export each seed's SARE baseline (generation 0)
    and SFRS run. Training minutes per seed go to ``out/timings.json``."""
    if city not in CITIES:
        raise ValueError(f"unknown demo city {city!r}; choose one of {sorted(CITIES)}")
    synth, default_data, default_out = CITIES[city]
    data, out, runs_dir = Path(data or default_data), Path(out or default_out), Path(runs_dir)
    if not is_complete(data):
        generate(preset(synth), data, overwrite=data.exists(), progress=progress)
    timings_file = out / "timings.json"
    timings = json.loads(timings_file.read_text()) if timings_file.is_file() else {}
    paths: dict[str, Path] = {}
    for seed in seeds:
        run = runs_dir / f"{city}-sfrs-seed{seed}"
        start = time.time()
        trained = _train_or_resume(run, data, runs_dir, seed, progress)
        if trained:
            timings[str(seed)] = round((time.time() - start) / 60, 1)
            print(f"demo seed {seed} trained in {timings[str(seed)]:.1f} min")
        sare, sfrs = demo_run_names(seed)
        paths[sare] = export_run(run, out / sare, generations=1)
        paths[sfrs] = export_run(run, out / sfrs)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(timings_file, timings)
    print(f"demo models of seeds {list(seeds)} written to {out}")
    return paths


def _train_or_resume(run: Path, data: Path, runs_dir: Path, seed: int, progress: bool) -> bool:
    """Train (or finish) one seed's run; False when it was already finished."""
    if (run / "config.json").is_file():
        progress_file = run / "progress.json"
        status = json.loads(progress_file.read_text())["status"] if progress_file.is_file() else "unknown"
        if status == "finished":
            return False
        resume_run(run, progress=progress)
        return True
    train(demo_config(str(data), run.name).replace(runs_dir=str(runs_dir), seed=seed), progress=progress)
    return True
