"""Datasets: the place-dataset model, format readers and SynthCity."""
import functools

from .dataset import EVAL_POS_RADIUS_M, TRAIN_POS_RADIUS_M, ImageSet, PlaceDataset, PlaceSplit
from .errors import DatasetError
from .images import open_rgb

__all__ = [
    "DatasetError", "ImageSet", "PlaceDataset", "PlaceSplit", "open_rgb",
    "TRAIN_POS_RADIUS_M", "EVAL_POS_RADIUS_M", "load_dataset", "shared_dataset",
]


def load_dataset(path, format=None, **kwargs):  # noqa: A002 - matches the CLI flag
    """Read a dataset of any supported format (see :mod:`sfrs_core.data.loaders`)."""
    from .loaders import load_dataset as _load

    return _load(path, format=format, **kwargs)


@functools.lru_cache(maxsize=8)
def shared_dataset(path: str):
    """:func:`load_dataset` of ``path``, read once per process and shared by its callers (a
    server's pages; treat it as read-only). A dataset rewritten on disk needs a new process."""
    return load_dataset(path)
