"""Per-query retrieval results, saved as one ``.npz`` for the app."""
from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_path

FORMAT_VERSION = 1
_ARRAYS = ("queries", "ids", "similarities", "distances_m", "correct")


@dataclass(eq=False)
class QueryResults:
    """Top-K retrieval of each query of one split.

    ``queries`` (Q,) query indices in the split; ``ids`` (Q×K int64) database indices, best first;
    ``similarities`` (Q×K float32) inner products; ``distances_m`` (Q×K float32) metres from the
    query to each retrieved database image; ``correct`` (Q×K bool) distance <= 25 m; ``recall``
    {N: recall@N}; metadata: ``split``, ``dataset_root``, ``run`` (run or model name), ``k`` and a
    free JSON-able ``meta`` dict (image size, dedupe, ...).
    """

    queries: np.ndarray
    ids: np.ndarray
    similarities: np.ndarray
    distances_m: np.ndarray
    correct: np.ndarray
    recall: dict[int, float]
    split: str = ""
    dataset_root: str = ""
    run: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.queries = np.asarray(self.queries, dtype=np.int64).reshape(-1)
        self.ids = np.asarray(self.ids, dtype=np.int64)
        self.similarities = np.asarray(self.similarities, dtype=np.float32)
        self.distances_m = np.asarray(self.distances_m, dtype=np.float32)
        self.correct = np.asarray(self.correct, dtype=bool)
        shape = (len(self.queries), self.ids.shape[-1] if self.ids.ndim == 2 else -1)
        for name in _ARRAYS[1:]:
            arr = getattr(self, name)
            if arr.ndim != 2 or arr.shape != shape:
                raise ValueError(f"QueryResults.{name} has shape {arr.shape}; expected {shape} (queries x k)")
        self.recall = {int(n): float(v) for n, v in self.recall.items()}
        self.split = str(self.split)
        self.dataset_root = str(self.dataset_root)
        self.run = str(self.run)

    @property
    def k(self) -> int:
        """Length of each ranked list."""
        return int(self.ids.shape[1])

    def __len__(self) -> int:
        return len(self.queries)

    def _metadata(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "recall": {str(n): v for n, v in sorted(self.recall.items())},
            "split": self.split,
            "dataset_root": self.dataset_root,
            "run": self.run,
            "k": self.k,
            "meta": self.meta,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write one ``.npz`` atomically (temp file in the same folder, then ``os.replace``)."""
        meta = json.dumps(self._metadata())
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **{name: getattr(self, name) for name in _ARRAYS}, metadata=np.array(meta))
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "QueryResults":
        """Read a file written by :meth:`save` (no pickle); errors name the file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"query results file not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                missing = [name for name in (*_ARRAYS, "metadata") if name not in data.files]
                if missing:
                    raise ValueError(f"missing entries {missing}")
                arrays = {name: data[name] for name in _ARRAYS}
                meta = json.loads(str(data["metadata"]))
            version = meta.get("format_version")
            if version != FORMAT_VERSION:
                raise ValueError(f"format version {version!r}, this code reads {FORMAT_VERSION}")
            return cls(
                **arrays,
                recall={int(n): v for n, v in meta["recall"].items()},
                split=meta["split"], dataset_root=meta["dataset_root"], run=meta["run"], meta=meta.get("meta", {}),
            )
        except (ValueError, KeyError, TypeError, OSError, EOFError, zipfile.BadZipFile) as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            raise ValueError(f"{path}: not a valid query results file: {exc}") from exc
