"""Shared reader for the NetVLAD ``dbStruct`` .mat files (Pittsburgh, Tokyo 24/7, TokyoTM).

``loadmat(f)['dbStruct']`` is a 1x1 MATLAB struct; fields are read by name, never by position
(TokyoTM inserts ``dbTimeStamp``/``qTimeStamp`` in the middle). File names are cell arrays of
strings, positions 2xN UTM easting/northing arrays in metres, counts 1x1 numbers.
"""
from __future__ import annotations

import faulthandler
import logging
import os
import pickle
import select
import signal
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import scipy.io

try:
    import resource
except ImportError:  # not on Windows, where the reader runs in-process anyway
    resource = None  # type: ignore[assignment]

from .dataset import EVAL_POS_RADIUS_M, SPLIT_NAMES, ImageSet, PlaceSplit, safe_relpath
from .errors import DatasetError, short_repr
from .geo import UtmZone, check_utm, utm_to_latlon

log = logging.getLogger(__name__)

REQUIRED_FIELDS = ("whichSet", "dbImageFns", "utmDb", "qImageFns", "utmQ", "numImages", "numQueries")
UTM_BANDS = "CDEFGHJKLMNPQRSTUVWX"


@dataclass
class DbStruct:
    """The fields of one ``dbStruct``, by name, and the file they came from."""

    path: Path
    fields: dict[str, np.ndarray]

    def get(self, name: str) -> np.ndarray:
        """The field ``name``; a missing field raises :class:`DatasetError` naming it."""
        if name not in self.fields:
            names = ", ".join(list(self.fields)[:20]) + (", ..." if len(self.fields) > 20 else "")
            raise DatasetError(self.path, f"dbStruct has no field {name!r} (fields: {names or 'none'})")
        return self.fields[name]

    def text(self, name: str) -> str:
        """A char-array field as a string."""
        value = np.asarray(self.get(name))
        if value.dtype.kind != "U" or value.size != 1:
            raise DatasetError(self.path, f"field {name!r} is not a text string")
        return str(value.reshape(-1)[0]).strip()

    def count(self, name: str) -> int:
        """A 1x1 numeric field as a non-negative integer."""
        value = np.asarray(self.get(name))
        number = float("nan")
        if value.size == 1 and value.dtype.kind in "biuf":  # not text, complex, a cell or a struct
            number = float(value.reshape(-1)[0])
        if not np.isfinite(number) or number < 0 or number != int(number):
            raise DatasetError(self.path, f"field {name!r} is not a non-negative whole number: {short_repr(value)}")
        return int(number)

    def strings(self, name: str) -> list[str]:
        """A cell array of strings (or a char matrix, one string per row) as a list."""
        value = np.asarray(self.get(name))
        if value.size and value.ndim > 1 and sorted(value.shape)[-2] > 1:
            raise DatasetError(self.path, f"field {name!r} has shape {value.shape}; expected a list (Nx1 cell array)")
        if value.dtype.kind == "U":
            return [str(s).rstrip() for s in value.reshape(-1)]
        if value.dtype != object:
            raise DatasetError(self.path, f"field {name!r} is not a cell array of strings (dtype {value.dtype})")
        out = []
        for i, item in enumerate(value.reshape(-1)):
            if isinstance(item, str):  # as load_dbstruct gives single-string entries
                out.append(item.strip())
                continue
            item = np.asarray(item)
            if item.dtype.kind != "U" or item.size > 1:
                raise DatasetError(self.path, f"field {name!r} entry {i + 1} is not a text string: {short_repr(item)}")
            out.append(str(item.reshape(-1)[0]).strip() if item.size else "")
        return out

    def utm(self, name: str) -> np.ndarray:
        """A 2xN easting/northing field as an (N, 2) float array."""
        value = np.asarray(self.get(name))
        if value.size == 0:
            return np.zeros((0, 2))
        if value.ndim != 2 or value.shape[0] != 2 or value.dtype.kind not in "fiu":
            raise DatasetError(
                self.path,
                f"field {name!r} has shape {value.shape} ({value.dtype}); expected a 2xN numeric array "
                "of UTM easting;northing",
            )
        return value.astype(np.float64).T.copy()


