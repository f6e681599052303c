"""Fuzzing the dataset readers with hypothesis (issue 12, item 4).

Whatever the input, a reader gives a parsed record that holds together, or raises the project's
one error type, :class:`~sfrs_core.data.DatasetError`, with a one-line message naming the file
and the problem; never another exception. Fuzzed here:

- the VPR folder-format file-name parser and the folder reader (``vpr_folder.py``);
- the Pittsburgh and Tokyo 24/7 ``.mat`` readers (``pittsburgh.py``, ``tokyo.py``,
  ``_matstruct.py``): ``dbStruct`` contents of every wrong kind written with ``scipy.io.savemat``,
  MATLAB v7.3 (HDF5) files written with h5py, random bytes and mutated real files;
- the EXIF GPS reader (``exif_folder.py``): GPS IFDs written with piexif, hand-built malformed
  GPS IFDs (any tag type, count and offset), random bytes and mutated photos.

The default run is derandomized and bounded (the whole file takes about 20 s on one core), so
it never fails by chance in ``make test``. A deeper random search: ``SFRS_FUZZ_SCALE=20 pytest
tests/test_fuzz_readers.py`` runs 20 times the examples with fresh random inputs.
"""
from __future__ import annotations

import io
import math
import os
import re
import struct
import tempfile
from pathlib import Path, PurePosixPath

import h5py
import numpy as np
import piexif
import pytest
import scipy.io
import scipy.sparse
import utm
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from sfrs_core.data import DatasetError, PlaceDataset
from sfrs_core.data.dataset import SPLIT_NAMES
from sfrs_core.data.exif_folder import read_exif_folder, read_gps
from sfrs_core.data.geo import utm_to_latlon
from sfrs_core.data.pittsburgh import PITTSBURGH_ZONE, read_pittsburgh_mat
from sfrs_core.data.tokyo import TOKYO_ZONE, read_tokyo247_mat
from sfrs_core.data.vpr_folder import VprName, parse_vpr_name, read_vpr_folder

# Corrupt inputs make Pillow and scipy warn ("Corrupt EXIF data", MatReadWarning): expected here.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SCALE = float(os.environ.get("SFRS_FUZZ_SCALE", "1"))
DEEP = SCALE != 1


