"""What a map marks, as plain data (no folium): each retrieved image (:class:`Pin`, one model's
:class:`PinSet`) and each GPS positive of a query (:class:`PositiveMark`), built from per-query
results or from an uploaded photo's localization.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sfrs_core.figures.style import CORRECT_RADIUS_M

if TYPE_CHECKING:
    from sfrs_core.retrieval.localize import Localization
    from sfrs_core.retrieval.results import QueryResults

ImageLike = str | os.PathLike | np.ndarray  # an image file, or an H×W×3 uint8 RGB array

PICKED_COLOR = "#CC79A7"  # a difficult positive the mining picked
NOT_PICKED_COLOR = "#7F7F7F"  # a GPS positive it left out
POSITIVE_COLOR = "#56B4E9"  # a GPS positive, mining unknown


@dataclass(frozen=True)
class Pin:
    """One retrieved database image: its rank, position, image (path or RGB array) and scores.
    ``distance_m``/``correct`` are None when the query's true position is unknown."""

    rank: int
    latlon: tuple[float, float]
    image: ImageLike
    similarity: float
    distance_m: float | None = None
    correct: bool | None = None
    db_index: int | None = None
    heading: float | None = None  # compass degrees; None when unknown (no view cone)


@dataclass(frozen=True)
class PinSet:
    """One model's pins: ``label`` names the model, ``color`` rings its badges; ``square`` badges
    (the compared model) sit right of their spot, round ones (the baseline) left of it."""

    label: str
    pins: Sequence[Pin]
    color: str
    square: bool = False


def known_heading(headings: np.ndarray | None, i: int) -> float | None:
    """Image ``i``'s heading from an array with NaN for unknown ones (or None: none known)."""
    if headings is None or not math.isfinite(float(headings[i])):
        return None
    return float(headings[i])


def pins_from_results(results: QueryResults, query: int, k: int, database_latlon: np.ndarray,
                      image_path: Callable[[int], ImageLike], database_heading: np.ndarray | None = None) -> list[Pin]:
    """The top-``k`` pins of ``query`` from per-query results (:class:`~sfrs_core.retrieval.QueryResults`);
    ``image_path(i)`` gives database image i's file, ``database_heading`` (NaN: unknown) its heading."""
    return [Pin(j + 1, tuple(map(float, database_latlon[i])), image_path(int(i)), float(results.similarities[query, j]),
                float(results.distances_m[query, j]), bool(results.correct[query, j]), int(i),
                known_heading(database_heading, int(i)))
            for j, i in enumerate(results.ids[query, :k])]


def pins_from_localization(loc: Localization, radius_m: float = CORRECT_RADIUS_M,
                           database_heading: np.ndarray | None = None) -> list[Pin]:
    """Pins of an uploaded photo's matches (:class:`~sfrs_core.retrieval.localize.Localization`);
    ``database_heading`` (NaN: unknown) gives each match its view cone."""
    return [Pin(m.rank, tuple(map(float, m.latlon)), m.path, m.similarity, err,
                None if err is None else err <= radius_m, m.db_index,
                None if m.db_index is None else known_heading(database_heading, m.db_index))
            for m, err in zip(loc.matches, loc.errors_m)]


@dataclass(frozen=True)
class PositiveMark:
    """One GPS positive of a query, for the map: ``label`` (as in the page's image grid), position,
    heading (None: unknown), metres from the query, database index, whether it is the easiest
    positive (ranked first by the model) and whether the mining picked it (None: not mined)."""

    label: str
    latlon: tuple[float, float]
    heading: float | None
    distance_m: float
    db_index: int
    easiest: bool = False
    picked: bool | None = None
    note: str = ""


def positive_color(mark: PositiveMark) -> str:
    """Picked: :data:`PICKED_COLOR`; left out: :data:`NOT_PICKED_COLOR`; not mined: :data:`POSITIVE_COLOR`."""
    return POSITIVE_COLOR if mark.picked is None else PICKED_COLOR if mark.picked else NOT_PICKED_COLOR