# A corrupt .mat file can crash scipy's compiled MAT reader (segmentation fault: found by
# tests/test_fuzz_readers.py with a few flipped bytes) or make it allocate arrays of any size
# its header claims. On Linux the file is therefore parsed in a forked child
# process with a bounded address space and a time limit: a crash, a memory blow-up or a hang
# ends the child only, and the caller gets a DatasetError.
MAT_READ_TIMEOUT_S = 300.0
MAT_READ_MEMORY_BYTES = 2 << 30  # address space the parser may add (at least; 100x the file size when larger)


def load_dbstruct(mat_path: str | os.PathLike) -> DbStruct:
    """Load ``dbStruct`` from a .mat file; missing, unreadable or struct-less files raise."""
    path = Path(mat_path)
    if not path.is_file():
        raise DatasetError(path, "file not found")
    if sys.platform.startswith("linux"):
        fields = _read_dbstruct_isolated(path)
    else:
        fields = _read_dbstruct(path)
    return DbStruct(path, fields)


def _read_dbstruct(path: Path) -> dict[str, np.ndarray]:
    """The fields of ``dbStruct`` in ``path``, read with scipy (cell entries that are one string
    become Python strings: the same values for :class:`DbStruct`, and cheap to pickle)."""
    try:
        mat = scipy.io.loadmat(str(path))
    except NotImplementedError:
        raise DatasetError(path, "MATLAB v7.3 (HDF5) .mat files are not supported; re-save with -v7") from None
    except MemoryError:
        raise DatasetError(path, "not a readable MATLAB .mat file: it declares arrays too large to hold in memory "
                                 "(corrupt or truncated?)") from None
    except Exception as err:  # scipy raises ValueError, TypeError, OSError, zlib.error ... on corrupt files
        raise DatasetError(path, f"not a readable MATLAB .mat file ({type(err).__name__}: {_one_line(err)})") from None
    if "dbStruct" not in mat:
        found = ", ".join(short_repr(k, 40) for k in mat if not k.startswith("__"))
        raise DatasetError(path, f"no 'dbStruct' variable in the file (it holds: {_one_line(found) or 'nothing'})")
    raw = mat["dbStruct"]
    if not isinstance(raw, np.ndarray) or raw.dtype.names is None:
        raise DatasetError(path, "'dbStruct' is not a MATLAB struct")
    if raw.size != 1:
        raise DatasetError(path, f"'dbStruct' is a {raw.shape} struct array; expected a single struct")
    record = raw.reshape(-1)[0]
    return {name: _compact_cell(record[name]) for name in raw.dtype.names}


def _compact_cell(value: object) -> object:
    """A cell array whose entries are single strings (or empty) with those entries as ``str``."""
    if not isinstance(value, np.ndarray) or value.dtype != object:
        return value
    out = np.empty(value.shape, dtype=object)
    flat_in, flat_out = value.reshape(-1), out.reshape(-1)
    for i, item in enumerate(flat_in):
        if isinstance(item, np.ndarray) and item.dtype.kind == "U" and item.size <= 1 and type(item) is np.ndarray:
            flat_out[i] = str(item.reshape(-1)[0]) if item.size else ""
        else:
            flat_out[i] = item
    return out


