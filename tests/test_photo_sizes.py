"""Photos at any size (issue 12): a photo is described at its database's image size, large JPEGs
are decoded reduced, far aspect ratios and tiny photos are localized with a warning, the CLI
`query` ignores an impossible EXIF GPS block as the Upload page does, and any bytes given to
`read_photo` give a photo or a :class:`PhotoError`, never another exception (hypothesis)."""
from __future__ import annotations

import io
import json
import math

import numpy as np
import piexif
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, JpegImagePlugin

from sfrs_core.cli import main
from sfrs_core.data import load_dataset
from sfrs_core.data.photo import PhotoError, cover_size, open_photo, read_photo
from sfrs_core.prepare import index_folder, prepared_index
from sfrs_core.retrieval.bundle import IndexBundle, database_image_size
from sfrs_core.retrieval.localize import describe_photo, localize, size_warnings
from sfrs_core.runs import open_run
from tests.apptest import run_page


def _encode(img: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _bad_gps_exif() -> bytes:
    """An EXIF block whose GPS latitude is 95 degrees: impossible."""
    gps = piexif.GPSIFD
    return piexif.dump({"GPS": {gps.GPSLatitudeRef: b"N", gps.GPSLatitude: ((95, 1), (0, 1), (0, 1)),
                                gps.GPSLongitudeRef: b"W", gps.GPSLongitude: ((79, 1), (54, 1), (0, 1))}})


@pytest.fixture(scope="module")
def tiny(tiny_runs):
    """The tiny SFRS run's last generation, its model, its prepared test index and the test split."""
    run = open_run(tiny_runs / "tiny-sfrs")
    g = run.last_generation
    return run, g, run.model(g), prepared_index(run, g, "test"), load_dataset(run.data)["test"]


@pytest.fixture
def model_inputs(tiny):
    """The (H, W) of every batch the tiny model is given while the test runs."""
    shapes = []
    handle = tiny[2].register_forward_pre_hook(lambda _m, args: shapes.append(tuple(args[0].shape[-2:])))
    yield shapes
    handle.remove()


def _query(split, q: int) -> Image.Image:
    return Image.open(split.queries.image_path(q)).convert("RGB")


# --------------------------------------------------------------------------- the bundle's image size
def test_the_bundle_records_its_image_size_and_derives_it_for_old_bundles(tiny, tmp_path):
    *_, bundle, split = tiny
    with Image.open(split.database.image_path(0)) as img:
        native = (img.height, img.width)
    assert bundle.meta["image_size"] == list(native) and bundle.image_size == native
    # a bundle saved before the size was recorded (image_size null): read from one image's header
    old = IndexBundle(bundle.index, bundle.paths, bundle.utm, bundle.latlon, bundle.zone,
                      {**bundle.meta, "image_size": None})
    old.save(tmp_path / "old")
    meta = json.loads((tmp_path / "old" / "bundle.json").read_text())["meta"]
    assert meta["image_size"] is None
    assert IndexBundle.load(tmp_path / "old").image_size == native


def test_database_image_size_reads_one_header_upright(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: 60 wide, 40 high on disk; 40 wide, 60 high upright
    (tmp_path / "side.jpg").write_bytes(_encode(Image.new("RGB", (60, 40)), exif=exif.tobytes()))
    (tmp_path / "plain.png").write_bytes(_encode(Image.new("RGB", (32, 24)), "PNG"))
    assert database_image_size([str(tmp_path / "side.jpg")]) == (60, 40)
    assert database_image_size([str(tmp_path / "gone.jpg"), str(tmp_path / "plain.png")]) == (24, 32)
    assert database_image_size([str(tmp_path / "gone.jpg")]) is None


# --------------------------------------------------------------------------- large photos
def test_a_12_megapixel_jpeg_is_decoded_reduced_and_described_at_the_bundle_size(tiny, model_inputs, monkeypatch,
                                                                                 tmp_path):
    *_, net, bundle, split = tiny
    H, W = bundle.image_size
    data = _encode(_query(split, 0).resize((4000, 3000), Image.BICUBIC), quality=90)
    decoded = []  # the size each JPEG is decoded at
    real_load = JpegImagePlugin.JpegImageFile.load

    def load(self):
        decoded.append(self.size)
        return real_load(self)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", load)
    photo = read_photo(data, "big.jpg", size=(H, W))
    assert photo.original_size == (4000, 3000)
    assert decoded and all(w * h <= 4000 * 3000 / 16 for w, h in decoded)  # 1/4 scale (2x the need): never 12 MP
    assert photo.rgb.shape == (H, W, 3)  # 4:3 like the database: scaled down to its size exactly

    loc = localize(net, bundle, photo, k=3)
    assert model_inputs == [(H, W)] and loc.warnings == ()
    # a file path is decoded reduced too (the `query` command's way in)
    (tmp_path / "big.jpg").write_bytes(data)
    decoded.clear()
    by_path = localize(net, bundle, tmp_path / "big.jpg", k=3)
    assert decoded and max(w * h for w, h in decoded) <= 4000 * 3000 / 64
    assert model_inputs[-1] == (H, W)
    assert by_path.descriptor == pytest.approx(loc.descriptor, abs=1e-5)


def test_cover_size_keeps_the_aspect_and_bounds_the_pixels():
    assert cover_size(4000, 3000, (240, 320)) == (320, 240)
    assert cover_size(3000, 4000, (240, 320)) == (320, 427)  # portrait: covers 240×320, aspect kept
    assert cover_size(100, 80, (240, 320)) == (100, 80)  # never enlarged
    w, h = cover_size(80_000, 1000, (240, 320))  # a panorama: bounded by the target's area
    assert w * h <= 4 * 240 * 320 * 1.01


def test_a_large_png_ends_up_at_the_bundle_size(tiny):
    *_, bundle, split = tiny
    H, W = bundle.image_size
    photo = read_photo(_encode(_query(split, 1).resize((W * 12, H * 12)), "PNG"), "big.png", size=(H, W))
    assert photo.rgb.shape == (H, W, 3) and photo.original_size == (W * 12, H * 12)


def test_a_jpeg_bomb_is_refused_before_any_reduced_decode():
    """A JPEG whose header claims 20000×20000 pixels: refused from the header, even when a reduced
    (1/8) decode would have been small."""
    data = bytearray(_encode(Image.new("RGB", (64, 48), (90, 120, 30))))
    sof = data.index(b"\xff\xc0")  # baseline frame header: length(2) precision(1) height(2) width(2)
    data[sof + 5:sof + 9] = (20000).to_bytes(2, "big") + (20000).to_bytes(2, "big")
    for size in (None, (240, 320)):
        with pytest.raises(PhotoError, match="80,000,000-pixel limit"):
            read_photo(bytes(data), "bomb.jpg", size=size)


def test_upscaled_queries_are_localized_as_the_originals(tiny):
    """Each tiny test query and the same scene 4× upscaled (a JPEG of 16× the pixels): close
    descriptors and mostly the same top-1. The tiny model is trained for seconds and its top-1
    and top-2 often differ by a similarity of 0.001–0.01, so JPEG compression alone flips about 1
    query in 12; the demo models' ≥ 90 % is measured by ``bench/app.py``. Described at the photo's
    own size instead, as before issue 12, the descriptors are much further apart."""
    *_, net, bundle, split = tiny
    H, W = bundle.image_size
    n = len(split.queries)
    same, sims, unsized = 0, [], []
    for q in range(n):
        small = localize(net, bundle, split.queries.image_path(q), k=1)
        img = _query(split, q)
        data = _encode(img.resize((img.width * 4, img.height * 4), Image.BICUBIC), quality=92)
        large = localize(net, bundle, read_photo(data, "q.jpg", size=(H, W)), k=1)
        same += small.matches[0].db_index == large.matches[0].db_index
        sims.append(float(np.dot(small.descriptor, large.descriptor)))
        if q < 4:
            unsized.append(float(np.dot(small.descriptor, describe_photo(net, read_photo(data, "q.jpg").rgb, None))))
    assert same >= math.ceil(0.8 * n), f"top-1 agreement {same}/{n}"
    assert min(sims) > 0.9 and np.mean(sims) > 0.97, sims
    assert np.mean(unsized) < np.mean(sims[:4]) - 0.05, (unsized, sims[:4])


# --------------------------------------------------------------------------- warnings
def test_size_warnings_for_far_aspect_ratios_and_tiny_photos():
    assert size_warnings((320, 240), (240, 320)) == ()
    assert size_warnings((4000, 3000), (240, 320)) == ()
    assert size_warnings((3000, 2000), (240, 320)) == ()  # 3:2 next to 4:3: within the tolerance
    (wide,) = size_warnings((1920, 1080), (240, 320))  # 16:9: stretched by a third
    assert "landscape, aspect ratio 1.78" in wide and "(320×240, aspect ratio 1.33)" in wide
    (portrait,) = size_warnings((3000, 4000), (240, 320))
    assert "portrait" in portrait and "stretched to 320×240" in portrait
    (tiny,) = size_warnings((80, 60), (240, 320))
    assert "tiny (80×60 pixels)" in tiny and "enlarged 4.0×" in tiny
    assert len(size_warnings((30, 60), (240, 320))) == 2
    assert size_warnings((30, 60), None) == ()


def test_a_portrait_or_tiny_photo_is_localized_with_a_warning(tiny, model_inputs):
    *_, net, bundle, split = tiny
    H, W = bundle.image_size
    img = _query(split, 2)
    portrait = read_photo(_encode(img.resize((H * 3, W * 3))), "portrait.jpg", size=(H, W))
    loc = localize(net, bundle, portrait, k=3)
    assert len(loc.matches) == 3 and len(loc.warnings) == 1 and "portrait" in loc.warnings[0]
    small = localize(net, bundle, np.asarray(img.resize((W // 4, H // 4))), k=3)
    assert len(small.matches) == 3 and len(small.warnings) == 1 and "tiny" in small.warnings[0]
    assert model_inputs == [(H, W), (H, W)]


def test_cli_query_warns_about_a_tiny_photo(tiny, tmp_path, capsys):
    run, g, _, _, split = tiny
    (tmp_path / "small.png").write_bytes(_encode(_query(split, 3).resize((30, 20)), "PNG"))
    assert main(["query", str(tmp_path / "small.png"), "--index", str(index_folder(run, g, "test")), "--k", "2"]) == 0
    out, err = capsys.readouterr()
    assert len(out.strip().splitlines()) == 2
    assert "warning: " in err and "tiny (30×20 pixels)" in err


def test_upload_page_warns_about_a_portrait_photo(app_env):
    split = load_dataset(open_run(app_env / "tiny-sfrs").data)["test"]
    img = _query(split, 5)
    data = _encode(img.resize((img.height * 4, img.width * 4)), quality=90)  # portrait, 16× the pixels
    at = run_page("viz_app/app_pages/upload.py")
    at.file_uploader(key="upload_file").set_value(("portrait.jpg", data, "image/jpeg"))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error and len(at.metric) == 2
    assert len(at.warning) == 1 and at.warning[0].value.startswith("portrait.jpg was localized, but its shape")


# --------------------------------------------------------------------------- CLI and a bad GPS block
def test_cli_query_localizes_a_photo_with_an_impossible_gps_block(tiny, tmp_path, capsys):
    run, g, _, _, split = tiny
    path = tmp_path / "bad-gps.jpg"
    path.write_bytes(_encode(_query(split, 4), quality=95, exif=_bad_gps_exif()))
    assert main(["query", str(path), "--index", str(index_folder(run, g, "test")), "--k", "3"]) == 0
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert len(lines) == 3 and not any("m from the photo's GPS" in line for line in lines)
    assert f"note: {path}: its EXIF GPS position was ignored: bad GPS latitude" in err
    # the page says the same of the same file
    assert any(n.startswith("its EXIF GPS position was ignored: bad GPS latitude")
               for n in open_photo(path).notes)


def test_cli_query_refuses_an_unreadable_photo_in_one_line(tiny, tmp_path, capsys):
    run, g, *_ = tiny
    (tmp_path / "cut.jpg").write_bytes(_encode(Image.new("RGB", (64, 48), (1, 2, 3)))[:200])
    assert main(["query", str(tmp_path / "cut.jpg"), "--index", str(index_folder(run, g, "test"))]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {tmp_path / 'cut.jpg'}: ") and "truncated" in err and "\n" not in err


# --------------------------------------------------------------------------- fuzzing read_photo
def _seeds() -> list[bytes]:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    return [_encode(rgb, quality=80), _encode(rgb, quality=80, progressive=True), _encode(rgb, "PNG"),
            _encode(rgb.convert("CMYK"), quality=80), _encode(rgb.convert("RGBA"), "PNG"),
            _encode(rgb.convert("P"), "PNG"), _encode(rgb, quality=80, exif=exif.tobytes()),
            _encode(rgb, quality=80, exif=_bad_gps_exif()), _encode(rgb, "GIF"), _encode(rgb, "BMP"),
            _encode(rgb, "WEBP"), _encode(rgb, "TIFF")]


SEEDS = _seeds()
SIZES = st.sampled_from([None, (24, 32), (240, 320), (7, 3)])


def _check(data: bytes, size) -> None:
    try:
        photo = read_photo(data, "fuzz.jpg", size=size)
    except PhotoError as err:
        assert str(err).startswith("fuzz.jpg: ") and "\n" not in str(err)
        return
    assert photo.rgb.dtype == np.uint8 and photo.rgb.ndim == 3 and photo.rgb.shape[2] == 3
    assert photo.rgb.shape[0] >= 1 and photo.rgb.shape[1] >= 1
    assert all(isinstance(n, str) for n in photo.notes)
    assert photo.gps is None or all(math.isfinite(v) for v in photo.gps)


# derandomized: the same examples on every run (CI is never flaky); no example database in the tree
FUZZ = settings(max_examples=300, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])
QUIET = pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's warnings about broken TIFF/PNG tags


@QUIET
@FUZZ
@given(data=st.binary(max_size=2048), size=SIZES)
def test_fuzz_read_photo_any_bytes(data, size):
    _check(data, size)


@QUIET
@FUZZ
@given(seed=st.sampled_from(range(len(SEEDS))), edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
                                                              max_size=8),
       cut=st.one_of(st.none(), st.integers(0, 10**6)), size=SIZES)
def test_fuzz_read_photo_mutated_images(seed, edits, cut, size):
    """Valid JPEG/PNG/GIF/BMP/WebP/TIFF files with bytes changed and/or cut off."""
    data = bytearray(SEEDS[seed])
    for pos, value in edits:
        data[pos % len(data)] = value
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    _check(bytes(data), size)
