"""The VPR folder format: names, reading, and every bad input's clear error."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import utm
from PIL import Image

from sfrs_core.data import DatasetError
from sfrs_core.data.vpr_folder import VprName, format_vpr_name, parse_vpr_name, read_vpr_folder


def _name(lat: float, lon: float, heading: float = math.nan, note: str = "") -> str:
    e, n, zone, band = utm.from_latlon(lat, lon)
    return format_vpr_name(VprName(e, n, zone, band, lat, lon, heading=heading, note=note))


def _write(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.new("RGB", (8, 6), (120, 130, 140)).save(folder / name)


def _dataset(root: Path, db: list[str], q: list[str], split: str = "test") -> Path:
    _write(root / "images" / split / "database", db)
    _write(root / "images" / split / "queries", q)
    return root


def test_name_round_trip():
    meta = VprName(584_000.25, 4_477_000.5, 17, "T", 40.44, -79.99, "p1", "3", 90.0, 0.0, 0.0, 2.5, "2020", "night")
    assert parse_vpr_name(format_vpr_name(meta)) == meta


def test_parses_the_benchmark_example():
    m = parse_vpr_name("@0543256.96@4178906.70@10@S@037.75643@-122.50892@@@@@@@@@.jpg")
    assert (m.east, m.north, m.zone, m.band) == (543256.96, 4178906.70, 10, "S")
    assert (m.lat, m.lon) == (37.75643, -122.50892)
    assert math.isnan(m.heading) and m.note == ""


def test_reads_a_folder_dataset(tmp_path):
    db = [_name(45.0 + i * 1e-4, 7.6, heading=30.0 * i) for i in range(5)]
    q = [_name(45.00005, 7.6, note="night")]
    ds = read_vpr_folder(_dataset(tmp_path, db, q))
    split = ds["test"]
    assert len(split.database) == 5 and len(split.queries) == 1
    assert split.queries.condition == ["night"]
    assert sorted(split.database.heading.tolist()) == [0.0, 30.0, 60.0, 90.0, 120.0]
    # 1e-4 deg of latitude is ~11.1 m: the query (5.6 m from #0 and #1) has exactly those within 10 m.
    assert sorted(split.train_positives[0].tolist()) == [0, 1]


def test_latlon_filled_from_utm_when_missing(tmp_path):
    e, n, zone, band = utm.from_latlon(45.0, 7.6)
    name = format_vpr_name(VprName(e, n, zone, band))
    split = read_vpr_folder(_dataset(tmp_path, [name], [name]))["test"]
    assert np.allclose(split.database.latlon, [[45.0, 7.6]], atol=1e-7)


@pytest.mark.parametrize(
    "bad, words",
    [
        ("photo.jpg", "not in the VPR format"),
        ("@abc@4983000.00@32@T@@@.jpg", "not a number"),
        ("@nan@4983000.00@32@T@@@.jpg", "NaN or out of range"),
        ("@0547000.00@4983000.00@99@T@@@.jpg", "zone 99"),
        ("@0547000.00@4983000.00@32@Z@@@.jpg", "band"),
        ("@0547000.00@4983000.00@32@T@137.0@7.0@.jpg", "out of range"),
        ("@0547000.00@4983000.00@32@T@45.0@nan@.jpg", "NaN or out of range"),
    ],
)
def test_bad_names_raise_a_clear_error(tmp_path, bad, words):
    good = _name(45.0, 7.6)
    root = _dataset(tmp_path, [good, bad], [good])
    with pytest.raises(DatasetError) as err:
        read_vpr_folder(root)
    assert words in str(err.value)
    assert bad in str(err.value)  # names the file at fault


def test_empty_split_and_missing_folders(tmp_path):
    good = _name(45.0, 7.6)
    root = _dataset(tmp_path / "a", [good], [])
    with pytest.raises(DatasetError, match="no query images"):
        read_vpr_folder(root)
    with pytest.raises(DatasetError, match="no 'images' folder"):
        read_vpr_folder(tmp_path / "nowhere")
    root = _dataset(tmp_path / "b", [good], [good], split="val")
    with pytest.raises(DatasetError, match="split folder not found"):
        read_vpr_folder(root, splits=("train",))