def fuzz(examples: int):
    """Bounded hypothesis settings: derandomized in the default run, random when scaled up."""
    return settings(
        max_examples=max(1, int(examples * SCALE)),
        deadline=None,
        derandomize=not DEEP,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


def check_error(err: DatasetError, *names: str) -> None:
    """A clear DatasetError: one line, names one of ``names`` (the file or folder), says what is wrong."""
    text = str(err)
    assert "\n" not in text and "\r" not in text, f"multi-line error: {text!r}"
    assert err.problem.strip(), f"error without a problem: {text!r}"
    assert len(err.problem) <= 600, f"overlong error ({len(err.problem)} chars): {text[:300]!r}..."
    assert any(n in text for n in names), f"error names none of {names}: {text!r}"


def read_or_error(call, *names: str):
    """``call()``'s result, or None after a clear DatasetError; any other exception fails the test."""
    try:
        result = call()
    except DatasetError as err:
        check_error(err, *names)
        event("DatasetError: " + re.sub(r"['\"(].*", "", err.problem)[:40])  # --hypothesis-show-statistics
        return None
    event("parsed" if result is not None else "None")
    return result


# ======================================================================== VPR folder format

VPR_BANDS = "CDEFGHJKLMNPQRSTUVWX"
NUMBERISH = st.sampled_from(
    ["", "nan", "NaN", "inf", "-inf", "1e400", "-0", "0", "1_0", " 12 ", "0x10", "1e5", "585150.25", "4477140.5",
     "17", "61", "-3", "T", "t", "A", "Z", "TT", "40.4406", "-79.99", "90.5", "181", "١٢", "\x00", "@", "."]
)
FLOAT_TEXT = st.floats(allow_nan=True, allow_infinity=True).map(repr) | st.integers(-10**30, 10**30).map(str)
FIELD_TEXT = NUMBERISH | FLOAT_TEXT | st.text(max_size=12)


@st.composite
def vpr_names(draw, junk: bool = True) -> str:
    """Names near the format: plausible fields, with (``junk``) some fields replaced by junk."""
    if junk:
        east, north = draw(st.floats(50_000, 1_100_000)), draw(st.floats(-1_000, 10_100_000))
        zone, band = draw(st.integers(-1, 62)), draw(st.sampled_from(VPR_BANDS + "aBIOYZ"))
    else:  # a real place: Pittsburgh, Tokyo or anywhere
        lat, lon = draw(st.sampled_from([(40.44, -79.99), (40.4401, -79.9902), (35.69, 139.70)])
                        | st.tuples(st.floats(-79, 83), st.floats(-179, 179)))
        east, north, zone, band = utm.from_latlon(lat, lon)
    fields = [f"{east:.2f}", f"{north:.2f}", str(zone), band]
    lat, lon = np.nan, np.nan
    if 1 <= zone <= 60 and fields[3] in VPR_BANDS:
        lat, lon = (float(v[0]) for v in utm_to_latlon(east, north, (zone, fields[3])))
    latlon = st.sampled_from([[f"{lat:.7f}", f"{lon:.7f}"], ["", ""]])
    fields += draw(latlon | st.lists(FLOAT_TEXT | st.just(""), min_size=2, max_size=2) if junk else latlon)
    fields += ["pano", "0", "90.0", "", "", "", "2020", "day"]
    for i in draw(st.lists(st.integers(0, len(fields) - 1), max_size=3 if junk else 0)):
        fields[i] = draw(FIELD_TEXT)
    if not junk:
        return "@" + "@".join(fields) + "@"
    n = draw(st.just(len(fields)) | st.integers(0, len(fields) + 2))
    head = draw(st.sampled_from(["@"] * 6 + ["", "x@", "@@"]))
    tail = draw(st.sampled_from(["@.jpg"] * 6 + [".jpg", "@", "@@.png", ""]))
    return head + "@".join(fields[:n] if n <= len(fields) else fields + ["extra"] * (n - len(fields))) + tail


def check_vpr_name(meta: VprName) -> None:
    assert isinstance(meta, VprName)
    assert math.isfinite(meta.east) and 100_000 <= meta.east <= 1_000_000
    assert math.isfinite(meta.north) and 0 <= meta.north <= 10_000_000
    assert 1 <= meta.zone <= 60 and len(meta.band) == 1 and meta.band in VPR_BANDS
    if math.isnan(meta.lat) or math.isnan(meta.lon):
        assert math.isnan(meta.lat) and math.isnan(meta.lon)
    else:
        assert -80 <= meta.lat <= 84 and -180 <= meta.lon <= 180
    for value in (meta.heading, meta.pitch, meta.roll, meta.height):
        assert math.isnan(value) or math.isfinite(value)
    for text in (meta.pano_id, meta.tile_num, meta.timestamp, meta.note):
        assert isinstance(text, str) and "@" not in text


@fuzz(400)
@given(name=st.text(max_size=60) | st.text(alphabet="@0123456789.-eEnaiNTSx /", max_size=80) | vpr_names()
       | vpr_names(junk=False))
@example(name="@585150.00@4477140.00@17@T@@@@@inf@@@@@@.jpg")
@example(name="@585150.00@4477140.00@17@T@nan@nan@@@@@@@@@.jpg")
@example(name="@585150.00@4477140.00@" + "9" * 5000 + "@T@.jpg")
def test_fuzz_vpr_file_name(name):
    meta = read_or_error(lambda: parse_vpr_name(name, "images/test/database/x.jpg"), "images/test/database/x.jpg")
    if meta is not None:
        check_vpr_name(meta)


def check_image_set(images, zone=None, root: Path | None = None, listed: bool = False) -> None:
    n = len(images)
    assert n > 0 and len(images.paths) == n
    assert images.utm.shape == (n, 2) and np.isfinite(images.utm).all()
    assert images.latlon.shape == (n, 2) and np.isfinite(images.latlon).all()
    assert (np.abs(images.latlon[:, 0]) <= 90).all() and (np.abs(images.latlon[:, 1]) <= 180).all()
    if zone is not None:
        assert tuple(images.zone) == tuple(zone)
    if images.heading is not None:
        assert images.heading.shape == (n,)
    if images.condition is not None:
        assert len(images.condition) == n
    if images.groups is not None:
        assert images.groups.shape == (n,) and (images.groups >= 0).all()
    for p in images.paths:
        assert isinstance(p, str) and p and not p.startswith("/")
        assert ".." not in PurePosixPath(p).parts, p
        if listed:  # names listed in a .mat are normalised to POSIX (a VPR file name may hold a backslash)
            assert "\\" not in p, p
        if root is not None:
            assert (Path(images.root) / p).is_file(), p


def check_dataset(ds: PlaceDataset, zone=None, files: bool = True, listed: bool = False) -> None:
    assert isinstance(ds, PlaceDataset) and ds.splits
    for name, split in ds.splits.items():
        assert name in SPLIT_NAMES and split.name == name
        check_image_set(split.database, zone, split.database.root if files else None, listed)
        check_image_set(split.queries, zone, split.queries.root if files else None, listed)
        assert split.database.zone == split.queries.zone
        assert len(split.eval_positives) == len(split.queries)


def fs_safe(name: str) -> bool:
    return "/" not in name and "\x00" not in name and len(name.encode("utf-8", "surrogatepass")) <= 200 and \
        name not in (".", "..") and not any(0xD800 <= ord(c) <= 0xDFFF for c in name)


@fuzz(40)
@given(db=st.lists(vpr_names(junk=False) | vpr_names(), min_size=0, max_size=3),
       q=st.lists(vpr_names(junk=False) | vpr_names(), min_size=0, max_size=2))
def test_fuzz_vpr_folder(db, q):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "city"
        for role, names in (("database", db), ("queries", q)):
            folder = root / "images" / "test" / role
            folder.mkdir(parents=True)
            for i, name in enumerate(names):
                name = f"{name}{i}.jpg"
                assume(fs_safe(name))
                (folder / name).touch()
        ds = read_or_error(lambda: read_vpr_folder(root), str(root))
        if ds is not None:
            check_dataset(ds)


# ======================================================================== .mat readers

PITT_E, PITT_N = 585150.0, 4477140.0
TOKYO_E, TOKYO_N = 381620.0, 3950290.0
REQUIRED = ("whichSet", "dbImageFns", "utmDb", "qImageFns", "utmQ", "numImages", "numQueries")
OPTIONAL = ("posDistThr", "posDistSqThr", "nonTrivPosDistSqThr", "qCondition", "qTimeStamp", "dbTimeStamp")
DELETE = object()
ODD_NAMES = st.sampled_from([
    "", " ", ".", "./", "..", "../x.jpg", "a/../../x.jpg", "/etc/passwd", "C:\\x.jpg", "c:/x.jpg", "a\\b.jpg",
    "a//b.jpg", "000/../000/000000_pitch1_yaw1.jpg", "x\x00.jpg", "\u00e9\u4e2d.jpg", "a" * 300 + ".jpg",
    "000/000000_pitch1_yaw1.png", "000/000000_pitch1_yaw1.jpg ",
])


def cell(items, shape=None) -> np.ndarray:
    """A MATLAB cell array (object array), Nx1 unless ``shape``."""
    items = list(items)
    out = np.empty((len(items), 1) if shape is None else shape, dtype=object)
    for i, item in enumerate(items):
        out.reshape(-1)[i] = item
    return out


scalars = st.one_of(
    st.integers(-2**63, 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.complex_numbers(allow_nan=True, allow_infinity=True),
    st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=8),
    st.sampled_from(["5", "3", "test", "train", "val", " 2 ", "NaN", "day", "night"]),
)
ndarrays = hnp.arrays(
    dtype=st.sampled_from([np.float64, np.float32, np.int8, np.uint8, np.int32, np.int64, np.uint64, np.bool_,
                           np.complex128]),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
)
sparse = hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=3)).map(
    scipy.sparse.csc_matrix)
