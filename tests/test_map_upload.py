"""The Map and Upload pages, their offline folium maps, reading uploaded photos, and localization."""
from __future__ import annotations

import io
import math
import re
import struct
import zlib

import numpy as np
import piexif
import pytest
import utm
from PIL import Image

from sfrs_core.cli import main
from sfrs_core.data import load_dataset
from sfrs_core.data.photo import HEIF_SUPPORTED, PhotoError, read_photo
from sfrs_core.figures import format_distance
from sfrs_core.prepare import index_folder, prepared_index
from sfrs_core.retrieval.localize import describe_photo, localize
from sfrs_core.runs import open_run
from tests.apptest import map_html, run_page
from viz_app.map import LEAFLET_CSS, LEAFLET_JS, Pin, PinSet, retrieval_map

ONLINE = re.compile(r"https?://|//cdn|unpkg")  # any absolute URL: a CDN, tiles, fonts
BADGE = re.compile(r'class=\\"sfrs-pin\\"[^\n]*?\\u003e([^\\]+)\\u003c/div')


# --------------------------------------------------------------------------- photo files
def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _halves(width: int = 60, height: int = 40) -> Image.Image:
    """Left half red, right half blue (a picture whose orientation is easy to check)."""
    arr = np.zeros((height, width, 3), np.uint8)
    arr[:, : width // 2] = (220, 20, 20)
    arr[:, width // 2 :] = (20, 20, 220)
    return Image.fromarray(arr)


def _png_header(width: int, height: int) -> bytes:
    """A tiny PNG file whose header claims ``width`` x ``height`` pixels (a decompression bomb)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _dms(value: float) -> tuple[tuple[int, int], ...]:
    value = abs(value)
    d = int(value)
    m = int((value - d) * 60)
    return (d, 1), (m, 1), (round((value - d - m / 60) * 3600 * 10_000), 10_000)


def _from_dms(dms) -> float:
    return sum(num / den / 60**i for i, (num, den) in enumerate(dms))


def _gps_exif(lat: float, lon: float) -> tuple[bytes, tuple[float, float]]:
    """EXIF bytes with a GPS position, and the position exactly as written (DMS rationals)."""
    gps = {piexif.GPSIFD.GPSLatitudeRef: b"N" if lat >= 0 else b"S", piexif.GPSIFD.GPSLatitude: _dms(lat),
           piexif.GPSIFD.GPSLongitudeRef: b"E" if lon >= 0 else b"W", piexif.GPSIFD.GPSLongitude: _dms(lon)}
    written = (math.copysign(_from_dms(_dms(lat)), lat), math.copysign(_from_dms(_dms(lon)), lon))
    return piexif.dump({"GPS": gps}), written


def _jpeg() -> bytes:
    return _encode(_halves(), "JPEG", quality=95)


BAD_FILES = {
    "empty": (b"", "the file is empty (0 bytes)"),
    "random bytes": (np.random.default_rng(0).bytes(2000), "not an image file"),
    "truncated JPEG": (_jpeg()[:400], "truncated"),
    "huge header": (_png_header(50_000, 50_000), "image is too large: over the 80,000,000-pixel limit"),
    "over the pixel limit": (_png_header(8_000, 10_001), "image is 8000x10001, over the 80,000,000-pixel limit"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_read_photo_rejects_bad_files_with_a_clear_message(case):
    data, message = BAD_FILES[case]
    with pytest.raises(PhotoError) as err:
        read_photo(data, f"uploads/{case}.png")
    assert str(err.value).startswith(f"{case}.png: ")  # the file's name, never a temporary path
    assert message in str(err.value)


def test_read_photo_converts_cmyk_16bit_and_alpha_with_notes():
    cmyk = read_photo(_encode(_halves().convert("CMYK"), "JPEG"), "cmyk.jpg")
    assert cmyk.rgb.dtype == np.uint8 and cmyk.rgb.shape == (40, 60, 3)
    assert cmyk.notes == ("CMYK colours were converted to RGB",)
    assert cmyk.rgb[20, 5, 0] > 150 and cmyk.rgb[20, 55, 2] > 150  # still red | blue

    deep = Image.fromarray(np.tile(np.arange(0, 60_000, 1000, dtype=np.uint16), (40, 1)))
    assert deep.mode == "I;16"
    wide = read_photo(_encode(deep, "PNG"), "deep.png")
    assert wide.rgb.shape == (40, 60, 3) and wide.notes == ("16-bit values were scaled to 8 bits",)
    assert wide.rgb[0, 0, 0] == 0 and wide.rgb[0, -1, 0] == 255

    rgba = np.zeros((40, 60, 4), np.uint8)
    rgba[:, :30] = (0, 0, 0, 255)  # opaque black | transparent
    clear = read_photo(_encode(Image.fromarray(rgba, "RGBA"), "PNG"), "alpha.png")
    assert clear.notes == ("transparent areas were filled with white",)
    assert clear.rgb[0, 0].tolist() == [0, 0, 0] and clear.rgb[0, -1].tolist() == [255, 255, 255]


def test_read_photo_turns_a_sideways_photo_upright():
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: turn 90 degrees clockwise to view
    photo = read_photo(_encode(_halves(), "JPEG", quality=95, exif=exif.tobytes()), "side.jpg")
    assert photo.rgb.shape == (60, 40, 3) and photo.size == (40, 60)
    assert photo.notes == ("turned upright following its EXIF orientation (tag value 6)",)
    top, bottom = photo.rgb[:25].mean(axis=(0, 1)), photo.rgb[35:].mean(axis=(0, 1))
    assert top[0] > 150 > top[2] and bottom[2] > 150 > bottom[0]  # the left (red) half is now on top


def test_read_photo_reads_exif_gps_and_ignores_a_bad_one():
    exif, (lat, lon) = _gps_exif(40.441234, -79.995678)
    photo = read_photo(_encode(_halves(), "JPEG", exif=exif), "gps.jpg")
    assert photo.gps == pytest.approx((lat, lon), abs=1e-9) and photo.notes == ()
    assert read_photo(_jpeg(), "plain.jpg").gps is None

    bad = piexif.dump({"GPS": {piexif.GPSIFD.GPSLatitudeRef: b"N", piexif.GPSIFD.GPSLatitude: ((95, 1), (0, 1), (0, 1)),
                               piexif.GPSIFD.GPSLongitudeRef: b"W", piexif.GPSIFD.GPSLongitude: _dms(79.9)}})
    photo = read_photo(_encode(_halves(), "JPEG", exif=bad), "bad-gps.jpg")
    assert photo.gps is None and photo.rgb.shape == (40, 60, 3)
    assert len(photo.notes) == 1 and photo.notes[0].startswith("its EXIF GPS position was ignored: bad GPS latitude")


@pytest.mark.skipif(not HEIF_SUPPORTED, reason="pillow-heif is not installed")
def test_read_photo_opens_heic():
    photo = read_photo(_encode(_halves(), "HEIF"), "iphone.heic")
    assert photo.rgb.shape == (40, 60, 3) and photo.rgb[20, 5, 0] > 150


# --------------------------------------------------------------------------- localization
@pytest.fixture(scope="module")
def tiny(tiny_runs):
    """The tiny SFRS run's last generation, its prepared test index and the test split."""
    run = open_run(tiny_runs / "tiny-sfrs")
    g = run.last_generation
    return run, g, prepared_index(run, g, "test"), load_dataset(run.data)["test"]


def _query_upload(split, q: int) -> tuple[bytes, tuple[float, float]]:
    """Query ``q`` as a JPEG with its true position in EXIF GPS, and that position as written."""
    exif, written = _gps_exif(*split.queries.latlon[q])
    return _encode(Image.open(split.queries.image_path(q)), "JPEG", quality=95, exif=exif), written


def test_localize_matches_the_evaluated_results(tiny):
    run, g, bundle, split = tiny
    res = run.results("test", g)
    q = 3
    loc = localize(run.model(g), bundle, split.queries.image_path(q), k=5, gps=tuple(split.queries.latlon[q]))
    assert [m.db_index for m in loc.matches] == res.ids[q, :5].tolist()
    assert loc.errors_m == pytest.approx(res.distances_m[q, :5].tolist(), abs=0.05)
    rgb = np.asarray(Image.open(split.queries.image_path(q)).convert("RGB"))
    assert describe_photo(run.model(g), rgb, None) == pytest.approx(loc.descriptor, abs=1e-5)
    from viz_app.map import pins_from_localization

    cones = pins_from_localization(loc, database_heading=split.database.heading)  # each match's view cone
    assert [p.heading for p in cones] == [float(split.database.heading[i]) for i in res.ids[q, :5]]
    assert all(p.heading is None for p in pins_from_localization(loc))


def test_cli_query_prints_the_error_from_the_photos_gps(tiny, tmp_path, capsys):
    run, g, _, split = tiny
    data, _ = _query_upload(split, 2)
    (tmp_path / "q.jpg").write_bytes(data)
    assert main(["query", str(tmp_path / "q.jpg"), "--index", str(index_folder(run, g, "test")), "--k", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all("m from the photo's GPS" in line for line in lines)


# --------------------------------------------------------------------------- map builder
def test_retrieval_map_is_offline_and_pins_share_spots():
    thumb = np.full((30, 40, 3), 128, np.uint8)
    pins = [Pin(1, (40.0, -80.0), thumb, 0.9, 3.0, True, 5), Pin(2, (40.0, -80.0), thumb, 0.8, 3.0, True, 6),
            Pin(3, (40.001, -80.0), thumb, 0.7, 111.0, False, 7)]
    m = retrieval_map(np.array([[40.0, -80.0], [40.001, -80.001]]), [PinSet("A", pins, "#0072B2")],
                      query_latlon=(40.0, -80.00003), query_image=thumb)
    page = m.get_root().render()
    assert LEAFLET_JS in page and LEAFLET_CSS in page and not ONLINE.search(page)
    assert "$(" not in page  # no jQuery (folium.Popup would need it)
    assert BADGE.findall(page) == ["Q", "1,2", "3"]
    assert page.count("data:image/jpeg;base64,") == 4  # the query's and each pin's thumbnail
    assert re.search(r'L\.circle\(\s*\[40\.0, -80\.00003\],\s*\{[^}]*"radius": 25\.0', page)


# --------------------------------------------------------------------------- pages
def _spots(latlon: np.ndarray, ids: np.ndarray) -> int:
    return len({tuple(np.round(latlon[i], 6)) for i in ids})


def test_map_page_shows_both_models_pins_offline(app_env):
    at = run_page("viz_app/app_pages/map.py")
    q = at.selectbox(key="map_query").value
    k = at.slider(key="map_k").value
    assert (q, k) == (0, 5)
    page = map_html(at)
    assert f'src="{LEAFLET_JS}"' in page and f'href="{LEAFLET_CSS}"' in page
    assert not ONLINE.search(page)

    at.selectbox(key="map_query").set_value(4)
    at.slider(key="map_k").set_value(3)
    at.run()
    assert not at.exception
    script = map_html(at)
    split = load_dataset(open_run(app_env / "tiny-sfrs").data)["test"]
    badges = BADGE.findall(script)
    expected = 1  # the query
    for name, g in (("tiny-sare", 0), ("tiny-sfrs", 1)):
        ids = open_run(app_env / name).results("test", g).ids[4, :3]
        expected += _spots(split.database.latlon, ids)
    assert len(badges) == expected and badges[0] == "Q"
    ranks = sorted(int(r) for b in badges[1:] for r in b.split(","))
    assert ranks == [1, 1, 2, 2, 3, 3]
    lat, lon = split.queries.latlon[4]
    assert re.search(rf'L\.circle\(\s*\[{lat}, {lon}\],\s*\{{[^}}]*"radius": 25\.0', script)


def test_upload_page_without_a_photo_shows_the_uploader(app_env):
    at = run_page("viz_app/app_pages/upload.py")
    uploader = at.file_uploader(key="upload_file")
    assert {"jpg", "png"} <= {t.lstrip(".") for t in uploader.allowed_type}
    assert "Upload a street-level photo" in at.info[0].value


@pytest.mark.parametrize("case", ["empty", "random bytes", "truncated JPEG", "huge header"])
def test_upload_page_explains_a_bad_file(app_env, case):
    data, message = BAD_FILES[case]
    at = run_page("viz_app/app_pages/upload.py")
    at.file_uploader(key="upload_file").set_value((f"{case}.png", data, "image/png"))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.error) == 1 and message in at.error[0].value and f"{case}.png" in at.error[0].value
    assert not at.metric


def _convertible(case: str) -> bytes:
    if case == "cmyk":
        return _encode(_halves().convert("CMYK"), "JPEG")
    if case == "16-bit":
        return _encode(Image.fromarray(np.tile(np.arange(0, 60_000, 1000, dtype=np.uint16), (40, 1))), "PNG")
    if case == "alpha":
        return _encode(_halves().convert("RGBA"), "PNG")
    exif = Image.Exif()
    exif[0x0112] = 6
    return _encode(_halves(), "JPEG", quality=95, exif=exif.tobytes())


@pytest.mark.parametrize("case, note", [
    ("cmyk", "CMYK colours were converted to RGB"),
    ("16-bit", "16-bit values were scaled to 8 bits"),
    ("alpha", "transparent areas were filled with white"),
    ("rotated", "turned upright following its EXIF orientation (tag value 6)"),
])
def test_upload_page_converts_an_unusual_photo_and_says_so(app_env, case, note):
    at = run_page("viz_app/app_pages/upload.py")
    at.file_uploader(key="upload_file").set_value((f"{case}.png", _convertible(case), "image/png"))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error
    assert at.info[0].value == f"{case}.png: {note}."  # (a note on the missing GPS may follow)
    assert len(at.metric) == 2  # localized by both models all the same


def test_upload_page_localizes_a_photo_and_measures_the_error(app_env):
    run = open_run(app_env / "tiny-sfrs")
    split = load_dataset(run.data)["test"]
    q = 6
    data, (lat, lon) = _query_upload(split, q)
    at = run_page("viz_app/app_pages/upload.py")
    at.file_uploader(key="upload_file").set_value((f"query{q}.jpg", data, "image/jpeg"))
    at.slider(key="upload_k").set_value(4)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error
    # each model's top-1 by hand: its descriptor of the decoded upload, the nearest database descriptor
    rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    for metric, (name, g) in zip(at.metric, (("tiny-sare", 0), ("tiny-sfrs", 1))):
        r = open_run(app_env / name)
        top1 = int(prepared_index(r, g, "test").search(describe_photo(r.model(g), rgb, None)[None], 1)[0][0].db_index)
        east, north, *_ = utm.from_latlon(lat, lon, *split.database.zone)
        error = math.hypot(split.database.utm[top1, 0] - east, split.database.utm[top1, 1] - north)
        assert metric.label.endswith("top-1 error") and name in metric.label
        assert metric.value == format_distance(error)
    assert any(c.value.startswith("Query time:") for c in at.caption)
    badges = BADGE.findall(map_html(at))
    assert badges[0] == "Q" and sorted(int(r) for b in badges[1:] for r in b.split(",")) == [1, 1, 2, 2, 3, 3, 4, 4]
    assert len(at.image) == 2  # the top-K grid and the Grad-CAM figure
    assert sum("PNG" in b.label for b in at.get("download_button")) == 2
