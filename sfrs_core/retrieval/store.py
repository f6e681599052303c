"""An on-disk descriptor store: an ``N x dim`` matrix written chunk by chunk, read chunk by chunk.

A large database never needs its whole descriptor matrix in RAM (Pitts250k-test: 83 952 x 4096
float32 = 1.4 GB). A store is a folder::

    descriptors.npy   the matrix, float32 or float16, in NumPy's .npy format (memory-mappable:
                      ``np.load(path, mmap_mode="r")``), created sparse at its full size
    store.json        the header: format version, count, dim, dtype, chunk size, the identity of
                      what the rows describe (model, images, transform) and the row ranges done

Rows are written through a memory map of one chunk at a time, which is flushed (``msync``) to
disk *before* the header records the chunk as done (the header is replaced atomically: temp
file, ``fsync``, ``os.replace``). A process killed at any moment therefore loses at most the
chunk it was writing, and an extraction into the same folder continues with the chunks not yet
recorded (:func:`sfrs_core.retrieval.extract.extract_to_store`). One extraction writes a store
at a time: it holds ``.writer.lock`` (:func:`writer_lock`), and a second one is refused at once
(:class:`StoreBusyError`) rather than each recording only its own rows as done.

Reading goes one chunk at a time into an ordinary array (:meth:`DescriptorStore.chunks`), not
through one long-lived memory map: mapped file pages count towards the resident set size until
they are unmapped, so streaming a 4 GB store through a map would show as 4 GB of RSS. Random
rows (a training sample, a mining batch) are read with positioned reads (:meth:`rows`).

A store made for other images, another model or another transform is refused with a one-line
:class:`StoreMismatchError` naming ``store.json`` and the first field that differs.

An array in RAM served the same way (:class:`~sfrs_core.retrieval.sources.ArraySource`) and the
read-ahead of chunks (:func:`~sfrs_core.retrieval.sources.prefetch`) live in
:mod:`sfrs_core.retrieval.sources`; :func:`as_source` takes either kind of :data:`Descriptors`.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_write_json
from .sources import ArraySource, prefetch  # noqa: F401 - prefetch re-exported: imported from here

FORMAT_VERSION = 1
HEADER_NAME = "store.json"
DATA_NAME = "descriptors.npy"
LOCK_NAME = ".writer.lock"  # held (flock) by the one process writing the store
DTYPES = ("float32", "float16")
DEFAULT_CHUNK_ROWS = 1024
DEFAULT_READ_BYTES = 128 << 20  # rows per chunks() step: about 128 MiB of float32


class StoreError(ValueError):
    """A descriptor store that cannot be used (missing, truncated, inconsistent)."""


class StoreMismatchError(StoreError):
    """A descriptor store made for other images, another model, dtype or dimension."""


class StoreBusyError(StoreError):
    """Another writer is filling the store (two would each record only their own rows as done)."""


@contextlib.contextmanager
def writer_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Be the one writer of the store in ``folder`` for the block (an exclusive ``flock`` on
    ``folder/.writer.lock``, released when the block ends or the process dies); a second writer,
    in this process or another, gets :class:`StoreBusyError` at once instead of waiting."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_NAME, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreBusyError(f"{folder}: another extraction is writing this descriptor store; "
                                 "run again once it has finished or stopped (it resumes where it is)") from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _merge(ranges: Sequence[Sequence[int]]) -> list[list[int]]:
    """Sorted, merged ``[start, stop)`` row ranges."""
    out: list[list[int]] = []
    for start, stop in sorted((int(a), int(b)) for a, b in ranges if int(b) > int(a)):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], stop)
        else:
            out.append([start, stop])
    return out


def _covered(done: list[list[int]], start: int, stop: int) -> bool:
    return any(a <= start and stop <= b for a, b in done)


def _jsonable(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), for identity comparison."""
    return json.loads(json.dumps(value))