weird_values = st.recursive(
    scalars | ndarrays | sparse
    | st.sampled_from([np.zeros((0, 0)), np.empty((0, 1), dtype=object), np.array(["ab", "cd"])]),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(cell),
        st.lists(inner, min_size=1, max_size=3).map(lambda v: cell(v, (1, len(v)))),
        st.dictionaries(st.sampled_from(["a", "whichSet", "x1"]), inner, max_size=2),  # a nested struct
    ),
    max_leaves=6,
)


def names_for(n: int, prefix: str) -> list[str]:
    return [f"{prefix}/{i:06d}_pitch1_yaw{i % 2 + 1}.jpg" for i in range(n)]


@st.composite
def near_value(draw, field: str, n_db: int, n_q: int):
    """A value close to a valid one for ``field``: wrong length, orientation, NaN, odd names ..."""
    n = n_db if field in ("dbImageFns", "utmDb", "numImages", "dbTimeStamp") else n_q
    if field in ("dbImageFns", "qImageFns"):
        names = names_for(n, "000")
        kind = draw(st.sampled_from(["odd", "length", "row", "matrix", "char", "numbers"]))
        if kind == "odd" and names:
            names[draw(st.integers(0, n - 1))] = draw(ODD_NAMES | st.text(max_size=20))
            return cell(names)
        if kind == "length":
            return cell(names_for(draw(st.integers(0, n + 2)), "000"))
        if kind == "row":
            return cell(names, (1, n))
        if kind == "matrix":
            return cell(names + names, (n, 2)) if n else cell([])
        if kind == "char":
            return np.array(names) if names else ""
        return cell(draw(st.lists(scalars, min_size=n, max_size=n)))
    if field in ("utmDb", "utmQ"):
        e0, n0 = draw(st.sampled_from([(PITT_E, PITT_N), (TOKYO_E, TOKYO_N)]))
        xy = np.array([[e0 + 5.0 * i for i in range(n)], [n0 + 3.0 * i for i in range(n)]]).reshape(2, n)
        kind = draw(st.sampled_from(["transposed", "length", "bad", "rows", "int", "bool"]))
        if kind == "transposed":
            return xy.T
        if kind == "length":
            m = draw(st.integers(0, n + 2))
            return np.resize(xy, (2, m)) if m else np.zeros((2, 0))
        if kind == "bad" and n:
            xy[draw(st.integers(0, 1)), draw(st.integers(0, n - 1))] = draw(
                st.sampled_from([np.nan, np.inf, -np.inf, -1.0, 0.0, 1e12, 99_999.0, 1_000_001.0, 10_000_001.0]))
            return xy
        if kind == "rows":
            return np.vstack([xy, xy[:1]])
        if kind == "int":
            return xy.astype(np.int64)
        return xy.astype(bool)
    if field in ("numImages", "numQueries"):
        return draw(st.sampled_from([n - 1, n + 1, -n, n + 0.5, float("nan"), float("inf"), str(n), [n, n],
                                     np.uint8(n % 256), np.int64(n), True, complex(n, 1), 2**62]))
    if field == "whichSet":
        return draw(st.sampled_from(["TEST", " val ", "training", "", "test\x00", "tést", 1, ["test"],
                                     np.array(["te", "st"]), cell(["test"])]))
    if field in ("qCondition", "qTimeStamp", "dbTimeStamp"):
        words = draw(st.lists(st.sampled_from(["day", "sunset", "night", "Night ", "D", "dusk", "noon", "", "2012"]),
                              min_size=max(0, n - 1), max_size=n + 1))
        return draw(st.sampled_from([cell(words), np.array(words) if words else "", np.arange(len(words))]))
    return draw(st.sampled_from([25, 625, 100, 25.5, -1, float("nan"), "25", complex(25, 1), np.zeros((2, 2))]))


