"""What the command line prints: a dataset's summary, a run's final recall, the tables over seeds.

Each function prints to stdout (notes too, as the command line always has). Heavy modules are
imported inside the functions, so that importing this one costs nothing.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import DatasetError

if TYPE_CHECKING:
    from .retrieval.localize import Localization


def print_dataset_summary(summary: dict) -> None:
    """A dataset's :meth:`~sfrs_core.data.dataset.PlaceDataset.summary` as a table per split."""
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
        away = s.get("positives_10m_facing_away")
        if away and away["pairs"]:
            print(f"{name} positives within {away['radius_m']:g} m that look at another scene (headings > {away['away_deg']:g}° "
                  f"apart): {100 * away['share_away']:.1f} % of {away['pairs']} pairs; queries with no positive facing their "
                  f"way: {100 * away['queries_all_away']:.1f} %")
    for name, s in summary["splits"].items():
        if "query_conditions" in s:
            tags: dict[str, int] = {}
            for note, n in s["query_conditions"].items():
                for tag in note.split("+"):
                    tags[tag] = tags.get(tag, 0) + n
            print(f"{name} query conditions: " + ", ".join(f"{t} {n}" for t, n in sorted(tags.items())))


def print_run_summary(run_dir: Path) -> None:
    """A run's final recall@1/5/10/20 per generation and split (its ``metrics.jsonl``)."""
    from .training.metrics_log import read_metrics

    finals = [r for r in read_metrics(run_dir / "metrics.jsonl") if r.get("final")]
    print(f"run {run_dir}")
    print(f"{'gen':>3} {'split':<6} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'R@20':>6}")
    for r in finals:
        print(f"{r['generation']:>3} {r['split']:<6} " + " ".join(f"{100 * r.get(f'recall@{n}', float('nan')):6.1f}" for n in (1, 5, 10, 20)))


def print_localization(image: str | os.PathLike, notes: Sequence[str], result: Localization) -> None:
    """A photo's matches, one line each (with the distance to the photo's GPS when it has one); the
    photo's ``notes`` (conversions, an unusable GPS block) and ``result``'s warnings to stderr."""
    for note in notes:
        print(f"note: {image}: {note}", file=sys.stderr)
    for warning in result.warnings:
        print(f"warning: {image}: {warning}", file=sys.stderr)
    for m, err in zip(result.matches, result.errors_m):
        where = f"  {err:8.1f} m from the photo's GPS" if err is not None else ""
        print(f"{m.rank:>2}. sim {m.similarity:.3f}  lat {m.latlon[0]:.6f} lon {m.latlon[1]:.6f}  {m.path}{where}")


def print_seed_tables(runs_dirs: Sequence[str | os.PathLike], split: str) -> None:
    """Recall of the finished runs in ``runs_dirs`` grouped by seed (mean ± std, per query condition
    when the dataset is at hand), and each group's generations paired against generation 0."""
    from .data import load_dataset
    from .paired import BOOTSTRAP_REPLICATES
    from .runs import discover_runs
    from .seeds import markdown_table, paired_diffs, paired_rows, seed_groups, seed_summary, summary_rows

    runs = [r for r in discover_runs(tuple(str(d) for d in runs_dirs)) if r.generations]
    if not runs:
        raise FileNotFoundError(f"no finished run in {', '.join(map(str, runs_dirs))}")
    conditions: dict[str, object] = {}
    for group in seed_groups(runs):
        data = group.runs[0].data
        if data not in conditions:
            try:
                conditions[data] = load_dataset(data)[split].queries.condition
            except (DatasetError, FileNotFoundError) as err:  # recall per condition needs the dataset; the rest not
                print(f"note: {data}: {err}; recall per query condition left out")
                conditions[data] = None
        stats = seed_summary(group, split, conditions[data])
        print(f"{group.label} (seeds {group.seeds}), {data} / {split}, mean ± std (%) over seeds:")
        print(markdown_table(summary_rows(group, stats)))
        diffs = paired_diffs(group, split)
        if diffs and len(group.runs) > 1:
            print(f"\npaired against generation 0 (the SARE baseline of each seed), in points of recall; "
                  f"95 % interval from {BOOTSTRAP_REPLICATES} bootstrap replicates over seeds x queries; "
                  f"sign test over seeds (two-sided; with {len(group.runs)} seeds its smallest p is {2 / 2 ** len(group.runs):.4g}):")
            print(markdown_table(paired_rows(diffs)))
        print()


def print_attention_tables(runs_dirs: Sequence[str | os.PathLike], split: str, method: str,
                           queries: int | None = None, out: str | os.PathLike | None = None,
                           progress: bool = True) -> None:
    """Where SFRS looks against its seed's SARE baseline, one table per multi-generation seed group
    of ``runs_dirs`` (the first ``queries`` queries, default all); the numbers also to JSON ``out``."""
    from .data import load_dataset
    from .io import atomic_write_json
    from .runs import discover_runs
    from .seed_attention import attention_rows, seed_attention
    from .seeds import markdown_table, seed_groups

    runs = [r for r in discover_runs(tuple(str(d) for d in runs_dirs)) if r.generations]
    groups = [g for g in seed_groups(runs) if len(g.generations) > 1]
    if not groups:
        raise FileNotFoundError(f"no multi-generation (SFRS) run in {', '.join(map(str, runs_dirs))}")
    found = {}
    for group in groups:
        place_split = load_dataset(group.runs[0].data)[split]
        picked = None if queries is None else range(min(queries, len(place_split.queries)))
        summary = seed_attention(group, runs, place_split, split, method, picked, progress=progress)
        found[group.label] = summary
        print(f"{group.label} (seeds {group.seeds}), {group.runs[0].data} / {split}: where the {method} heatmap's "
              f"mass falls, generation {summary['generation']} against its seed's SARE, over {summary['queries']} queries; "
              f"brackets: 95 % interval, bootstrap over seeds x queries (points):")
        print(markdown_table(attention_rows(summary)))
        print()
    if out:
        atomic_write_json(out, found)
        print(f"written to {out}")
