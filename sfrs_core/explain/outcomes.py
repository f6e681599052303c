"""Compare two runs' answers query by query (top-1 right or wrong by the 25 m rule)."""
from __future__ import annotations

import numpy as np

OUTCOMES = ("B right, A wrong", "A right, B wrong", "both right", "both wrong")


def query_outcomes(a, b, names: tuple[str, str] = ("SARE", "SFRS")) -> dict[str, np.ndarray]:
    """Query indices per outcome of two :class:`QueryResults` of the same split.

    Keys use the run names: e.g. "SFRS right, SARE wrong", "SARE right, SFRS wrong",
    "both right", "both wrong".
    """
    ra, rb = a.correct[:, 0], b.correct[:, 0]
    na, nb = names
    return {
        f"{nb} right, {na} wrong": np.flatnonzero(rb & ~ra),
        f"{na} right, {nb} wrong": np.flatnonzero(ra & ~rb),
        "both right": np.flatnonzero(ra & rb),
        "both wrong": np.flatnonzero(~ra & ~rb),
    }


def showcase_queries(a, b, n: int = 3) -> list[int]:
    """``n`` queries that show the difference best: where B is right and A wrong first, then
    where both are right, then the rest."""
    groups = list(query_outcomes(a, b).values())
    order = [groups[0], groups[2], groups[3], groups[1]]
    picked: list[int] = []
    for g in order:
        picked += [int(q) for q in g[: n - len(picked)]]
    return picked[:n]