@st.composite
def dbstructs(draw):
    """(fields, image names to create, struct layout) of a .mat close to a valid Pittsburgh/Tokyo file."""
    n_db, n_q = draw(st.integers(0, 4)), draw(st.integers(0, 3))
    e0, n0 = draw(st.sampled_from([(PITT_E, PITT_N), (TOKYO_E, TOKYO_N)]))
    fields: dict = {
        "whichSet": draw(st.sampled_from(SPLIT_NAMES)),
        "dbImageFns": cell(names_for(n_db, "000")),
        "utmDb": np.array([[e0 + 5.0 * i for i in range(n_db)], [n0 + 3.0 * i for i in range(n_db)]]).reshape(2, n_db),
        "qImageFns": cell(names_for(n_q, "001")),
        "utmQ": np.array([[e0 + 7.0 * i for i in range(n_q)], [n0 + 2.0 * i for i in range(n_q)]]).reshape(2, n_q),
        "numImages": n_db,
        "numQueries": n_q,
    }
    for name in draw(st.lists(st.sampled_from(OPTIONAL), max_size=3, unique=True)):
        fields[name] = draw(near_value(name, n_db, n_q))
    for name in draw(st.lists(st.sampled_from(REQUIRED + OPTIONAL), max_size=3, unique=True)):
        fields[name] = draw(st.just(DELETE) | weird_values | near_value(name, n_db, n_q))
    fields = {k: v for k, v in fields.items() if v is not DELETE}
    if draw(st.booleans()):  # field order never matters (TokyoTM inserts fields in the middle)
        fields = dict(reversed(fields.items()))
    layout = draw(st.sampled_from(["struct"] * 8 + ["array", "empty", "value", "other-name", "cell"]))
    return fields, names_for(n_db, "000") + names_for(n_q, "001"), layout


