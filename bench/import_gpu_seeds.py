"""Unpack what bench/gpu_demo_seeds.sh brought back from a GPU machine into assets/{demo,challenge}.

    python bench/import_gpu_seeds.py /work/.device/.../files   # the folder holding exports.tar.part-*

The machine sends only each seed's SFRS export; the seed's SARE folder is rebuilt here from that
run's generation 0 (``export_run(..., generations=1)``, exactly what the demo builder does with the
full-precision run). Seeds after the first keep only their last generation's weights (with every
generation's recall, results and soft labels): the shipped assets stay within their size budget.
Timings from every seed are merged into each city's ``timings.json``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sfrs_core.demo_cities import CITIES  # noqa: E402
from sfrs_core.io import atomic_write_json  # noqa: E402
from sfrs_core.training.demo import demo_run_names  # noqa: E402
from sfrs_core.training.export import export_run, leave_out_weights  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", type=Path, help="folder with exports.tar.part-*")
    parser.add_argument("--assets", type=Path, default=Path("assets"))
    args = parser.parse_args()
    parts = sorted(args.files.glob("exports.tar.part-*"))
    if not parts:
        raise SystemExit(f"{args.files}: no exports.tar.part-* files")
    with tempfile.TemporaryDirectory() as tmp:
        tar_path = Path(tmp) / "exports.tar"
        with tar_path.open("wb") as out:
            for part in parts:
                out.write(part.read_bytes())
        with tarfile.open(tar_path) as tar:
            tar.extractall(tmp, filter="data")
        root = Path(tmp) / "exports"
        for city, (_, _, default_out) in CITIES.items():
            seeds = sorted(root.glob(f"{city}/seed*"), key=lambda p: int(p.name[4:]))
            if not seeds:
                continue
            out = args.assets / Path(default_out).name
            out.mkdir(parents=True, exist_ok=True)
            timings_file = out / "timings.json"
            timings = json.loads(timings_file.read_text()) if timings_file.is_file() else {}
            for folder in seeds:
                seed = int(folder.name[4:])
                sare, sfrs = demo_run_names(seed)
                if not (folder / sfrs / "config.json").is_file():
                    print(f"{city} seed {seed}: no finished SFRS export, skipped")
                    continue
                if (out / sfrs).exists():
                    shutil.rmtree(out / sfrs)
                shutil.copytree(folder / sfrs, out / sfrs)
                export_run(out / sfrs, out / sare, generations=1)
                if seed != 0:
                    last = json.loads((out / sfrs / "config.json").read_text())["generations"] - 1
                    leave_out_weights(out / sfrs, keep=[last])
                seed_timings = json.loads((folder / "timings.json").read_text())
                timings.update(seed_timings)
                print(f"{city} seed {seed}: {out / sare}, {out / sfrs} ({seed_timings.get(str(seed))} min)")
            atomic_write_json(timings_file, dict(sorted(timings.items(), key=lambda kv: int(kv[0]))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
