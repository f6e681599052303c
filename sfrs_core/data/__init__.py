"""Datasets: the place-dataset model, format readers and SynthCity."""
from .dataset import EVAL_POS_RADIUS_M, TRAIN_POS_RADIUS_M, ImageSet, PlaceDataset, PlaceSplit
from .errors import DatasetError
from .images import open_rgb

__all__ = [
    "DatasetError", "ImageSet", "PlaceDataset", "PlaceSplit", "open_rgb",
    "TRAIN_POS_RADIUS_M", "EVAL_POS_RADIUS_M", "load_dataset",
]


def load_dataset(path, format=None, **kwargs):  # noqa: A002 - matches the CLI flag
    """Read a dataset of any supported format (see :mod:`sfrs_core.data.loaders`)."""
    from .loaders import load_dataset as _load

    return _load(path, format=format, **kwargs)