def save_dbstruct(path: Path, fields: dict, layout: str, compress: bool) -> None:
    dtype = [(name, object) for name in fields] or [("empty", object)]
    shape = {"array": (2, 1), "empty": (0, 1)}.get(layout, (1, 1))
    struct_ = np.empty(shape, dtype=dtype)
    for k in range(struct_.size):
        for name, value in fields.items():
            struct_.reshape(-1)[k][name] = value
    var = {"value": 42.0, "cell": cell([struct_])}.get(layout, struct_)
    name = "somethingElse" if layout == "other-name" else "dbStruct"
    try:
        scipy.io.savemat(str(path), {name: var}, do_compression=compress)
    except Exception:  # a value savemat itself cannot write: not a file a reader could ever see
        assume(False)


def check_mat_dataset(ds: PlaceDataset, zone, check_files: bool, tokyo: bool) -> None:
    check_dataset(ds, zone, files=check_files, listed=True)
    (split,) = ds.splits.values()
    assert split.queries.condition is None or set(split.queries.condition) <= {"day", "sunset", "night"}
    if tokyo:
        assert split.database.groups is not None


READERS = {"pittsburgh": (read_pittsburgh_mat, PITTSBURGH_ZONE), "tokyo247": (read_tokyo247_mat, TOKYO_ZONE)}
readers = st.sampled_from(sorted(READERS))


def read_mat(reader: str, mat: Path, check_files: bool) -> None:
    read, zone = READERS[reader]
    ds = read_or_error(lambda: read(mat, check_files=check_files), mat.name)
    if ds is not None:
        check_mat_dataset(ds, zone, check_files, tokyo=reader == "tokyo247")


@fuzz(200)
@given(spec=dbstructs(), compress=st.booleans(), check_files=st.booleans(), reader=readers)
def test_fuzz_mat_struct_contents(spec, compress, check_files, reader):
    fields, image_names, layout = spec
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        mat = root / "datasets" / "pitts30k_test.mat"
        mat.parent.mkdir()
        save_dbstruct(mat, fields, layout, compress)
        for name in image_names[:4]:  # some listed images exist; the others are missing
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).touch()
        read_mat(reader, mat, check_files)


def valid_mat_bytes(compress: bool) -> bytes:
    fields = {
        "whichSet": "test", "dbImageFns": cell(names_for(3, "000")), "utmDb": np.array([[PITT_E] * 3, [PITT_N] * 3]),
        "qImageFns": cell(names_for(2, "001")), "utmQ": np.array([[PITT_E] * 2, [PITT_N] * 2]),
        "numImages": 3, "numQueries": 2, "posDistThr": 25,
    }
    buf = io.BytesIO()
    struct_ = np.empty((1, 1), dtype=[(k, object) for k in fields])
    for k, v in fields.items():
        struct_[0, 0][k] = v
    scipy.io.savemat(buf, {"dbStruct": struct_}, do_compression=compress)
    return buf.getvalue()


