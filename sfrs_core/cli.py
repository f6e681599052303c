"""One command line for SFRS Studio: ``python -m sfrs_core COMMAND ...``."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .data.errors import DatasetError


def _cmd_synth(args: argparse.Namespace) -> int:
    from .data.synthcity import generate, preset

    cfg = preset(args.preset, seed=args.seed)
    out = generate(cfg, args.out, workers=args.workers, overwrite=args.overwrite, progress=not args.quiet)
    print(f"SynthCity preset {args.preset!r} (seed {cfg.seed}) written to {out}")
    return 0


def _cmd_synth_sample(args: argparse.Namespace) -> int:
    from .data.synthcity import preset
    from .data.synthcity.sample import save_contact_sheet

    out = save_contact_sheet(preset(args.preset, seed=args.seed), args.out)
    print(f"contact sheet written to {out} ({out.stat().st_size // 1024} KB)")
    return 0


def _print_summary(summary: dict) -> None:
    print(f"{summary['name']}  ({summary['format']})  {summary['root']}")
    header = f"{'split':<6} {'database':>9} {'queries':>8} {'zone':>5} {'extent (m)':>16} {'km²':>8} {'pos@25m mean/min/max':>22} {'no pos':>7}"
    print(header)
    print("-" * len(header))
    for name, s in summary["splits"].items():
        p = s["positives_25m"]
        ext = f"{s['extent_m'][0]:.0f} x {s['extent_m'][1]:.0f}"
        print(f"{name:<6} {s['database']:>9} {s['queries']:>8} {s['utm_zone']:>5} {ext:>16} {s['area_km2']:>8.3f} "
              f"{p['mean']:>12.1f} / {p['min']} / {p['max']:<4} {p['queries_without']:>6}")
    for name, s in summary["splits"].items():
        if "query_conditions" in s:
            tags: dict[str, int] = {}
            for note, n in s["query_conditions"].items():
                for tag in note.split("+"):
                    tags[tag] = tags.get(tag, 0) + n
            print(f"{name} query conditions: " + ", ".join(f"{t} {n}" for t, n in sorted(tags.items())))


def _cmd_info(args: argparse.Namespace) -> int:
    from .data.loaders import load_dataset

    ds = load_dataset(args.path, format=args.format)
    summary = ds.summary()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        _print_summary(summary)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sfrs_core", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="render a SynthCity dataset in the VPR folder format")
    p.add_argument("--preset", default="demo", choices=["tiny", "demo", "large"])
    p.add_argument("--out", type=Path, default=Path("data/synthcity"))
    p.add_argument("--seed", type=int, default=None, help="override the preset's seed (default 0)")
    p.add_argument("--workers", type=int, default=None, help="render processes (default: all cores)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("synth-sample", help="write a SynthCity contact sheet (views of one place, queries, labels)")
    p.add_argument("--preset", default="demo", choices=["tiny", "demo", "large"])
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", type=Path, default=Path("assets/synthcity_sample.jpg"))
    p.set_defaults(func=_cmd_synth_sample)

    p = sub.add_parser("info", help="summarise a dataset: counts per split, area, positives per query")
    p.add_argument("path", type=Path, help="dataset folder or .mat file")
    p.add_argument("--format", default=None, choices=["vpr_folder", "pittsburgh", "tokyo247", "exif"])
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DatasetError, FileExistsError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
