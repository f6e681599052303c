"""EXIF-GPS photo folder reader, geo.py round trips, and load_dataset on a photo folder."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import piexif
import pytest
import utm
from PIL import Image

from sfrs_core.data.errors import DatasetError
from sfrs_core.data.exif_folder import read_exif_folder, read_gps
from sfrs_core.data.geo import latlon_to_utm, utm_to_latlon
from sfrs_core.data.loaders import detect_format, load_dataset

TURIN = (45.070312, 7.686856)


def dms(value: float) -> tuple:
    """Degrees as EXIF (deg, min, sec) rationals; seconds to 1e-6 arc-second."""
    value = abs(value)
    deg = int(value)
    minutes = (value - deg) * 60
    mins = int(minutes)
    return ((deg, 1), (mins, 1), (int(round((minutes - mins) * 60 * 1_000_000)), 1_000_000))


def gps_ifd(lat: float, lon: float, heading: float | None = None) -> dict:
    ifd = {
        piexif.GPSIFD.GPSLatitudeRef: b"N" if lat >= 0 else b"S",
        piexif.GPSIFD.GPSLatitude: dms(lat),
        piexif.GPSIFD.GPSLongitudeRef: b"E" if lon >= 0 else b"W",
        piexif.GPSIFD.GPSLongitude: dms(lon),
    }
    if heading is not None:
        ifd[piexif.GPSIFD.GPSImgDirectionRef] = b"T"
        ifd[piexif.GPSIFD.GPSImgDirection] = (int(round(heading * 100)), 100)
    return ifd


def write_photo(path: Path, gps: dict | None) -> Path:
    """A small JPEG, with the given GPS IFD (None: EXIF without GPS)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = {"0th": {piexif.ImageIFD.Make: b"TestCam"}, "Exif": {}, "GPS": gps or {}, "1st": {}, "thumbnail": None}
    Image.new("RGB", (32, 24), (90, 140, 200)).save(path, "JPEG", exif=piexif.dump(exif))
    return path


def make_folder(root: Path, center=TURIN, n_db: int = 5, n_q: int = 2, headings: bool = True) -> dict[str, tuple]:
    """root/db photos + root/queries photos around ``center``; returns {relative path: (lat, lon, heading)}."""
    truth = {}
    for i in range(n_db):
        lat, lon, head = center[0] + 1.3e-4 * i, center[1] - 0.9e-4 * i, 30.0 * i
        rel = f"street{i % 2}/IMG_{i:04d}.jpg"
        write_photo(root / rel, gps_ifd(lat, lon, head if headings else None))
        truth[rel] = (lat, lon, head)
    for i in range(n_q):
        lat, lon, head = center[0] + 1.1e-4 * i + 2e-5, center[1] - 1e-4 * i, 200.0 + i
        rel = f"queries/Q_{i:03d}.jpg"
        write_photo(root / rel, gps_ifd(lat, lon, head if headings else None))
        truth[rel] = (lat, lon, head)
    return truth


def assert_error(excinfo: pytest.ExceptionInfo, filename: str, *words: str) -> None:
    message = str(excinfo.value)
    assert filename in message, message
    for word in words:
        assert word.lower() in message.lower(), message


# ---------------------------------------------------------------- reading

@pytest.mark.parametrize("center", [TURIN, (-34.603722, -58.381592), (40.712776, -74.005974), (-33.868820, 151.209290)])
def test_exif_folder_positions(tmp_path, center):
    truth = make_folder(tmp_path, center)
    ds = read_exif_folder(tmp_path)
    assert ds.format == "exif" and list(ds.splits) == ["test"]
    split = ds["test"]
    assert split.database.root == tmp_path and split.queries.root == tmp_path / "queries"
    assert split.database.paths == sorted(k for k in truth if not k.startswith("queries/"))
    assert split.queries.paths == ["Q_000.jpg", "Q_001.jpg"]
    zone = None
    for image_set, prefix in ((split.database, ""), (split.queries, "queries/")):
        for i, rel in enumerate(image_set.paths):
            lat, lon, head = truth[prefix + rel]
            assert abs(image_set.latlon[i, 0] - lat) < 1e-6 and abs(image_set.latlon[i, 1] - lon) < 1e-6
            e, n, zn, zl = utm.from_latlon(image_set.latlon[i, 0], image_set.latlon[i, 1])
            np.testing.assert_allclose(image_set.utm[i], (e, n), rtol=0, atol=1e-6)
            assert image_set.zone == (zn, zl)
            zone = zone or image_set.zone
            assert image_set.heading[i] == pytest.approx(head % 360, abs=1e-6)
    assert split.database.zone == split.queries.zone == zone
    assert all(len(p) > 0 for p in split.eval_positives)