VALID_MATS = (valid_mat_bytes(False), valid_mat_bytes(True))


@st.composite
def mutated(draw, originals: tuple[bytes, ...]) -> bytes:
    """A real file with a few bytes flipped, inserted or deleted, or truncated."""
    data = bytearray(draw(st.sampled_from(originals)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["set", "set", "set", "insert", "delete", "truncate", "int32"]))
        i = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "set" and data:
            data[i] = draw(st.integers(0, 255))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[i:i + draw(st.integers(1, 8))]
        elif op == "truncate":
            del data[i:]
        elif op == "int32" and len(data) >= i + 4:  # a size or type field set to an extreme
            data[i:i + 4] = struct.pack("<I", draw(st.sampled_from([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 0x10000])))
    return bytes(data)


def patched(data: bytes, changes: dict[int, int]) -> bytes:
    out = bytearray(data)
    for i, byte in changes.items():
        out[i] = byte
    return bytes(out)


MAT_HEADER = b"MATLAB 5.0 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024".ljust(116, b" ") + \
    b"\0" * 8 + b"\x00\x01IM"  # text, subsystem offset, version 0x0100, little-endian


@fuzz(200)
@given(reader=readers, data=st.binary(max_size=600) | st.binary(max_size=400).map(lambda b: MAT_HEADER + b)
       | mutated(VALID_MATS))
@example(reader="pittsburgh", data=b"")
@example(reader="pittsburgh", data=VALID_MATS[0][:200])
# Found by this test, each crashed scipy's compiled MAT reader before the reader ran it in a
# child process: a char array's data type byte set to 222 (segmentation fault), a cell entry's
# name length set to 215 (segmentation fault), dbStruct's dims set to 1x385875969 (scipy
# allocates 23 GiB for the struct array: MemoryError, or the kernel's OOM killer).
@example(reader="pittsburgh", data=patched(VALID_MATS[0], {440: 222}))
@example(reader="pittsburgh", data=patched(VALID_MATS[0], {436: 215}))
@example(reader="pittsburgh", data=patched(VALID_MATS[0], {167: 23}))
def test_fuzz_mat_random_bytes(reader, data):
    with tempfile.TemporaryDirectory() as tmp:
        mat = Path(tmp) / "tokyo247.mat"
        mat.write_bytes(data)
        read_mat(reader, mat, check_files=False)


def write_v73(path: Path, fields: dict, header: bool) -> None:
    """A MATLAB v7.3 file as MATLAB writes it: HDF5 with a 512-byte user block holding the MAT header."""
    with h5py.File(path, "w", userblock_size=512 if header else 0) as f:
        group = f.create_group("dbStruct")
        group.attrs["MATLAB_class"] = np.bytes_("struct")
        for name, value in fields.items():
            if isinstance(value, str):
                ds = group.create_dataset(name, data=np.frombuffer(value.encode("utf-16-le"), "<u2").reshape(-1, 1))
                ds.attrs["MATLAB_class"] = np.bytes_("char")
            else:
                arr = np.asarray(value)
                if arr.dtype.kind not in "biufc":
                    continue
                group.create_dataset(name, data=arr.T)
    if header:
        with path.open("r+b") as fh:
            fh.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
                     .ljust(116, b" ") + b"\0" * 8 + b"\x00\x02IM")


@fuzz(15)
@given(spec=dbstructs(), header=st.booleans())
def test_fuzz_mat_v73_hdf5(spec, header):
    fields, _, _ = spec
    with tempfile.TemporaryDirectory() as tmp:
        mat = Path(tmp) / "pitts250k_val.mat"
        write_v73(mat, fields, header)
        for reader in (read_pittsburgh_mat, read_tokyo247_mat):
            with pytest.raises(DatasetError) as exc:
                reader(mat, check_files=False)
            check_error(exc.value, mat.name)
            assert ("v7.3" in str(exc.value)) == header


