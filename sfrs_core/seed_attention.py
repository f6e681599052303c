"""The attention claim over seeds: where SFRS's last generation looks, against its own seed's SARE
baseline, query by query, with 95 % intervals.

For every seed of an SFRS seed group and every query of the split, both models' heatmaps of the
query against their own top-1 match (``explain.attention.per_query_attention``) give the share of
the heatmap's mass on each SynthCity class and the sign pointing game (does the heatmap's maximum
fall on a sign; queries without a sign in view are left out of it, the same queries for every
seed). The differences SFRS - SARE are paired by seed and query and get the two-way bootstrap
interval and sign test of :mod:`sfrs_core.paired`.

The SARE model of a seed is generation 0 of its SFRS run where that run kept the weights, else the
seed's shipped SARE run (same configuration but ``generations`` 1).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from .data.synthcity.labels import CLASSES
from .paired import paired_diff
from .runs import Run
from .seeds import SEED_FREE_KEYS, SeedGroup


def baseline_run(run: Run, candidates: Sequence[Run]) -> Run:
    """The run holding ``run``'s generation-0 (SARE) weights: itself, or a run of the same seed and
    configuration trained for one generation."""
    if 0 in run.generations:
        return run
    own = {k: v for k, v in run.config.items() if k not in (*SEED_FREE_KEYS, "generations")}
    for other in candidates:
        cfg = {k: v for k, v in other.config.items() if k not in (*SEED_FREE_KEYS, "generations")}
        if other.seed == run.seed and other.config.get("generations") == 1 and cfg == own and 0 in other.generations:
            return other
    raise FileNotFoundError(f"{run.path}: generation 0's weights were left out and no SARE run of seed {run.seed} "
                            f"with the same configuration is among the runs given")


def seed_attention(group: SeedGroup, runs: Sequence[Run], place_split, split: str = "test", method: str = "decomp",
                   queries: Sequence[int] | None = None, progress: bool = False) -> dict:
    """SFRS (the group's last generation) against SARE, per seed and paired: a JSON-ready dict with
    per class the per-seed mean shares of both and the paired difference, and the same for the
    sign pointing game."""
    from .explain.attention import per_query_attention

    last = group.generations[-1]
    queries = list(range(len(place_split.queries)) if queries is None else queries)
    shares = {"sare": [], "sfrs": []}  # per seed: Q x C
    hits = {"sare": [], "sfrs": []}
    area = None
    for run in group.runs:
        base = baseline_run(run, runs)
        for name, (r, g) in (("sare", (base, 0)), ("sfrs", (run, last))):
            s, h, a = per_query_attention(r.model(g), place_split, r.results(split, g), method, queries, progress=progress)
            shares[name].append(np.array([[q[c] for c in CLASSES] for q in s]))
            hits[name].append(h)
            area = area if area is not None else np.array([[q[c] for c in CLASSES] for q in a]).mean(axis=0)
    sare, sfrs = np.stack(shares["sare"]), np.stack(shares["sfrs"])  # S x Q x C
    classes = {}
    for i, c in enumerate(CLASSES):
        d = paired_diff(sfrs[:, :, i], sare[:, :, i])
        classes[c] = {"area": float(area[i]), "sare": sare[:, :, i].mean(axis=1).tolist(),
                      "sfrs": sfrs[:, :, i].mean(axis=1).tolist(), "diff": dataclasses.asdict(d)}
    with_sign = [j for j in range(len(queries)) if hits["sare"][0][j] is not None]
    pointing = {"queries": len(with_sign)}
    if with_sign:
        hs = np.array([[bool(h[j]) for j in with_sign] for h in hits["sfrs"]])
        hb = np.array([[bool(h[j]) for j in with_sign] for h in hits["sare"]])
        pointing.update(sare=hb.mean(axis=1).tolist(), sfrs=hs.mean(axis=1).tolist(), diff=dataclasses.asdict(paired_diff(hs, hb)))
    return {"runs": [r.name for r in group.runs], "seeds": group.seeds, "generation": last, "split": split,
            "method": method, "queries": len(queries), "classes": classes, "pointing": pointing}


def attention_rows(summary: dict) -> list[dict]:
    """Table rows: per class, the image area share, SARE's and SFRS's mean share over seeds, and
    the paired difference with its 95 % interval (points of the heatmap's mass); then the sign
    pointing game."""
    def diff_text(d: dict) -> str:
        return f"{100 * d['mean']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"

    def established(d: dict) -> str:
        return "yes" if d["low"] > 0 or d["high"] < 0 else "no"

    rows = []
    for c, v in summary["classes"].items():
        rows.append({"class": c, "area %": f"{100 * v['area']:.1f}", "SARE %": f"{100 * np.mean(v['sare']):.1f}",
                     "SFRS %": f"{100 * np.mean(v['sfrs']):.1f}", "SFRS − SARE [95 %]": diff_text(v["diff"]),
                     "seeds up/down": f"{v['diff']['seeds_up']}/{v['diff']['seeds_down']}",
                     "established": established(v["diff"])})
    p = summary["pointing"]
    if "diff" in p:
        rows.append({"class": f"sign pointing game ({p['queries']} queries)", "area %": "",
                     "SARE %": f"{100 * np.mean(p['sare']):.1f}", "SFRS %": f"{100 * np.mean(p['sfrs']):.1f}",
                     "SFRS − SARE [95 %]": diff_text(p["diff"]),
                     "seeds up/down": f"{p['diff']['seeds_up']}/{p['diff']['seeds_down']}",
                     "established": established(p["diff"])})
    return rows
