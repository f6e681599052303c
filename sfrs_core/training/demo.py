"""The shipped demo models: a SARE baseline and a 4-generation SFRS run on SynthCity, on CPU."""
from __future__ import annotations

import json
import time
from pathlib import Path

from ..data.synthcity import generate, is_complete, preset
from .export import export_run
from .presets import demo_config
from .trainer import resume_run, train


def build_demo_models(data: str | Path = "data/synthcity", out: str | Path = "assets/demo",
                      runs_dir: str | Path = "runs", progress: bool = True) -> dict[str, Path]:
    """Render SynthCity ``demo`` if missing, train the SFRS demo run (resuming a partial one),
    and export ``out/sare`` (its generation 0: the SARE baseline) and ``out/sfrs``."""
    data, out, runs_dir = Path(data), Path(out), Path(runs_dir)
    if not is_complete(data):
        generate(preset("demo"), data, overwrite=data.exists(), progress=progress)
    run = runs_dir / "demo-sfrs"
    start = time.time()
    if (run / "config.json").is_file():
        progress_file = run / "progress.json"
        status = json.loads(progress_file.read_text())["status"] if progress_file.is_file() else "unknown"
        if status != "finished":
            resume_run(run, progress=progress)
    else:
        train(demo_config(str(data), run.name).replace(runs_dir=str(runs_dir)), progress=progress)
    minutes = (time.time() - start) / 60
    paths = {"sare": export_run(run, out / "sare", generations=1), "sfrs": export_run(run, out / "sfrs")}
    print(f"demo models trained in {minutes:.1f} min and written to {out}")
    return paths