# ======================================================================== EXIF GPS reader

def jpeg_bytes(size=(8, 6)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (90, 140, 60)).save(buf, "JPEG")
    return buf.getvalue()


JPEG = jpeg_bytes()
rational = st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)) | st.sampled_from(
    [(45, 1), (30, 1), (0, 1), (1, 0), (0, 0), (59, 1), (60, 1), (5999, 100), (91, 1), (181, 1)])
gps_ref = st.sampled_from([b"N", b"S", b"E", b"W", b"n", b"X", b"", b"NS", b"N\x00", "N", "W", b"\xff"]) | st.binary(
    max_size=3)


def dms(value: float) -> tuple:
    """Degrees as EXIF degrees/minutes/seconds rationals."""
    deg = int(value)
    minutes = int((value - deg) * 60)
    seconds = round(((value - deg) * 60 - minutes) * 60 * 100)
    return (deg, 1), (minutes, 1), (min(seconds, 5999), 100)


G = piexif.GPSIFD
RATIONAL_TAGS = (G.GPSLatitude, G.GPSLongitude, G.GPSImgDirection, G.GPSAltitude, G.GPSDestLatitude)
REF_TAGS = (G.GPSLatitudeRef, G.GPSLongitudeRef, G.GPSImgDirectionRef)


@st.composite
def piexif_gps(draw, near: tuple[float, float] | None = None) -> dict:
    """A valid GPS IFD (anywhere, or within ~1 km of ``near``) with up to 3 tags removed or made odd."""
    if near is None:
        lat, lon = draw(st.floats(-90, 90)), draw(st.floats(-180, 180))
    else:
        lat, lon = near[0] + draw(st.floats(-0.01, 0.01)), near[1] + draw(st.floats(-0.01, 0.01))
    gps: dict = {
        G.GPSLatitudeRef: b"N" if lat >= 0 else b"S", G.GPSLatitude: dms(abs(lat)),
        G.GPSLongitudeRef: b"E" if lon >= 0 else b"W", G.GPSLongitude: dms(abs(lon)),
    }
    if draw(st.booleans()):
        gps[G.GPSImgDirectionRef] = b"T"
        gps[G.GPSImgDirection] = (round(draw(st.floats(0, 360)) * 100), 100)
    for tag in draw(st.lists(st.sampled_from(RATIONAL_TAGS + REF_TAGS), max_size=3, unique=True)):
        if draw(st.integers(0, 3)) == 0:
            gps.pop(tag, None)
        elif tag in REF_TAGS:
            gps[tag] = draw(gps_ref)
        elif tag in (G.GPSImgDirection, G.GPSAltitude):
            gps[tag] = draw(rational)
        else:
            gps[tag] = tuple(draw(st.lists(rational, min_size=1, max_size=5)))
    return gps


def exif_dump(gps: dict) -> bytes:
    try:
        return piexif.dump({"0th": {}, "Exif": {}, "GPS": gps, "1st": {}, "thumbnail": None})
    except Exception:  # piexif refuses to write this value: not a file a reader sees
        assume(False)


TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}


@st.composite
def raw_gps_exif(draw) -> bytes:
    """An EXIF block whose GPS IFD entries have any tag, type (valid or not), count and value/offset."""
    e = draw(st.sampled_from(["<", ">"]))
    n = draw(st.integers(0, 6))
    gps_at = 8 + 2 + 12 + 4
    data_at = gps_at + 2 + 12 * n + 4
    data = draw(st.binary(max_size=64))
    ifd0_gps_offset = draw(st.just(gps_at) | st.integers(0, 2**32 - 1) | st.sampled_from([0, 8, data_at]))
    head = (b"MM" if e == ">" else b"II") + struct.pack(e + "HI", 42, 8)
    ifd0 = struct.pack(e + "H", 1) + struct.pack(e + "HHII", 0x8825, draw(st.sampled_from([4, 4, 4, 3, 13, 7])), 1,
                                                  ifd0_gps_offset) + struct.pack(e + "I", 0)
    entries = b""
    for _ in range(n):
        tag = draw(st.sampled_from([1, 2, 3, 4, 16, 17, 0, 5, 6, 0x8825]) | st.integers(0, 65535))
        typ = draw(st.integers(1, 12) | st.integers(0, 65535))
        count = draw(st.integers(0, 4) | st.just(3) | st.integers(0, 2**32 - 1))
        if TYPE_SIZES.get(typ, 1) * count > 4 and draw(st.booleans()):
            value = struct.pack(e + "I", data_at + draw(st.integers(0, max(0, len(data) - 1))))
        else:
            value = draw(st.binary(min_size=4, max_size=4))
        entries += struct.pack(e + "HHI", tag, typ, count) + value
    gps = struct.pack(e + "H", n) + entries + struct.pack(e + "I", draw(st.sampled_from([0, 0, 8, gps_at])))
    return b"Exif\x00\x00" + head + ifd0 + gps + data