def _one_line(text: object, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _read_dbstruct_isolated(path: Path) -> dict[str, np.ndarray]:
    """:func:`_read_dbstruct` in a forked child with bounded memory and time (see above)."""
    budget = max(MAT_READ_MEMORY_BYTES, 100 * path.stat().st_size)
    read_fd, write_fd = os.pipe()
    with warnings.catch_warnings():  # Python 3.12+ warns about fork() in threaded processes; the child runs no threads
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            os.close(read_fd)
            faulthandler.disable()  # a crash here is expected and reported by the parent, not dumped
            _limit_address_space(budget)
            try:
                payload = ("ok", _read_dbstruct(path))
            except DatasetError as err:
                payload = ("error", err.problem)
            except BaseException as err:  # noqa: BLE001 - anything: the parent gets one line
                payload = ("error", f"not a readable MATLAB .mat file ({type(err).__name__}: {_one_line(err)})")
            try:
                data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
            except BaseException as err:  # noqa: BLE001
                data = pickle.dumps(("error", f"not a readable MATLAB .mat file ({type(err).__name__})"))
            with os.fdopen(write_fd, "wb") as out:
                out.write(data)
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    chunks, deadline, timed_out = [], time.monotonic() + MAT_READ_TIMEOUT_S, False
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([read_fd], [], [], left)[0]:
                timed_out = True
                os.kill(pid, signal.SIGKILL)
                break
            chunk = os.read(read_fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_fd)
        try:
            status = os.waitpid(pid, 0)[1]
        except ChildProcessError:  # reaped elsewhere (SIGCHLD ignored): judge by what came through the pipe
            status = 0
    if timed_out:
        raise DatasetError(path, f"not a readable MATLAB .mat file: reading it took over {MAT_READ_TIMEOUT_S:g} s")
    if os.WIFSIGNALED(status) or os.WEXITSTATUS(status) != 0 or not chunks:
        if os.WIFSIGNALED(status):
            number = os.WTERMSIG(status)
            how = f"signal {signal.Signals(number).name}" if number in set(signal.Signals) else f"signal {number}"
        else:
            how = f"exit status {os.WEXITSTATUS(status)}"
        raise DatasetError(path, f"not a readable MATLAB .mat file: the MAT reader crashed on it ({how}); "
                                 "the file is corrupt or truncated")
    kind, value = pickle.loads(b"".join(chunks))
    if kind != "ok":
        raise DatasetError(path, value)
    return value


def _limit_address_space(extra: int) -> None:
    """Cap this process's address space at its current size plus ``extra`` bytes (Linux)."""
    try:
        with open("/proc/self/statm") as fh:
            current = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = current + extra
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        if soft == resource.RLIM_INFINITY or soft > limit:
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (OSError, ValueError):
        pass


def check_zone(zone: UtmZone, source: str | os.PathLike) -> UtmZone:
    """Validate a (number, band letter) UTM zone argument."""
    try:
        number, band = int(zone[0]), str(zone[1]).upper()
    except (TypeError, ValueError, IndexError):
        raise DatasetError(source, f"UTM zone {zone!r} is not a (number, band letter) pair") from None
    if not 1 <= number <= 60 or len(band) != 1 or band not in UTM_BANDS:
        raise DatasetError(source, f"UTM zone {zone!r} is invalid (number 1..60, band letter C..X)")
    return number, band


def default_image_root(mat_path: Path) -> Path:
    """The folder holding the .mat, or its parent when the .mat sits in a ``datasets/`` folder.

    Symbolic links are not followed: a linked .mat belongs to the folder it is linked into.
    """
    folder = Path(os.path.abspath(mat_path)).parent
    return folder.parent if folder.name.lower() == "datasets" else folder


def default_query_root(image_root: Path, names: Sequence[str], query_dirs: Sequence[str]) -> Path:
    """``image_root/<first existing query_dir>``, unless the names already start with that folder."""
    for sub in query_dirs:
        if (image_root / sub).is_dir():
            if names and all(n.startswith(sub + "/") for n in names):
                return image_root
            return image_root / sub
    return image_root


def resolve_files(
    root: Path, names: list[str], role: str, source: Path, alt_suffixes: Sequence[str] = ()
) -> list[str]:
    """Check every listed image exists under ``root``; try ``alt_suffixes`` for missing ones."""
    if not root.is_dir():
        raise DatasetError(root, f"{role} image folder not found (listed in {source.name}); pass the right image root")
    out, missing = [], []
    for name in names:
        if not os.path.isfile(os.path.join(root, name)):
            stem = os.path.splitext(name)[0]
            alt = next((stem + s for s in alt_suffixes if os.path.isfile(os.path.join(root, stem + s))), None)
            if alt is None:
                missing.append(name)
            name = alt or name
        out.append(name)
    if missing:
        raise DatasetError(
            source,
            f"{len(missing)} of {len(names)} listed {role} image files are missing under {root}; "
            f"first missing: {missing[0]}",
        )
    return out


def read_image_set(
    st: DbStruct,
    role: str,
    names_field: str,
    utm_field: str,
    count_field: str,
    zone: UtmZone,
    root: Path,
    check_files: bool,
    alt_suffixes: Sequence[str] = (),
) -> ImageSet:
    """Build the database or query :class:`ImageSet` from the named fields of ``st``."""
    names = [safe_relpath(n, st.path) for n in st.strings(names_field)]
    xy = st.utm(utm_field)
    count = st.count(count_field)
    if not (count == len(names) == len(xy)):
        raise DatasetError(
            st.path,
            f"{role} counts disagree: {count_field}={count}, {len(names)} names in {names_field}, "
            f"{len(xy)} columns in {utm_field}",
        )
    if not names:
        raise DatasetError(st.path, f"split is empty: no {role} images ({count_field}=0)")
    try:
        check_utm(xy[:, 0], xy[:, 1], st.path)
    except DatasetError as err:
        raise DatasetError(st.path, f"{utm_field}: {err.problem}") from None
    if check_files:
        names = resolve_files(root, names, role, st.path, alt_suffixes)
    lat, lon = utm_to_latlon(xy[:, 0], xy[:, 1], zone)
    return ImageSet(root, names, xy, zone, np.stack([lat, lon], axis=1), source=str(st.path))


def read_split(
    mat_path: str | os.PathLike,
    zone: UtmZone,
    image_root: str | os.PathLike | None,
    query_root: str | os.PathLike | None,
    query_dirs: Sequence[str],
    check_files: bool,
    alt_suffixes: Sequence[str] = (),
    query_conditions: Callable[[DbStruct, int], list[str] | None] | None = None,
) -> tuple[PlaceSplit, Path]:
    """Read one dbStruct .mat into a :class:`PlaceSplit`; also return the database image root.

    ``query_root`` defaults to ``image_root/<first of query_dirs that exists>``, else the image
    root. ``query_conditions(struct, n_queries)`` may supply per-query condition tags.
    """
    st = load_dbstruct(mat_path)
    for name in REQUIRED_FIELDS:
        st.get(name)
    zone = check_zone(zone, st.path)
    split = st.text("whichSet").lower()
    if split not in SPLIT_NAMES:
        raise DatasetError(st.path, f"whichSet {short_repr(split)} is not one of {list(SPLIT_NAMES)}")
    if "posDistThr" in st.fields:
        thr = np.asarray(st.fields["posDistThr"], dtype=object).reshape(-1)
        if thr.size == 1 and isinstance(thr[0], (int, float, np.number)) and float(thr[0]) != EVAL_POS_RADIUS_M:
            log.warning("%s: posDistThr is %s m; this project evaluates at %s m", st.path, thr[0], EVAL_POS_RADIUS_M)
    db_root = Path(image_root) if image_root is not None else default_image_root(st.path)
    db = read_image_set(st, "database", "dbImageFns", "utmDb", "numImages", zone, db_root, check_files, alt_suffixes)
    if query_root is not None:
        q_root = Path(query_root)
    else:
        q_names = [n.strip().replace("\\", "/") for n in st.strings("qImageFns")]
        q_root = default_query_root(db_root, q_names, query_dirs)
    queries = read_image_set(st, "query", "qImageFns", "utmQ", "numQueries", zone, q_root, check_files, alt_suffixes)
    if query_conditions is not None:
        conditions = query_conditions(st, len(queries))
        if conditions is not None:
            queries = replace(queries, condition=conditions)  # re-validates the count
    return PlaceSplit(split, db, queries, source=str(st.path)), db_root
