"""The dataset model: path safety, consistency checks, positives, images."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sfrs_core.data import DatasetError, ImageSet, PlaceSplit, open_rgb
from sfrs_core.data.dataset import safe_relpath


@pytest.mark.parametrize("name, expected", [("a/b.jpg", "a/b.jpg"), ("./a//b.jpg", "a/b.jpg"), ("a/../b.jpg", "b.jpg"), ("a\\b.jpg", "a/b.jpg")])
def test_safe_relpath_accepts_names_inside_the_root(name, expected):
    assert safe_relpath(name, "x.mat") == expected


@pytest.mark.parametrize("name", ["../secret.jpg", "a/../../b.jpg", "/etc/passwd", "C:/x.jpg", "", "."])
def test_safe_relpath_refuses_names_leaving_the_root(name):
    with pytest.raises(DatasetError) as err:
        safe_relpath(name, "pitts30k_test.mat")
    assert "pitts30k_test.mat" in str(err.value)


def _set(tmp_path, pts, **kw) -> ImageSet:
    pts = np.asarray(pts, float)
    return ImageSet(tmp_path, [f"{i}.jpg" for i in range(len(pts))], pts, (17, "T"), np.tile([40.4, -80.0], (len(pts), 1)), **kw)


def test_counts_that_disagree_are_refused(tmp_path):
    with pytest.raises(DatasetError, match="counts disagree"):
        ImageSet(tmp_path, ["a.jpg", "b.jpg"], np.zeros((3, 2)) + 5e5, (17, "T"), np.zeros((2, 2)))
    with pytest.raises(DatasetError, match="headings"):
        _set(tmp_path, [[5e5, 4e6]], heading=np.zeros(2))


def test_positives_are_sorted_by_distance(tmp_path):
    db = _set(tmp_path, [[500_000 + x, 4_000_000] for x in (0.0, 9.0, 3.0, 30.0, -24.0)])
    q = _set(tmp_path, [[500_000, 4_000_000], [500_100, 4_000_000]])
    split = PlaceSplit("test", db, q)
    assert split.train_positives[0].tolist() == [0, 2, 1]
    assert split.eval_positives[0].tolist() == [0, 2, 1, 4]
    assert split.eval_positives[1].tolist() == []
    np.testing.assert_allclose(split.distances_m(0, [3, 4]), [30.0, 24.0])


def test_empty_sets_are_refused(tmp_path):
    one = _set(tmp_path, [[5e5, 4e6]])
    empty = _set(tmp_path, np.zeros((0, 2)))
    with pytest.raises(DatasetError, match="no database images"):
        PlaceSplit("val", empty, one)


def test_open_rgb_handles_modes_and_orientation(tmp_path):
    Image.new("CMYK", (4, 3), (0, 255, 0, 0)).save(tmp_path / "cmyk.jpg")
    Image.new("RGBA", (4, 3), (255, 0, 0, 0)).save(tmp_path / "alpha.png")
    Image.new("I;16", (4, 3), 65535).save(tmp_path / "deep.png")
    for name in ("cmyk.jpg", "alpha.png", "deep.png"):
        assert open_rgb(tmp_path / name).mode == "RGB"
    assert open_rgb(tmp_path / "alpha.png").getpixel((0, 0)) == (255, 255, 255)  # transparent -> white
    assert open_rgb(tmp_path / "deep.png").getpixel((0, 0)) == (255, 255, 255)
    img = Image.new("RGB", (4, 3))
    exif = img.getexif()
    exif[0x0112] = 6  # rotated 90 degrees
    img.save(tmp_path / "rot.jpg", exif=exif)
    assert open_rgb(tmp_path / "rot.jpg").size == (3, 4)


@pytest.mark.parametrize("content, words", [(b"", "empty"), (b"not an image at all", "not an image"), (None, "not found")])
def test_open_rgb_bad_files(tmp_path, content, words):
    path = tmp_path / "bad.jpg"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DatasetError) as err:
        open_rgb(path)
    assert words in str(err.value) and "bad.jpg" in str(err.value)


def test_open_rgb_truncated_jpeg(tmp_path):
    Image.effect_noise((64, 64), 50).convert("RGB").save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="truncated"):
        open_rgb(tmp_path / "cut.jpg")


def test_image_transform_and_torch_dataset(tmp_path):
    import torch

    from sfrs_core.data.torch_data import ImageSetDataset
    from sfrs_core.data.transforms import ImageTransform

    arr = np.zeros((6, 8, 3), np.uint8)
    arr[..., 0] = 255  # pure red
    Image.fromarray(arr).save(tmp_path / "0.png")
    Image.fromarray(arr).save(tmp_path / "1.png")
    images = ImageSet(tmp_path, ["0.png", "1.png"], [[5e5, 4e6], [5e5, 4e6]], (17, "T"), [[40.4, -80.0]] * 2)
    tf = ImageTransform((3, 4), lambda x: x * 2 - 1)
    ds = ImageSetDataset(images, tf, indices=[1])
    x, i = ds[0]
    assert len(ds) == 1 and i == 1 and x.shape == (3, 3, 4)
    assert torch.allclose(x[0], torch.ones(3, 4)) and torch.allclose(x[1:], -torch.ones(2, 3, 4))
    assert ImageTransform(None)(tmp_path / "0.png").shape == (3, 6, 8)
