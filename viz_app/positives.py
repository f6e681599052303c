"""A query's GPS positives as marks on the app's maps: what mining makes of each (see
:mod:`sfrs_core.explain.positives`, which mines them and caches the outcome)."""
from __future__ import annotations

from sfrs_core.data.dataset import TRAIN_POS_RADIUS_M, PlaceSplit
from sfrs_core.explain.positives import MinedPositives
from viz_app.map import PositiveMark, known_heading


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def positive_marks(split: PlaceSplit, query: int, mined: MinedPositives | None = None,
                   radius_m: float = TRAIN_POS_RADIUS_M, model_label: str = "the model") -> list[PositiveMark]:
    """The query's GPS positives (within ``radius_m``, nearest first, labelled p1, p2, …) for a
    map, with what ``mined`` says of each (easiest, picked or left out, its rank) when given."""
    positives = split.positives(radius_m)[query] if mined is None else mined.positives
    distances = split.distances_m(query, positives)
    rank = {} if mined is None else {int(i): r + 1 for r, i in enumerate(mined.ranked)}
    order = {} if mined is None else {int(i): r + 1 for r, i in enumerate(mined.picked)}
    pool = set() if mined is None else {int(i) for i in mined.pool}
    marks = []
    for n, (i, d) in enumerate(zip(positives.tolist(), distances)):
        note, picked = "", None
        if mined is not None:
            picked = i in order
            what = (f"picked {_ordinal(order[i])}" if picked else
                    "in the pool, not picked" if i in pool else f"outside the pool of {len(mined.pool)}")
            note = f"ranked {_ordinal(rank[i])} of {len(positives)} by {model_label}; {what}"
        marks.append(PositiveMark(f"p{n + 1}", tuple(map(float, split.database.latlon[i])),
                                  known_heading(split.database.heading, i), float(d), int(i),
                                  easiest=mined is not None and i == mined.easiest, picked=picked, note=note))
    return marks
