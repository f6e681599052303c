"""The whole figure set of a SARE-vs-SFRS comparison, for a paper (``export-figures``)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..data import load_dataset
from ..figures import (attention_bars, heatmap_grid, recall_curves, retrieval_grid, save_figure,
                       soft_label_evolution)
from ..io import atomic_write_json
from ..runs import Run, open_run
from .attention import attention_by_class
from .heatmap_core import load_rgb
from .heatmaps import compute_heatmap, describe
from .outcomes import showcase_queries
from .overlay import overlay
from .soft_labels import entropy


def _label(run: Run, generation: int | None = None) -> str:
    name = f"{run.kind} ({run.name})" if run.name.lower() not in ("sare", "sfrs") else run.kind
    return name if generation is None or generation == run.last_generation else f"{name} gen {generation}"


def export_figure_set(run_paths: list[str], out: str | Path, *, split: str = "test", method: str = "decomp",
                      n_queries: int = 3, top_k: int = 5, attention_queries: int | None = None,
                      formats: tuple[str, ...] = ("pdf", "svg", "png"), dpi: int = 200, progress: bool = True,
                      generations: list[int | None] | None = None) -> list[Path]:
    """Write recall curves, retrieval and heatmap grids, soft-label evolution and attention bars
    for the given runs (the first is the baseline, the last the SFRS run) to ``out``.

    ``generations[i]`` picks the generation of run i (None or absent: its last); the recall curves
    also show every other generation of multi-generation runs."""
    t0 = time.time()
    out = Path(out)
    runs = [open_run(p) for p in run_paths]
    gens = [g if g is not None else r.last_generation for r, g in zip(runs, generations or [None] * len(runs))]
    labels = [_label(r, g) for r, g in zip(runs, gens)]
    ds = load_dataset(runs[-1].data)
    sp = ds[split]
    results = [r.results(split, g) for r, g in zip(runs, gens)]
    written: list[Path] = []

    curves = {lab: r.recall(split, g) for lab, r, g in zip(labels, runs, gens)}
    for r, g in zip(runs, gens):
        if len(r.generations) > 1:
            curves.update({f"{r.kind} gen {x}": r.recall(split, x) for x in r.generations if x != g})
    written += save_figure(recall_curves(curves, title=f"Recall@N, {ds.name} {split}"), out / "recall_curves", formats, dpi)

    queries = showcase_queries(results[0], results[-1], n_queries)
    q_imgs = [sp.queries.image_path(q) for q in queries]
    rows_q, rows_ret, rows_dist, row_labels = [], [], [], []
    for q in queries:
        for lab, res in zip(labels, results):
            rows_q.append(sp.queries.image_path(q))
            rows_ret.append([sp.database.image_path(int(i)) for i in res.ids[q, :top_k]])
            rows_dist.append(res.distances_m[q, :top_k].tolist())
            row_labels.append(lab)
    written += save_figure(retrieval_grid(rows_q, rows_ret, rows_dist, row_labels=row_labels, group_size=len(runs)),
                           out / "retrieval_grid", formats, dpi)

    maps: dict[str, list[np.ndarray]] = {lab: [] for lab in labels}
    sims: dict[str, list[float]] = {lab: [] for lab in labels}
    matches, correct = [], []
    size = runs[-1].image_size()
    for q, qpath in zip(queries, q_imgs):
        row_matches, row_correct = [], []
        for lab, run, g, res in zip(labels, runs, gens, results):
            model = run.model(g)
            mpath = sp.database.image_path(int(res.ids[q, 0]))
            hm = compute_heatmap(model, qpath, method, describe(model, mpath, size=size), size=size)
            maps[lab].append(overlay(load_rgb(qpath, size), hm.image, signed=hm.signed))
            sims[lab].append(float(hm.similarity) if hm.similarity is not None else float(res.similarities[q, 0]))
            row_matches.append(mpath)
            row_correct.append(bool(res.correct[q, 0]))
        matches.append(row_matches)
        correct.append(row_correct)
    written += save_figure(heatmap_grid(q_imgs, maps, matches, similarities=sims, match_correct=correct,
                                        match_titles=[f"{lab} top-1" for lab in labels]),
                           out / f"heatmaps_{method}", formats, dpi)

    sfrs = runs[-1]
    snaps = sfrs.soft_labels()
    if snaps:
        dists = [s.distributions[0] for s in snaps]
        temps = [s.temperature for s in snaps]
        glabels = [f"gen {s.generation}→{s.generation + 1}" for s in snaps]
        written += save_figure(soft_label_evolution(dists, temps, glabels), out / "soft_label_evolution", formats, dpi)

    table = {}
    if sp.queries.label_root is not None:
        qs = None if attention_queries is None else range(min(attention_queries, len(sp.queries)))
        for lab, run, g, res in zip(labels, runs, gens, results):
            table[lab] = attention_by_class(run.model(g), sp, res, method, qs, size, progress)
        written += save_figure(attention_bars({lab: t["shares"] for lab, t in table.items()},
                                              title=f"Heatmap mass by class ({method})"), out / f"attention_{method}", formats, dpi)
    summary = {
        "runs": {lab: str(r.path) for lab, r in zip(labels, runs)}, "generations": dict(zip(labels, gens)),
        "split": split, "method": method,
        "recall": {lab: {str(n): v for n, v in c.items()} for lab, c in curves.items()},
        "showcase_queries": queries, "attention": table,
        "soft_label_entropy": {f"gen{s.generation}": float(entropy(s.distributions).mean()) for s in snaps},
        "seconds": round(time.time() - t0, 1),
    }
    written.append(atomic_write_json(out / "summary.json", summary))
    return written


def figure_set_zip(run_paths: list[str], **kwargs) -> bytes:
    """:func:`export_figure_set` written to a temporary folder and returned as the bytes of a zip."""
    import io
    import tempfile
    import zipfile

    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory(prefix="sfrs-figures-") as tmp:
        written = export_figure_set(run_paths, tmp, **kwargs)
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(written):
                zf.write(path, Path(path).relative_to(tmp).as_posix())
    return buffer.getvalue()