class DescriptorStore:
    """An ``N x dim`` descriptor matrix on disk; see the module docstring.

    Make one with :meth:`create` (or :meth:`open_or_create`), open one with :meth:`open`.
    ``identity`` is a JSON-able dict saying what the rows describe (see
    :func:`sfrs_core.retrieval.extract.descriptor_identity`); a store is only reopened for the
    same identity.
    """

    def __init__(self, folder: Path, header: dict[str, Any]) -> None:
        self.folder = folder
        self._header = header

    # ------------------------------------------------------------------ make / open

    @classmethod
    def create(cls, folder: str | os.PathLike, count: int, dim: int, *, dtype: str = "float32",
               identity: dict[str, Any] | None = None, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> "DescriptorStore":
        """A new, empty store of ``count`` rows of ``dim`` values; refuses an existing one."""
        folder = Path(folder)
        if dtype not in DTYPES:
            raise ValueError(f"store dtype must be one of {DTYPES}, got {dtype!r}")
        if count < 0 or dim < 1 or chunk_rows < 1:
            raise ValueError(f"a store needs count >= 0, dim >= 1 and chunk_rows >= 1 (got {count}, {dim}, {chunk_rows})")
        if (folder / HEADER_NAME).exists():
            raise FileExistsError(f"{folder / HEADER_NAME}: a descriptor store already exists here")
        folder.mkdir(parents=True, exist_ok=True)
        data = np.lib.format.open_memmap(folder / DATA_NAME, mode="w+", dtype=np.dtype(dtype), shape=(count, dim))
        offset = int(data.offset)
        del data  # sparse file of the full size; unmapped at once
        with open(folder / DATA_NAME, "rb+") as fh:
            os.fsync(fh.fileno())
        header = {
            "format_version": FORMAT_VERSION, "count": int(count), "dim": int(dim), "dtype": dtype,
            "chunk_rows": int(chunk_rows), "data_file": DATA_NAME, "data_offset": offset,
            "identity": _jsonable(identity or {}), "done": [],
        }
        store = cls(folder, header)
        store._write_header()
        return store

    @classmethod
    def open(cls, folder: str | os.PathLike, *, identity: dict[str, Any] | None = None,
             require_complete: bool = False) -> "DescriptorStore":
        """Open an existing store; with ``identity``, refuse one made for something else."""
        folder = Path(folder)
        path = folder / HEADER_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no descriptor store here")
        try:
            header = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise StoreError(f"{path}: unreadable descriptor store header ({exc})") from exc
        if not isinstance(header, dict) or header.get("format_version") != FORMAT_VERSION:
            version = header.get("format_version") if isinstance(header, dict) else None
            raise StoreError(f"{path}: descriptor store format version {version!r}; this code reads {FORMAT_VERSION}")
        missing = [key for key in ("count", "dim", "dtype", "chunk_rows", "data_offset", "identity", "done")
                   if key not in header]
        if missing:
            raise StoreError(f"{path}: descriptor store header lacks {', '.join(missing)}")
        store = cls(folder, header)
        store._check_data_file()
        if identity is not None:
            store.check_identity(identity)
        if require_complete and not store.complete:
            raise StoreError(f"{path}: descriptor store is incomplete ({store.rows_done} of {store.count} rows); "
                             "finish the extraction first")
        return store

    @classmethod
    def open_or_create(cls, folder: str | os.PathLike, count: int, dim: int, *, dtype: str = "float32",
                       identity: dict[str, Any] | None = None,
                       chunk_rows: int = DEFAULT_CHUNK_ROWS) -> "DescriptorStore":
        """The store in ``folder`` if there is one (checked against count, dim, dtype and
        ``identity``), else a new one. ``chunk_rows`` of an existing store is kept."""
        if (Path(folder) / HEADER_NAME).is_file():
            store = cls.open(folder, identity=identity)
            store.check_shape(count, dim, dtype)
            return store
        return cls.create(folder, count, dim, dtype=dtype, identity=identity, chunk_rows=chunk_rows)

    # ------------------------------------------------------------------ header

    @property
    def header_path(self) -> Path:
        return self.folder / HEADER_NAME

    @property
    def data_path(self) -> Path:
        return self.folder / self._header.get("data_file", DATA_NAME)

    @property
    def count(self) -> int:
        """Number of rows."""
        return int(self._header["count"])

    @property
    def dim(self) -> int:
        """Values per row."""
        return int(self._header["dim"])

    @property
    def dtype(self) -> np.dtype:
        """Storage dtype (float32 or float16); reads always give float32."""
        return np.dtype(self._header["dtype"])

    @property
    def chunk_rows(self) -> int:
        """Rows per write chunk (the most an interrupted extraction can lose)."""
        return int(self._header["chunk_rows"])

    @property
    def identity(self) -> dict[str, Any]:
        return dict(self._header["identity"])

    @property
    def done(self) -> list[list[int]]:
        """Merged ``[start, stop)`` row ranges written and recorded."""
        return [list(r) for r in self._header["done"]]

    @property
    def rows_done(self) -> int:
        return sum(b - a for a, b in self._header["done"])

    @property
    def complete(self) -> bool:
        return self.rows_done == self.count

    @property
    def shape(self) -> tuple[int, int]:
        """``(count, dim)``, as an array's."""
        return self.count, self.dim

    @property
    def nbytes(self) -> int:
        """Size of the matrix on disk."""
        return self.count * self.dim * self.dtype.itemsize

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return (f"DescriptorStore({str(self.folder)!r}, {self.count} x {self.dim} {self.dtype.name}, "
                f"{self.rows_done} rows done)")

    def check_identity(self, identity: dict[str, Any]) -> None:
        """Raise :class:`StoreMismatchError` (naming the first differing field) unless the store
        was made for ``identity``."""
        want, have = _jsonable(identity), self._header["identity"]
        for key in sorted(set(want) | set(have)):
            if want.get(key) != have.get(key):
                mine, theirs = _short(have.get(key)), _short(want.get(key))
                raise StoreMismatchError(
                    f"{self.header_path}: descriptor store made for {key}={mine}, not {theirs}; "
                    "use another folder or delete this one")

    def check_shape(self, count: int, dim: int | None = None, dtype: str | None = None) -> None:
        """Raise :class:`StoreMismatchError` unless the store has this count, dim and dtype."""
        for what, want, have in (("rows", count, self.count), ("dim", dim, self.dim),
                                 ("dtype", dtype, self.dtype.name)):
            if want is not None and want != have:
                raise StoreMismatchError(f"{self.header_path}: descriptor store has {what}={have}, not {want}; "
                                         "use another folder or delete this one")

    def _check_data_file(self) -> None:
        path = self.data_path
        if not path.is_file():
            raise StoreError(f"{path}: descriptor store data file is missing")
        want = int(self._header["data_offset"]) + self.nbytes
        have = path.stat().st_size
        if have != want:
            raise StoreError(f"{path}: descriptor store data file has {have} bytes, expected {want} (truncated?)")

    def _write_header(self) -> None:
        atomic_write_json(self.header_path, self._header)

    # ------------------------------------------------------------------ chunks

    def chunk_ranges(self) -> list[tuple[int, int]]:
        """All write chunks as ``(start, stop)``."""
        step = self.chunk_rows
        return [(a, min(a + step, self.count)) for a in range(0, self.count, step)]

    def missing(self) -> list[tuple[int, int]]:
        """Write chunks not yet recorded as done, in order."""
        done = self._header["done"]
        return [(a, b) for a, b in self.chunk_ranges() if not _covered(done, a, b)]

    def _window(self, start: int, stop: int, mode: str) -> np.memmap:
        offset = int(self._header["data_offset"]) + start * self.dim * self.dtype.itemsize
        return np.memmap(self.data_path, dtype=self.dtype, mode=mode, offset=offset, shape=(stop - start, self.dim))

    def write(self, start: int, rows: np.ndarray) -> None:
        """Write ``rows`` at row ``start``, flush them to disk, then record them as done."""
        rows = np.asarray(rows)
        stop = int(start) + len(rows)
        if rows.ndim != 2 or rows.shape[1] != self.dim or not 0 <= start <= stop <= self.count:
            raise ValueError(f"{self.folder}: cannot write rows of shape {rows.shape} at {start} "
                             f"into a {self.count} x {self.dim} store")
        if len(rows) == 0:
            return
        if not np.isfinite(rows).all():
            raise ValueError(f"{self.folder}: refusing to store NaN or infinite descriptors (rows {start}..{stop - 1})")
        window = self._window(start, stop, "r+")
        window[:] = rows  # float32 -> float16 rounds to nearest
        window.flush()  # msync: on disk before the header says so
        del window
        self._header["done"] = _merge([*self._header["done"], [start, stop]])
        self._write_header()

    def _require_done(self, start: int, stop: int) -> None:
        if not _covered(self._header["done"], start, stop):
            raise StoreError(f"{self.header_path}: rows {start}..{stop - 1} have not been written yet "
                             f"({self.rows_done} of {self.count} rows done)")

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows ``start..stop-1`` as a new float32 array (positioned read; no lasting map)."""
        stop = self.count if stop is None else int(stop)
        if not 0 <= start <= stop <= self.count:
            raise IndexError(f"{self.folder}: rows {start}..{stop} outside 0..{self.count}")
        if stop > start:
            self._require_done(start, stop)
        offset = int(self._header["data_offset"]) + start * self.dim * self.dtype.itemsize
        out = np.fromfile(self.data_path, dtype=self.dtype, count=(stop - start) * self.dim, offset=offset)
        return out.reshape(stop - start, self.dim).astype(np.float32, copy=False)

    def default_read_rows(self) -> int:
        """Rows per :meth:`chunks` step: about 128 MiB of float32, at least one write chunk."""
        return max(self.chunk_rows, DEFAULT_READ_BYTES // (4 * self.dim))

    def chunks(self, rows: int | None = None, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, float32 block)`` of ``rows`` rows at a time (default
        :meth:`default_read_rows`), in order; only one block is held at a time."""
        stop = self.count if stop is None else int(stop)
        step = self.default_read_rows() if rows is None else int(rows)
        if step < 1:
            raise ValueError(f"rows must be >= 1, got {rows}")
        for a in range(start, stop, step):
            yield a, self.read(a, min(a + step, stop))

    def rows(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """The given rows (any order, repeats allowed) as float32, by positioned reads."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.count):
            raise IndexError(f"{self.folder}: row indices outside 0..{self.count - 1}")
        out = np.empty((idx.size, self.dim), dtype=np.float32)
        row_bytes = self.dim * self.dtype.itemsize
        base = int(self._header["data_offset"])
        order = np.argsort(idx, kind="stable")
        with open(self.data_path, "rb") as fh:
            for pos in order:
                i = int(idx[pos])
                if not _covered(self._header["done"], i, i + 1):
                    raise StoreError(f"{self.header_path}: row {i} has not been written yet")
                raw = os.pread(fh.fileno(), row_bytes, base + i * row_bytes)
                out[pos] = np.frombuffer(raw, dtype=self.dtype)
        return out

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` distinct rows drawn at random (all rows, in order, when ``n >= count``), float32."""
        if n >= self.count:
            return self.read()
        rng = np.random.default_rng(seed)
        return self.rows(np.sort(rng.choice(self.count, size=int(n), replace=False)))

    def memmap(self) -> np.memmap:
        """The whole matrix as a read-only memory map (random access; its pages count as RSS)."""
        return np.load(self.data_path, mmap_mode="r")


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: What the index code takes as descriptors: an array, a store, or an array already wrapped.
Descriptors = np.ndarray | DescriptorStore | ArraySource


def as_source(descriptors: Descriptors) -> DescriptorStore | ArraySource:
    """A store or array source for ``descriptors`` (an array is wrapped, not copied)."""
    if isinstance(descriptors, (DescriptorStore, ArraySource)):
        return descriptors
    return ArraySource(descriptors)