def test_exif_explicit_query_folder_and_split(tmp_path):
    make_folder(tmp_path / "mine", headings=False)
    queries = tmp_path / "mine" / "queries"
    moved = queries.rename(tmp_path / "elsewhere")
    ds = read_exif_folder(tmp_path / "mine", query_folder=moved, split="val")
    split = ds["val"]
    assert split.queries.root == moved and len(split.queries) == 2 and len(split.database) == 5
    assert split.database.heading is None  # no GPSImgDirection anywhere


def test_exif_query_folder_inside_database_is_excluded(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "queries").rename(tmp_path / "street0" / "q")
    split = read_exif_folder(tmp_path, query_folder=tmp_path / "street0" / "q")["test"]
    assert len(split.database) == 5 and not any(p.startswith("street0/q/") for p in split.database.paths)


def test_exif_hidden_and_non_image_files_ignored(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "._IMG_0000.jpg").write_bytes(b"AppleDouble junk")
    (tmp_path / "notes.txt").write_text("not a photo")
    assert len(read_exif_folder(tmp_path)["test"].database) == 5


def test_exif_skip_missing_gps(tmp_path, caplog):
    make_folder(tmp_path)
    write_photo(tmp_path / "street0" / "no_gps.jpg", None)
    with caplog.at_level(logging.WARNING):
        split = read_exif_folder(tmp_path, skip_missing_gps=True)["test"]
    assert len(split.database) == 5 and "street0/no_gps.jpg" not in split.database.paths
    assert "no_gps.jpg" in caplog.text and "skipped 1" in caplog.text


def test_read_gps_zero_zero_is_no_fix(tmp_path):
    assert read_gps(write_photo(tmp_path / "a.jpg", gps_ifd(0.0, 0.0))) is None
    assert read_gps(write_photo(tmp_path / "b.jpg", None)) is None


# ---------------------------------------------------------------- bad input

def test_error_folder_missing(tmp_path):
    with pytest.raises(DatasetError) as exc:
        read_exif_folder(tmp_path / "nope")
    assert_error(exc, "nope", "not found")


def test_error_folder_without_photos(tmp_path):
    (tmp_path / "queries").mkdir()
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(DatasetError) as exc:
        read_exif_folder(tmp_path)
    assert_error(exc, str(tmp_path), "no database photos")


def test_error_no_queries(tmp_path):
    write_photo(tmp_path / "a.jpg", gps_ifd(*TURIN))
    with pytest.raises(DatasetError) as exc:
        read_exif_folder(tmp_path)
    assert_error(exc, str(tmp_path), "no query photos", "query_folder")
    with pytest.raises(DatasetError) as exc:
        read_exif_folder(tmp_path, query_folder=tmp_path)
    assert_error(exc, str(tmp_path), "query folder is the database folder")
    with pytest.raises(DatasetError) as exc:
        read_exif_folder(tmp_path, query_folder=tmp_path / "missing_q")
    assert_error(exc, "missing_q", "not found")


def test_error_photo_without_gps(tmp_path):
    make_folder(tmp_path)
    write_photo(tmp_path / "street1" / "IMG_9999.jpg", None)
    with pytest.raises(DatasetError) as exc:
        read_exif_folder(tmp_path)
    assert_error(exc, "IMG_9999.jpg", "no EXIF GPS", "skip_missing_gps")


def test_error_all_photos_without_gps_even_when_skipping(tmp_path):
    write_photo(tmp_path / "a.jpg", None)
    write_photo(tmp_path / "queries" / "q.jpg", gps_ifd(*TURIN))
    with pytest.raises(DatasetError) as exc:
        read_exif_folder(tmp_path, skip_missing_gps=True)
    assert_error(exc, str(tmp_path), "no database photo has an EXIF GPS")


