"""Descriptors in memory, served like a store: an in-RAM array behind the store's reading interface
(:class:`ArraySource`), arrays as faiss takes them (:func:`as_float32`), and reading ahead of the
caller (:func:`prefetch`).

The on-disk :class:`~sfrs_core.retrieval.store.DescriptorStore` and :class:`ArraySource` share
``count``/``dim``/``chunks``/``read``/``rows``/``sample``, so one code path (index building,
exact search, re-ranking) serves both; :func:`sfrs_core.retrieval.store.as_source` picks one.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator, Sequence

import numpy as np


class ArraySource:
    """An in-RAM ``N x dim`` array seen through the same ``count``/``dim``/``chunks``/``sample``
    interface as a :class:`~sfrs_core.retrieval.store.DescriptorStore`, so that one code path serves both."""

    def __init__(self, array: np.ndarray) -> None:
        arr = np.asarray(array)
        if arr.ndim != 2:
            raise ValueError(f"descriptors must be a 2-D array (N x dim), got shape {arr.shape}")
        self.array = arr

    @property
    def count(self) -> int:
        return int(self.array.shape[0])

    @property
    def dim(self) -> int:
        return int(self.array.shape[1])

    @property
    def shape(self) -> tuple[int, int]:
        return self.count, self.dim

    def __len__(self) -> int:
        return self.count

    def default_read_rows(self) -> int:
        return max(1, self.count)

    def chunks(self, rows: int | None = None, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        stop = self.count if stop is None else int(stop)
        step = max(1, stop - start) if rows is None else int(rows)
        for a in range(start, stop, step):
            yield a, np.ascontiguousarray(self.array[a:min(a + step, stop)], dtype=np.float32)

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        return np.ascontiguousarray(self.array[start:stop], dtype=np.float32)

    def rows(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(self.array[np.asarray(indices, dtype=np.int64)], dtype=np.float32)

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        if n >= self.count:
            return self.read()
        rng = np.random.default_rng(seed)
        return self.rows(np.sort(rng.choice(self.count, size=int(n), replace=False)))


def as_float32(x: np.ndarray, name: str) -> np.ndarray:
    """A C-contiguous float32 2-D copy/view of ``x`` (what faiss accepts)."""
    arr = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (N x dim), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def prefetch(items: Iterable, depth: int = 1) -> Iterator:
    """``items``, produced ``depth`` ahead in a background thread: the next store chunk is read
    from disk while the caller computes on the current one (NumPy's file reads and faiss's
    searches release the GIL). At most ``depth + 2`` items are alive at once; an exception in
    the producer is raised in the caller, and a caller that stops early stops the producer."""
    slots: queue.Queue = queue.Queue(maxsize=max(1, depth))
    done, stop = object(), threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        slots.put((None, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put((None, done))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            slots.put((exc, done))

    worker = threading.Thread(target=produce, name="store-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            exc, item = slots.get()
            if exc is not None:
                raise exc
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            try:
                slots.get_nowait()
            except queue.Empty:
                pass
            worker.join(timeout=0.05)
