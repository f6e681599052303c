"""One query and its top-1 match under a run's model, each with its heatmap (the ``explain``
command): the query chosen from a run's split, its match from the run's saved results, the two
heatmaps computed against each other and written as one figure in several formats."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..data import load_dataset
from ..figures import heatmap_grid, save_figure
from ..runs import open_run
from .heatmap_core import load_rgb
from .heatmaps import compute_heatmap, describe
from .overlay import overlay


@dataclass(frozen=True)
class TopMatchFigure:
    """What :func:`top_match_figure` wrote: the query, its top-1 database image and the files."""

    query: int
    match: int  # database index of the top-1
    distance_m: float  # between the query and its match
    correct: bool  # the match is a true positive
    paths: list[Path]

    def summary(self) -> str:
        """One line: the query, its match and the files written."""
        return (f"query {self.query} -> db {self.match} ({self.distance_m:.1f} m, "
                f"{'right' if self.correct else 'wrong'}); written: " + ", ".join(map(str, self.paths)))


def top_match_figure(run: str | Path, query: int, out: str | Path, *, method: str = "gradcam", split: str = "test",
                     generation: int | None = None, opacity: float = 0.5,
                     formats: tuple[str, ...] = ("png", "pdf", "svg"), dpi: int = 200) -> TopMatchFigure:
    """Heatmaps of query ``query`` of ``split`` and of its top-1 match under run ``run``'s model of
    ``generation`` (default: the last), each explained against the other with ``method``, overlaid
    at ``opacity`` and written to ``out`` once per format (see :func:`~sfrs_core.figures.save_figure`)."""
    run = open_run(run)
    sp = load_dataset(run.data)[split]
    if not 0 <= query < len(sp.queries):
        raise ValueError(f"--query must be in 0..{len(sp.queries) - 1} for split {split!r}")
    g = run.last_generation if generation is None else generation
    res = run.results(split, g)
    model, size = run.model(g), run.image_size()
    qpath = sp.queries.image_path(query)
    mpath = sp.database.image_path(int(res.ids[query, 0]))
    hq = compute_heatmap(model, qpath, method, describe(model, mpath, size=size), size=size)
    hm = compute_heatmap(model, mpath, method, describe(model, qpath, size=size), size=size)
    label = f"{run.kind} gen {g}"
    fig = heatmap_grid([qpath], {f"{label} query": [overlay(load_rgb(qpath, size), hq.image, signed=hq.signed, opacity=opacity)],
                                 f"{label} match": [overlay(load_rgb(mpath, size), hm.image, signed=hm.signed, opacity=opacity)]},
                       [mpath], match_correct=[bool(res.correct[query, 0])],
                       match_captions=[f"{res.distances_m[query, 0]:.1f} m"], match_titles=["top-1"])
    paths = save_figure(fig, out, tuple(formats), dpi)
    return TopMatchFigure(query, int(res.ids[query, 0]), float(res.distances_m[query, 0]),
                          bool(res.correct[query, 0]), list(paths))