def check_fix(fix) -> None:
    if fix is None:
        return
    lat, lon, heading = fix
    assert math.isfinite(lat) and -90 <= lat <= 90, fix
    assert math.isfinite(lon) and -180 <= lon <= 180, fix
    assert math.isnan(heading) or 0 <= heading < 360, fix
    assert not (lat == 0 and lon == 0), fix


def write_photo(path: Path, exif: bytes, kind: str) -> None:
    if kind == "jpeg":
        piexif.insert(exif, JPEG, str(path))
    else:
        Image.new("RGB", (8, 6), (90, 140, 60)).save(path, "PNG", exif=exif)


@fuzz(200)
@given(exif=st.builds(exif_dump, piexif_gps()) | raw_gps_exif(), kind=st.sampled_from(["jpeg", "jpeg", "png"]),
       decode=st.booleans())
def test_fuzz_exif_gps_ifd(exif, kind, decode):
    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / ("photo.jpg" if kind == "jpeg" else "photo.png")
        write_photo(photo, exif, kind)
        check_fix(read_or_error(lambda: read_gps(photo, decode=decode), photo.name))


def gps_jpeg() -> bytes:
    G = piexif.GPSIFD
    exif = piexif.dump({"GPS": {G.GPSLatitudeRef: b"N", G.GPSLatitude: ((45, 1), (4, 1), (1234, 100)),
                                G.GPSLongitudeRef: b"E", G.GPSLongitude: ((7, 1), (41, 1), (5, 1)),
                                G.GPSImgDirection: (270, 1)}})
    out = io.BytesIO()
    piexif.insert(exif, jpeg_bytes((16, 16)), out)
    return out.getvalue()


GPS_JPEG = gps_jpeg()


@fuzz(150)
@given(data=st.binary(max_size=400) | mutated((GPS_JPEG,)) | st.binary(max_size=200).map(lambda b: GPS_JPEG[:40] + b),
       decode=st.booleans())
@example(data=GPS_JPEG, decode=True)
@example(data=GPS_JPEG[: len(GPS_JPEG) // 2], decode=True)
def test_fuzz_exif_random_bytes(data, decode):
    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / "photo.jpg"
        photo.write_bytes(data)
        check_fix(read_or_error(lambda: read_gps(photo, decode=decode), photo.name))


TURIN = (45.0703, 7.6869)
PLACES = st.sampled_from([TURIN, (-33.8688, 151.2093), (0.0005, -78.5), (83.9, 10.0), (-80.0, 0.0), (40.44, 179.999)])


@fuzz(40)
@given(place=PLACES, data=st.data(), skip=st.booleans())
def test_fuzz_exif_folder(place, data, skip):
    db = data.draw(st.lists(st.builds(exif_dump, piexif_gps(place)) | raw_gps_exif(), min_size=1, max_size=2))
    q = data.draw(st.builds(exif_dump, piexif_gps(place)))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "photos"
        (root / "queries").mkdir(parents=True)
        for i, exif in enumerate(db):
            write_photo(root / f"db{i}.jpg", exif, "jpeg")
        write_photo(root / "queries" / "q.jpg", q, "jpeg")
        ds = read_or_error(lambda: read_exif_folder(root, skip_missing_gps=skip), str(root))
        if ds is not None:
            check_dataset(ds)