@pytest.mark.parametrize(
    "change, words",
    [
        ({piexif.GPSIFD.GPSLatitude: ((95, 1), (0, 1), (0, 1))}, ("latitude", "out of range")),
        ({piexif.GPSIFD.GPSLongitude: ((181, 1), (0, 1), (0, 1))}, ("longitude", "out of range")),
        ({piexif.GPSIFD.GPSLatitude: ((45, 1), (1, 0), (0, 1))}, ("latitude", "NaN")),
        ({piexif.GPSIFD.GPSLongitude: ((7, 1), (75, 1), (0, 1))}, ("longitude", "minutes")),
        ({piexif.GPSIFD.GPSLatitudeRef: b"X"}, ("latitude reference",)),
        ({piexif.GPSIFD.GPSLatitude: ((85, 1), (0, 1), (0, 1))}, ("out of range", "UTM")),
        ({piexif.GPSIFD.GPSLatitude: ((82, 1), (0, 1), (0, 1)), piexif.GPSIFD.GPSLatitudeRef: b"S"},
         ("out of range", "UTM")),
    ],
)
def test_error_bad_gps_values(tmp_path, change, words):
    make_folder(tmp_path)
    write_photo(tmp_path / "street0" / "BAD.jpg", gps_ifd(*TURIN) | change)
    with pytest.raises(DatasetError) as exc:
        read_exif_folder(tmp_path, skip_missing_gps=True)  # bad GPS is an error even when skipping missing GPS
    assert_error(exc, "BAD.jpg", *words)


def test_error_photo_far_from_the_others(tmp_path):
    make_folder(tmp_path)
    write_photo(tmp_path / "queries" / "holiday.jpg", gps_ifd(-33.868820, 151.209290))
    with pytest.raises(DatasetError) as exc:
        read_exif_folder(tmp_path)
    assert_error(exc, "holiday.jpg", "out of range", "UTM zone 32T")


@pytest.mark.parametrize("kind", ["garbage", "truncated", "empty"])
def test_error_unreadable_image(tmp_path, kind):
    make_folder(tmp_path)
    bad = tmp_path / "queries" / "broken.jpg"
    if kind == "garbage":
        bad.write_bytes(b"definitely not a JPEG" * 20)
    elif kind == "empty":
        bad.write_bytes(b"")
    else:
        big = tmp_path / "big.jpg.tmp"
        rng = np.random.default_rng(0)
        exif = piexif.dump({"GPS": gps_ifd(*TURIN)})
        Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(big, "JPEG", exif=exif)
        data = big.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
        big.unlink()
    with pytest.raises(DatasetError) as exc:
        read_exif_folder(tmp_path)
    assert_error(exc, "broken.jpg", "unreadable")


# ---------------------------------------------------------------- load_dataset

def test_load_dataset_detects_exif_folder(tmp_path):
    make_folder(tmp_path)
    assert detect_format(tmp_path) == "exif"
    ds = load_dataset(tmp_path)
    assert ds.format == "exif" and len(ds["test"].queries) == 2
    assert load_dataset(tmp_path, format="exif", split="train").splits.keys() == {"train"}


# ---------------------------------------------------------------- geo.py round trips

CITIES = {
    "pittsburgh": (40.44, -80.00), "tokyo": (35.69, 139.69), "turin": (45.07, 7.69),
    "sydney": (-33.87, 151.21), "buenos_aires": (-34.60, -58.38), "nairobi": (-1.29, 36.82),
    "reykjavik": (64.15, -21.94), "quito": (-0.18, -78.47), "cape_town": (-33.92, 18.42),
    "anchorage": (61.22, -149.90), "oslo": (59.91, 10.75), "singapore": (1.35, 103.82),
}


@pytest.mark.parametrize("city", sorted(CITIES))
def test_geo_round_trip_within_1cm(city):
    lat0, lon0 = CITIES[city]
    dlat, dlon = np.meshgrid(np.linspace(-0.05, 0.05, 7), np.linspace(-0.05, 0.05, 7))
    lat, lon = (lat0 + dlat).ravel(), (lon0 + dlon).ravel()
    east, north, zone = latlon_to_utm(lat, lon)
    e_ref, n_ref, zn, zl = utm.from_latlon(lat0, lon0)
    assert zone == (zn, zl)
    lat2, lon2 = utm_to_latlon(east, north, zone)
    metres_per_deg = 111_320.0
    err_north = np.abs(lat2 - lat) * metres_per_deg
    err_east = np.abs(lon2 - lon) * metres_per_deg * np.cos(np.radians(lat))
    assert err_north.max() < 0.01 and err_east.max() < 0.01
    east2, north2, _ = latlon_to_utm(lat2, lon2, zone)  # and back to metres again
    assert np.hypot(east2 - east, north2 - north).max() < 0.01
    # UTM -> lat/lon -> UTM starting from a metre grid
    ge, gn = np.meshgrid(e_ref + np.arange(-3000, 3001, 1000.0), n_ref + np.arange(-3000, 3001, 1000.0))
    la, lo = utm_to_latlon(ge.ravel(), gn.ravel(), zone)
    ge2, gn2, _ = latlon_to_utm(la, lo, zone)
    assert np.hypot(ge2 - ge.ravel(), gn2 - gn.ravel()).max() < 0.01
