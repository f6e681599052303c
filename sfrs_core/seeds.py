"""Runs that differ only in their seed, reported together: recall as mean ± std over seeds.

One training run is one draw: on the SynthCity demo, the same configuration rerun with another
seed moves recall@1 by several points. :func:`seed_groups` gathers runs whose configurations are
equal but for ``seed`` (and the run's name and folder); :func:`seed_summary` gives, per
generation and per query condition (time of day: day / dusk / night, and "all"), recall@N over the
group's seeds as mean and sample standard deviation (n - 1), with the per-seed values.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .paired import PairedDiff, generation_diffs
from .retrieval.metrics import recall_from_hits
from .retrieval.results import QueryResults
from .runs import Run

#: Config keys that do not make two runs different experiments.
SEED_FREE_KEYS = ("seed", "run", "runs_dir")
#: Settings added to ``TrainConfig`` after runs were written, with the value those runs trained
#: with: a run holding that value and one that predates the key are the same experiment.
LATER_KEYS = {"random_trunk": False, "kmeans_init": "faiss", "tuples_per_batch_scope": "rank",
              "per_rank_negative_cache": False}
ALL = "all"


def experiment_key(run: Run) -> str:
    """The run's configuration without its seed, name and folder, as a canonical string (a
    :data:`LATER_KEYS` setting at the value older runs trained with counts as absent)."""
    return json.dumps({k: v for k, v in run.config.items()
                       if k not in SEED_FREE_KEYS and not (k in LATER_KEYS and v == LATER_KEYS[k])}, sort_keys=True)


@dataclass(frozen=True)
class SeedGroup:
    """Runs of one experiment, one per seed (sorted by seed)."""

    runs: tuple[Run, ...]

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs]

    @property
    def kind(self) -> str:
        return self.runs[0].kind

    @property
    def label(self) -> str:
        """e.g. ``SFRS · sfrs, sfrs-seed1, sfrs-seed2``."""
        return f"{self.kind} · " + ", ".join(r.name for r in self.runs)

    @property
    def generations(self) -> list[int]:
        """Generations every run of the group has results for (a shipped run may have left out a
        middle generation's weights, never its results)."""
        common = set(self.runs[0].result_generations)
        for r in self.runs[1:]:
            common &= set(r.result_generations)
        return sorted(common)


def seed_groups(runs: Iterable[Run]) -> list[SeedGroup]:
    """Group runs by :func:`experiment_key`; a seed that appears twice keeps its first run.
    Groups come in the order of their first run."""
    groups: dict[str, dict[int, Run]] = {}
    for run in runs:
        seeds = groups.setdefault(experiment_key(run), {})
        seeds.setdefault(run.seed, run)
    return [SeedGroup(tuple(seeds[s] for s in sorted(seeds))) for seeds in groups.values()]


def time_of_day(condition: str) -> str:
    """'night+blur' -> 'night' (SynthCity tags are the time of day, then '+'-joined effects)."""
    return condition.split("+")[0]


def condition_recall(results: QueryResults, conditions: Sequence[str] | None,
                     ns: Sequence[int] = (1, 5, 10)) -> dict[str, dict[int, float]]:
    """Recall@N of all queries and of each time of day (when the split has conditions)."""
    ns = [n for n in ns if n <= results.k]
    out = {ALL: recall_from_hits(results.correct, ns)}
    if conditions is not None:
        tags = np.array([time_of_day(conditions[q]) for q in results.queries])
        for tag in sorted(set(tags), key=_condition_order):
            out[str(tag)] = recall_from_hits(results.correct[tags == tag], ns)
    return out


def _condition_order(tag: str) -> tuple[int, str]:
    order = {"day": 0, "dusk": 1, "sunset": 1, "night": 2}
    return order.get(tag, 9), tag


@dataclass(frozen=True)
class SeedStat:
    """Recall@N (fractions) of one experiment, generation and condition over its seeds."""

    generation: int
    condition: str
    n: int
    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def std(self) -> float:
        """Sample standard deviation (n - 1); 0 for a single seed."""
        return float(np.std(self.values, ddof=1)) if len(self.values) > 1 else 0.0

    def text(self) -> str:
        """'83.5 ± 1.2' in %, or '83.5' for one seed."""
        return f"{100 * self.mean:.1f} ± {100 * self.std:.1f}" if len(self.values) > 1 else f"{100 * self.mean:.1f}"


def seed_summary(group: SeedGroup, split: str, conditions: Sequence[str] | None,
                 generations: Sequence[int] | None = None, ns: Sequence[int] = (1, 5, 10),
                 load: Callable[[Run, str, int], QueryResults] | None = None) -> list[SeedStat]:
    """Recall@N over the group's seeds per generation (default: all finished ones) and condition.

    ``load(run, split, generation)`` reads per-query results (default ``run.results``; the app
    passes its cached loader).
    """
    load = load or (lambda run, s, g: run.results(s, g))
    stats = []
    for g in generations if generations is not None else group.generations:
        per_seed = [condition_recall(load(run, split, g), conditions, ns) for run in group.runs]
        for cond in per_seed[0]:
            for n in per_seed[0][cond]:
                stats.append(SeedStat(g, cond, n, tuple(r[cond][n] for r in per_seed)))
    return stats


def summary_rows(group: SeedGroup, stats: Sequence[SeedStat]) -> list[dict[str, Any]]:
    """One table row per generation: method, seeds, R@N of all queries and R@1 per condition, as text."""
    rows: dict[int, dict[str, Any]] = {}
    for s in stats:
        row = rows.setdefault(s.generation, {"method": group.kind, "generation": s.generation,
                                             "seeds": len(group.runs)})
        if s.condition == ALL:
            row[f"R@{s.n}"] = s.text()
        elif s.n == 1:
            row[f"R@1 {s.condition}"] = s.text()
    return list(rows.values())


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of dict rows (columns: the union of their keys, in first-seen order)."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "—")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def _aligned_correct(results: QueryResults, queries: np.ndarray) -> np.ndarray:
    """``results.correct`` in the order of ``queries`` (a run may list its queries in another order)."""
    order = {int(q): i for i, q in enumerate(results.queries)}
    missing = [int(q) for q in queries if int(q) not in order]
    if missing:
        raise ValueError(f"{results.run}: no result for queries {missing[:5]}; paired comparison needs every query")
    return results.correct[[order[int(q)] for q in queries]]


def paired_diffs(group: SeedGroup, split: str, ns: Sequence[int] = (1, 5, 10),
                 load: Callable[[Run, str, int], QueryResults] | None = None) -> dict[int, dict[int, PairedDiff]]:
    """For each generation after 0 of a multi-generation group: recall@N minus generation 0's (the
    SARE baseline each SFRS seed starts from), paired by seed and query (:mod:`sfrs_core.paired`)."""
    load = load or (lambda run, s, g: run.results(s, g))
    gens = group.generations
    if len(gens) < 2 or gens[0] != 0:
        return {}
    first = load(group.runs[0], split, 0)
    queries = np.sort(first.queries)
    ns = [n for n in ns if n <= first.k]
    hits = [{g: _aligned_correct(load(run, split, g), queries) for g in gens} for run in group.runs]
    return generation_diffs(hits, ns)


def paired_rows(diffs: dict[int, dict[int, PairedDiff]]) -> list[dict[str, Any]]:
    """One row per generation: the paired gain in recall@N with its 95 % interval, the seeds that
    went up / down with the sign test's p, and whether the R@1 gain is established."""
    rows = []
    for g, by_n in diffs.items():
        row: dict[str, Any] = {"generation": f"{g} − 0 (SARE)"}
        for n, d in by_n.items():
            row[f"ΔR@{n} [95 %]"] = d.text()
        first = next(iter(by_n.values()))
        row["seeds up/down (R@1)"] = f"{first.seeds_up}/{first.seeds_down}"
        row["sign test p"] = f"{first.sign_p:.3f}"
        row["R@1 gain"] = first.verdict()
        rows.append(row)
    return rows
