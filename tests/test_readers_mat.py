"""Pittsburgh / Tokyo 24/7 .mat readers and load_dataset auto-detection (fixtures built in tmp_path)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
import utm
from PIL import Image

from sfrs_core.data._matstruct import REQUIRED_FIELDS
from sfrs_core.data.errors import DatasetError
from sfrs_core.data.loaders import detect_format, load_dataset
from sfrs_core.data.pittsburgh import read_pittsburgh, read_pittsburgh_mat
from sfrs_core.data.tokyo import read_tokyo247_mat
from sfrs_core.data.vpr_folder import VprName, format_vpr_name

PITT_E, PITT_N = 585150.0, 4477140.0  # central Pittsburgh, zone 17T
TOKYO_E, TOKYO_N = 381620.0, 3950290.0  # Shinjuku, zone 54S


# ---------------------------------------------------------------- fixture builders

def cell(names: list[str]) -> np.ndarray:
    """An Nx1 cell array of strings, as loadmat returns it."""
    out = np.empty((len(names), 1), dtype=object)
    for i, name in enumerate(names):
        out[i, 0] = name
    return out


def write_mat(path: Path, fields: dict, var: str = "dbStruct") -> Path:
    """Save ``fields`` as a 1x1 MATLAB struct (field order as given) under variable ``var``."""
    struct = np.empty((1, 1), dtype=[(name, object) for name in fields])
    for name, value in fields.items():
        struct[0, 0][name] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {var: struct})
    return path


def touch_jpeg(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), (120, 60, 30)).save(path, "JPEG")


def pitts_fields(n_db: int = 6, n_q: int = 3, which: str = "test", e0: float = PITT_E, n0: float = PITT_N) -> dict:
    db = [f"000/{i // 2:06d}_pitch1_yaw{i % 2 + 1}.jpg" for i in range(n_db)]
    q = [f"000/{i:06d}_pitch1_yaw1.jpg" for i in range(n_q)]
    utm_db = np.array([[e0 + 5.0 * i for i in range(n_db)], [n0 + 3.0 * i for i in range(n_db)]])
    utm_q = np.array([[e0 + 7.0 * i + 1.5 for i in range(n_q)], [n0 + 2.0 * i - 0.5 for i in range(n_q)]])
    return {
        "whichSet": which,
        "dbImageFns": cell(db),
        "utmDb": utm_db,
        "qImageFns": cell(q),
        "utmQ": utm_q,
        "numImages": n_db,
        "numQueries": n_q,
        "posDistThr": 25,
        "posDistSqThr": 625,
        "nonTrivPosDistSqThr": 100,
    }


def make_pitts(root: Path, fields: dict | None = None, name: str = "pitts30k_test.mat", in_datasets: bool = True,
               query_dir: str | None = "queries_real", images: bool = True) -> Path:
    """ROOT/datasets/<name> plus tiny JPEGs: database under ROOT, queries under ROOT/<query_dir>."""
    fields = fields if fields is not None else pitts_fields()
    mat = write_mat(root / ("datasets" if in_datasets else "") / name, fields)
    if images:
        for f in fields["dbImageFns"].reshape(-1):
            touch_jpeg(root / f)
        for f in fields["qImageFns"].reshape(-1):
            touch_jpeg(root / (query_dir or "") / f)
    return mat


def tokyo_fields(n_db: int = 4, n_q: int = 3, with_timestamps: bool = False, **extra) -> dict:
    db = [f"03814/3814{i:05d}_eid_{i}.jpg" for i in range(n_db)]
    q = [f"{i + 1:05d}.jpg" for i in range(n_q)]
    fields = {
        "whichSet": "test",
        "dbImageFns": cell(db),
        "utmDb": np.array([[TOKYO_E + 4.0 * i for i in range(n_db)], [TOKYO_N - 6.0 * i for i in range(n_db)]]),
    }
    if with_timestamps:  # TokyoTM puts the time stamps in the middle of the struct
        fields["dbTimeStamp"] = np.array([[201205 + i for i in range(n_db)]], dtype=np.float64)
    fields.update({"qImageFns": cell(q), "utmQ": np.array([[TOKYO_E + 3.0 * i for i in range(n_q)],
                                                           [TOKYO_N - 1.0 * i for i in range(n_q)]])})
    if with_timestamps:
        fields["qTimeStamp"] = np.array([[201304 + i for i in range(n_q)]], dtype=np.float64)
    fields.update({"numImages": n_db, "numQueries": n_q, "posDistThr": 25, "posDistSqThr": 625,
                   "nonTrivPosDistSqThr": 100})
    fields.update(extra)
    return fields


def make_tokyo(root: Path, fields: dict | None = None, db_suffix: str = ".jpg") -> Path:
    fields = fields if fields is not None else tokyo_fields()
    mat = write_mat(root / "datasets" / "tokyo247.mat", fields)
    for f in fields["dbImageFns"].reshape(-1):
        touch_jpeg((root / f).with_suffix(db_suffix))
    for f in fields["qImageFns"].reshape(-1):
        touch_jpeg(root / "247query_v3" / f)
    return mat


def assert_error(excinfo: pytest.ExceptionInfo, filename: str, *words: str) -> None:
    message = str(excinfo.value)
    assert filename in message, message
    for word in words:
        assert word.lower() in message.lower(), message


# ---------------------------------------------------------------- Pittsburgh: reading

def test_pittsburgh_reads_counts_paths_utm_latlon(tmp_path):
    fields = pitts_fields()
    mat = make_pitts(tmp_path, fields)
    ds = read_pittsburgh_mat(mat)
    assert ds.format == "pittsburgh" and ds.name == "pitts30k"
    assert list(ds.splits) == ["test"]
    split = ds["test"]
    assert split.name == "test"
    assert len(split.database) == 6 and len(split.queries) == 3
    assert split.database.paths == [str(f) for f in fields["dbImageFns"][:, 0]]
    assert split.queries.paths[1] == "000/000001_pitch1_yaw1.jpg"
    # .mat in ROOT/datasets -> images under ROOT, queries under ROOT/queries_real
    assert split.database.root == tmp_path and ds.root == tmp_path
    assert split.queries.root == tmp_path / "queries_real"
    assert split.queries.image_path(0).is_file() and split.database.image_path(5).is_file()
    np.testing.assert_array_equal(split.database.utm, fields["utmDb"].T)
    np.testing.assert_array_equal(split.queries.utm, fields["utmQ"].T)
    assert split.database.zone == (17, "T") and split.queries.zone == (17, "T")
    for image_set, raw in ((split.database, fields["utmDb"]), (split.queries, fields["utmQ"])):
        for i in range(raw.shape[1]):
            lat, lon = utm.to_latlon(raw[0, i], raw[1, i], 17, "T")
            assert image_set.latlon[i] == pytest.approx((lat, lon), abs=1e-9)
    assert 40.3 < split.database.latlon[0, 0] < 40.6 and -80.1 < split.database.latlon[0, 1] < -79.9
    assert split.queries.condition is None
    assert len(split.eval_positives) == 3


def test_pittsburgh_fields_read_by_name_not_position(tmp_path):
    fields = pitts_fields()
    shuffled = {k: fields[k] for k in reversed(list(fields))}
    shuffled = {"extraField": np.array([[1.0, 2.0]]), **shuffled}
    ds = read_pittsburgh_mat(make_pitts(tmp_path, shuffled))
    np.testing.assert_array_equal(ds["test"].database.utm, fields["utmDb"].T)
    assert ds["test"].queries.paths[0] == "000/000000_pitch1_yaw1.jpg"


def test_pittsburgh_mat_next_to_images_and_no_queries_real(tmp_path):
    mat = make_pitts(tmp_path, in_datasets=False, query_dir=None)
    split = read_pittsburgh_mat(mat)["test"]
    assert split.database.root == tmp_path
    assert split.queries.root == tmp_path  # no queries_real folder: queries under the image root


def test_pittsburgh_symlinked_mat_keeps_its_link_folder(tmp_path):
    fields = pitts_fields()
    make_pitts(tmp_path / "data", fields)
    real = write_mat(tmp_path / "downloads" / "netvlad" / "pitts30k_test.mat", fields)
    (tmp_path / "data" / "datasets" / "pitts30k_test.mat").unlink()
    (tmp_path / "data" / "datasets" / "pitts30k_test.mat").symlink_to(real)
    ds = read_pittsburgh_mat(tmp_path / "data" / "datasets" / "pitts30k_test.mat")
    assert ds.root == tmp_path / "data"


def test_pittsburgh_query_names_already_prefixed(tmp_path):
    fields = pitts_fields()
    fields["qImageFns"] = cell(["queries_real/" + str(n) for n in fields["qImageFns"][:, 0]])
    split = read_pittsburgh_mat(make_pitts(tmp_path, fields, query_dir=None))["test"]
    assert split.queries.root == tmp_path
    assert split.queries.paths[0] == "queries_real/000/000000_pitch1_yaw1.jpg"


def test_pittsburgh_explicit_roots(tmp_path):
    fields = pitts_fields()
    mat = write_mat(tmp_path / "specs" / "pitts30k_test.mat", fields)
    for f in fields["dbImageFns"][:, 0]:
        touch_jpeg(tmp_path / "db" / str(f))
    for f in fields["qImageFns"][:, 0]:
        touch_jpeg(tmp_path / "q" / str(f))
    split = read_pittsburgh_mat(mat, image_root=tmp_path / "db", query_root=tmp_path / "q")["test"]
    assert split.database.root == tmp_path / "db" and split.queries.root == tmp_path / "q"
    # image_root given, query_root not: IMAGE_ROOT/queries_real when it exists, else IMAGE_ROOT
    assert read_pittsburgh_mat(mat, image_root=tmp_path / "db")["test"].queries.root == tmp_path / "db"
    for f in fields["qImageFns"][:, 0]:
        touch_jpeg(tmp_path / "db" / "queries_real" / str(f))
    split = read_pittsburgh_mat(mat, image_root=tmp_path / "db")["test"]
    assert split.queries.root == tmp_path / "db" / "queries_real"


def test_pittsburgh_utm_zone_override(tmp_path):
    fields = pitts_fields()
    split = read_pittsburgh_mat(make_pitts(tmp_path, fields), utm_zone=(18, "T"))["test"]
    assert split.database.zone == (18, "T")
    lat, lon = utm.to_latlon(fields["utmDb"][0, 0], fields["utmDb"][1, 0], 18, "T")
    assert split.database.latlon[0] == pytest.approx((lat, lon), abs=1e-9)


def test_pittsburgh_check_files_false_skips_existence(tmp_path):
    mat = make_pitts(tmp_path, images=False)
    ds = read_pittsburgh_mat(mat, check_files=False)
    assert len(ds["test"].database) == 6


def test_read_pittsburgh_folder_merges_splits(tmp_path):
    make_pitts(tmp_path, pitts_fields(4, 2, "train"), name="pitts30k_train.mat")
    make_pitts(tmp_path, pitts_fields(5, 2, "val", e0=PITT_E + 2000), name="pitts30k_val.mat")
    make_pitts(tmp_path, pitts_fields(6, 3, "test", e0=PITT_E + 4000), name="pitts30k_test.mat")
    make_pitts(tmp_path, pitts_fields(7, 3, "test"), name="pitts250k_test.mat")
    ds = read_pittsburgh(tmp_path)
    assert ds.name == "pitts30k" and list(ds.splits) == ["train", "val", "test"]
    assert [len(ds[s].database) for s in ("train", "val", "test")] == [4, 5, 6]
    only = read_pittsburgh(tmp_path, splits=["val"])
    assert list(only.splits) == ["val"]
    big = read_pittsburgh(tmp_path / "datasets", variant="250k")
    assert big.name == "pitts250k" and len(big["test"].database) == 7
    with pytest.raises(DatasetError) as exc:
        read_pittsburgh(tmp_path, splits=["val"], variant="250k")
    assert_error(exc, str(tmp_path), "pitts250k_val.mat", "not found")


def test_read_pittsburgh_folder_without_mats(tmp_path):
    with pytest.raises(DatasetError) as exc:
        read_pittsburgh(tmp_path)
    assert_error(exc, str(tmp_path), "no pitts")


# ---------------------------------------------------------------- Pittsburgh: bad input

def test_error_mat_file_missing(tmp_path):
    with pytest.raises(DatasetError) as exc:
        read_pittsburgh_mat(tmp_path / "pitts30k_test.mat")
    assert_error(exc, "pitts30k_test.mat", "not found")


def test_error_not_a_mat_file(tmp_path):
    bad = tmp_path / "pitts30k_test.mat"
    bad.write_bytes(b"this is not a MATLAB file at all" * 10)
    with pytest.raises(DatasetError) as exc:
        read_pittsburgh_mat(bad)
    assert_error(exc, "pitts30k_test.mat", "not a readable")


def test_error_matlab_v73_file(tmp_path):
    import struct

    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64 HDF5 schema 1.00 .".ljust(116, b" ")
    bad = tmp_path / "pitts250k_test.mat"
    bad.write_bytes(header + b"\0" * 8 + struct.pack("<H", 0x0200) + b"IM" + b"\0" * 512)
    with pytest.raises(DatasetError) as exc:
        read_pittsburgh_mat(bad)
    assert_error(exc, "pitts250k_test.mat", "v7.3", "not supported")


def test_error_no_dbstruct(tmp_path):
    mat = write_mat(tmp_path / "pitts30k_test.mat", pitts_fields(), var="somethingElse")
    with pytest.raises(DatasetError) as exc:
        read_pittsburgh_mat(mat)
    assert_error(exc, "pitts30k_test.mat", "dbStruct")


@pytest.mark.parametrize("field", REQUIRED_FIELDS)
def test_error_missing_field(tmp_path, field):
    fields = pitts_fields()
    mat = make_pitts(tmp_path, fields)
    write_mat(mat, {k: v for k, v in fields.items() if k != field})
    with pytest.raises(DatasetError) as exc:
        read_pittsburgh_mat(mat)
    assert_error(exc, "pitts30k_test.mat", "no field", field)


@pytest.mark.parametrize(
    "change, word",
    [
        ({"numImages": 5}, "numImages=5"),
        ({"numQueries": 4}, "numQueries=4"),
        ({"utmDb": np.zeros((2, 5)) + [[PITT_E], [PITT_N]]}, "5 columns in utmDb"),
        ({"qImageFns": cell(["000/000000_pitch1_yaw1.jpg"] * 2)}, "2 names in qImageFns"),
    ],
)
def test_error_counts_disagree(tmp_path, change, word):
    fields = pitts_fields()
    mat = make_pitts(tmp_path, fields)
    write_mat(mat, fields | change)
    with pytest.raises(DatasetError) as exc:
        read_pittsburgh_mat(mat)
    assert_error(exc, "pitts30k_test.mat", "counts disagree", word)


@pytest.mark.parametrize("bad", [np.zeros((3, 6)) + PITT_E, np.zeros((6, 2)) + PITT_E, np.zeros((12,)) + PITT_E])
def test_error_utm_wrong_shape(tmp_path, bad):
    fields = pitts_fields()
    mat = make_pitts(tmp_path, fields)
    write_mat(mat, fields | {"utmDb": bad})
    with pytest.raises(DatasetError) as exc:
        read_pittsburgh_mat(mat)
    assert_error(exc, "pitts30k_test.mat", "utmDb", "shape")


@pytest.mark.parametrize(
    "field, col, value, word",
    [("utmDb", 2, np.nan, "NaN"), ("utmQ", 1, np.inf, "out of range"), ("utmDb", 0, 12.0, "out of range"),
     ("utmQ", 0, -5.0, "out of range")],
)
def test_error_bad_coordinates(tmp_path, field, col, value, word):
    fields = pitts_fields()
    mat = make_pitts(tmp_path, fields)
    arr = fields[field].copy()
    arr[1 if value == -5.0 else 0, col] = value
    write_mat(mat, fields | {field: arr})
    with pytest.raises(DatasetError) as exc:
        read_pittsburgh_mat(mat)
    assert_error(exc, "pitts30k_test.mat", field, word)


@pytest.mark.parametrize(
    "name, word",
    [("/etc/passwd", "absolute"), ("C:\\images\\a.jpg", "absolute"), ("../../secret.jpg", "escapes"),
     ("000/../../x.jpg", "escapes")],
)
def test_error_unsafe_image_names(tmp_path, name, word):
    fields = pitts_fields()
    mat = make_pitts(tmp_path, fields)
    names = fields["dbImageFns"].copy()
    names[2, 0] = name
    write_mat(mat, fields | {"dbImageFns": names})
    with pytest.raises(DatasetError) as exc:
        read_pittsburgh_mat(mat)
    assert_error(exc, "pitts30k_test.mat", word)


def test_error_listed_images_missing(tmp_path):
    fields = pitts_fields()
    mat = make_pitts(tmp_path, fields)
    (tmp_path / "000" / "000001_pitch1_yaw1.jpg").unlink()
    (tmp_path / "000" / "000002_pitch1_yaw2.jpg").unlink()
    with pytest.raises(DatasetError) as exc:
        read_pittsburgh_mat(mat)
    assert_error(exc, "pitts30k_test.mat", "2 of 6", "missing", "000/000001_pitch1_yaw1.jpg")
    assert len(read_pittsburgh_mat(mat, check_files=False)["test"].database) == 6  # no check: reads


def test_error_listed_query_image_missing(tmp_path):
    mat = make_pitts(tmp_path)
    (tmp_path / "queries_real" / "000" / "000002_pitch1_yaw1.jpg").unlink()
    with pytest.raises(DatasetError) as exc:
        read_pittsburgh_mat(mat)
    assert_error(exc, "pitts30k_test.mat", "1 of 3", "query", "missing", "000/000002_pitch1_yaw1.jpg")


def test_error_image_root_missing(tmp_path):
    mat = make_pitts(tmp_path)
    with pytest.raises(DatasetError) as exc:
        read_pittsburgh_mat(mat, image_root=tmp_path / "nowhere")
    assert_error(exc, "nowhere", "folder not found")


@pytest.mark.parametrize("role", ["database", "query"])
def test_error_empty_split(tmp_path, role):
    fields = pitts_fields()
    mat = make_pitts(tmp_path, fields)
    if role == "database":
        change = {"dbImageFns": np.empty((0, 1), dtype=object), "utmDb": np.zeros((2, 0)), "numImages": 0}
    else:
        change = {"qImageFns": np.empty((0, 1), dtype=object), "utmQ": np.zeros((2, 0)), "numQueries": 0}
    write_mat(mat, fields | change)
    with pytest.raises(DatasetError) as exc:
        read_pittsburgh_mat(mat)
    assert_error(exc, "pitts30k_test.mat", "empty", role)


def test_error_bad_which_set(tmp_path):
    fields = pitts_fields()
    mat = make_pitts(tmp_path, fields)
    write_mat(mat, fields | {"whichSet": "holdout"})
    with pytest.raises(DatasetError) as exc:
        read_pittsburgh_mat(mat)
    assert_error(exc, "pitts30k_test.mat", "whichSet", "holdout")


def test_error_non_string_file_name(tmp_path):
    fields = pitts_fields()
    mat = make_pitts(tmp_path, fields)
    names = fields["qImageFns"].copy()
    names[1, 0] = np.array([[3.0]])
    write_mat(mat, fields | {"qImageFns": names})
    with pytest.raises(DatasetError) as exc:
        read_pittsburgh_mat(mat)
    assert_error(exc, "pitts30k_test.mat", "qImageFns", "entry 2", "not a text string")


# ---------------------------------------------------------------- Tokyo 24/7

def test_tokyo_reads_zone_query_root_latlon(tmp_path):
    fields = tokyo_fields()
    ds = read_tokyo247_mat(make_tokyo(tmp_path, fields))
    assert ds.format == "tokyo247" and ds.name == "tokyo247" and list(ds.splits) == ["test"]
    split = ds["test"]
    assert len(split.database) == 4 and len(split.queries) == 3
    assert split.database.root == tmp_path
    assert split.queries.root == tmp_path / "247query_v3"
    assert split.database.paths[0] == "03814/381400000_eid_0.jpg"
    assert split.queries.paths == ["00001.jpg", "00002.jpg", "00003.jpg"]
    assert split.database.zone == (54, "S")
    for i in range(4):
        e, n = fields["utmDb"][:, i]
        assert split.database.latlon[i] == pytest.approx(utm.to_latlon(e, n, 54, "S"), abs=1e-9)
    assert 35.5 < split.queries.latlon[0, 0] < 35.8 and 139.5 < split.queries.latlon[0, 1] < 139.9
    assert split.queries.condition is None  # tokyo247.mat carries no time of day


def test_tokyo_timestamps_in_the_middle_are_harmless(tmp_path):
    fields = tokyo_fields(with_timestamps=True)
    assert list(fields).index("dbTimeStamp") == 3  # positional readers would take it for qImageFns
    split = read_tokyo247_mat(make_tokyo(tmp_path, fields))["test"]
    assert split.queries.paths[2] == "00003.jpg"
    np.testing.assert_array_equal(split.queries.utm, fields["utmQ"].T)
    assert split.queries.condition is None  # numeric time stamps are capture dates


def test_tokyo_condition_field(tmp_path):
    fields = tokyo_fields(qCondition=cell(["day", "Sunset", "N"]))
    split = read_tokyo247_mat(make_tokyo(tmp_path, fields))["test"]
    assert split.queries.condition == ["day", "sunset", "night"]
    summary = read_tokyo247_mat(tmp_path / "datasets" / "tokyo247.mat").summary()
    assert summary["splits"]["test"]["query_conditions"] == {"day": 1, "night": 1, "sunset": 1}


def test_tokyo_condition_from_text_timestamps(tmp_path):
    fields = tokyo_fields(qTimeStamp=cell(["night", "day", "sunset"]))
    split = read_tokyo247_mat(make_tokyo(tmp_path, fields))["test"]
    assert split.queries.condition == ["night", "day", "sunset"]


def test_tokyo_error_bad_condition(tmp_path):
    fields = tokyo_fields(qCondition=cell(["day", "noon", "night"]))
    with pytest.raises(DatasetError) as exc:
        read_tokyo247_mat(make_tokyo(tmp_path, fields))
    assert_error(exc, "tokyo247.mat", "qCondition", "noon")


def test_tokyo_error_condition_count(tmp_path):
    fields = tokyo_fields(qCondition=cell(["day", "night"]))
    with pytest.raises(DatasetError) as exc:
        read_tokyo247_mat(make_tokyo(tmp_path, fields))
    assert_error(exc, "tokyo247.mat", "counts disagree")


def test_tokyo_png_database_images(tmp_path):
    split = read_tokyo247_mat(make_tokyo(tmp_path, db_suffix=".png"))["test"]
    assert split.database.paths[1] == "03814/381400001_eid_1.png"
    assert split.database.image_path(1).is_file()


def test_tokyo_errors_missing_field_and_images(tmp_path):
    fields = tokyo_fields()
    mat = make_tokyo(tmp_path, fields)
    write_mat(mat, {k: v for k, v in fields.items() if k != "utmQ"})
    with pytest.raises(DatasetError) as exc:
        read_tokyo247_mat(mat)
    assert_error(exc, "tokyo247.mat", "utmQ")
    write_mat(mat, fields)
    (tmp_path / "247query_v3" / "00001.jpg").unlink()
    with pytest.raises(DatasetError) as exc:
        read_tokyo247_mat(mat)
    assert_error(exc, "tokyo247.mat", "missing", "00001.jpg")


# ---------------------------------------------------------------- load_dataset

def make_vpr(root: Path) -> None:
    for role, count in (("database", 3), ("queries", 2)):
        for i in range(count):
            lat, lon = 45.07 + 1e-4 * i, 7.68 + 1e-4 * i
            e, n, zn, zl = utm.from_latlon(lat, lon)
            name = format_vpr_name(VprName(east=e, north=n, zone=zn, band=zl, lat=lat, lon=lon))
            touch_jpeg(root / "images" / "test" / role / name)


def test_load_dataset_detects_each_format(tmp_path):
    make_vpr(tmp_path / "vpr")
    assert detect_format(tmp_path / "vpr") == "vpr_folder"
    assert load_dataset(tmp_path / "vpr").format == "vpr_folder"

    mat = make_pitts(tmp_path / "pitts")
    assert load_dataset(mat).format == "pittsburgh"
    ds = load_dataset(tmp_path / "pitts", splits=["test"])
    assert ds.format == "pittsburgh" and list(ds.splits) == ["test"]

    tmat = make_tokyo(tmp_path / "tokyo")
    assert detect_format(tmat) == "tokyo247"
    assert load_dataset(tmat).format == "tokyo247"
    assert load_dataset(tmp_path / "tokyo").format == "tokyo247"
    assert load_dataset(tmp_path / "tokyo", check_files=False)["test"].database.zone == (54, "S")


def test_load_dataset_forced_format(tmp_path):
    mat = make_pitts(tmp_path, name="tokyo247.mat")  # a Pittsburgh struct under a Tokyo name
    assert detect_format(mat) == "tokyo247"
    ds = load_dataset(mat, format="pittsburgh")
    assert ds.format == "pittsburgh" and ds["test"].database.zone == (17, "T")


def test_load_dataset_unknown(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError) as exc:
        load_dataset(tmp_path)
    assert_error(exc, str(tmp_path), "unknown")
    with pytest.raises(DatasetError) as exc:
        load_dataset(tmp_path / "notes.txt")
    assert_error(exc, "notes.txt", "unknown")
    with pytest.raises(DatasetError) as exc:
        load_dataset(tmp_path, format="kitti")
    assert_error(exc, str(tmp_path), "unknown", "kitti")
    with pytest.raises(DatasetError) as exc:
        load_dataset(tmp_path / "absent")
    assert_error(exc, "absent", "not found")
