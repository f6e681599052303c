"""Tokyo 24/7 as OpenIBL evaluates it: query resize, folder groups, spatial NMS, end to end."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from sfrs_core.data.dataset import ImageSet
from sfrs_core.data.errors import DatasetError
from sfrs_core.data.loaders import load_dataset
from sfrs_core.data.tokyo import folder_groups, read_tokyo247_mat
from sfrs_core.data.transforms import ImageTransform, shorter_edge_shape
from sfrs_core.retrieval.evaluate import default_protocol, evaluate, rank
from sfrs_core.retrieval.metrics import nms_groups, place_labels, recall_from_hits, spatial_nms
from sfrs_core.retrieval.results import QueryResults

TOKYO_E, TOKYO_N = 381620.0, 3950290.0  # Shinjuku, zone 54S
SIZE = (24, 32)  # evaluation (H, W): queries get a shorter edge of 32


# ---------------------------------------------------------------- fixtures


def _cell(names: list[str]) -> np.ndarray:
    out = np.empty((len(names), 1), dtype=object)
    for i, name in enumerate(names):
        out[i, 0] = name
    return out


def _write_tokyo_mat(path: Path, db: list[str], utm_db: np.ndarray, q: list[str], utm_q: np.ndarray) -> Path:
    fields = {"whichSet": "test", "dbImageFns": _cell(db), "utmDb": utm_db.T, "qImageFns": _cell(q),
              "utmQ": utm_q.T, "numImages": len(db), "numQueries": len(q), "posDistThr": 25}
    struct = np.empty((1, 1), dtype=[(name, object) for name in fields])
    for name, value in fields.items():
        struct[0, 0][name] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"dbStruct": struct})
    return path


def _solid(path: Path, wh: tuple[int, int], rgb: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", wh, rgb).save(path)  # PNG: lossless, so the mean colour survives exactly


# Six database folders (places) of two views each; folders 00002 and 00003 share one position
# (two folders, one position), as can happen in Tokyo 24/7.
FOLDER_XY = [(0, 0), (100, 0), (100, 0), (200, 0), (300, 0), (400, 0)]
FOLDER_RGB = [(200, 40, 40), (40, 200, 40), (40, 180, 120), (40, 40, 200), (200, 200, 40), (120, 120, 120)]
# queries: (PIL size W x H, colour, position); sizes 400x300 (H 300, W 400), 360x480 (H 480, W 360), 40x30
QUERIES = [((400, 300), (190, 60, 50), (5, 0)), ((360, 480), (40, 190, 90), (103, 0)),
           ((40, 30), (60, 140, 160), (200, 4))]
EXPECTED_QUERY_SHAPES = [(32, 42), (42, 32), (32, 42)]  # shorter edge 32 = max(24, 32); 42 = int(32 * 4 / 3)


def _db_rgb(f: int, v: int) -> tuple[int, int, int]:
    r, g, b = FOLDER_RGB[f]
    return r + 6 * v, g + 3 * v, b


@pytest.fixture(scope="module")
def tokyo_root(tmp_path_factory) -> Path:
    """ROOT/datasets/tokyo247.mat, database ROOT/<folder>/<name>.png (40x30), queries in 247query_v3/."""
    root = tmp_path_factory.mktemp("tokyo")
    db, utm_db = [], []
    for f, (x, y) in enumerate(FOLDER_XY):
        for v in range(2):
            name = f"{f + 1:05d}/{f + 1:05d}{v:02d}_view{v}.png"
            _solid(root / name, (40, 30), _db_rgb(f, v))
            db.append(name)
            utm_db.append((TOKYO_E + x, TOKYO_N + y))
    q = []
    for i, (wh, rgb, _) in enumerate(QUERIES):
        _solid(root / "247query_v3" / f"{i + 1:05d}.png", wh, rgb)
        q.append(f"{i + 1:05d}.png")
    utm_q = np.array([(TOKYO_E + x, TOKYO_N + y) for _, _, (x, y) in QUERIES])
    _write_tokyo_mat(root / "datasets" / "tokyo247.mat", db, np.array(utm_db), q, utm_q)
    return root


class ColourNet(nn.Module):
    """Descriptor: the image's mean colour, centred and L2-normalised; records every input's shape."""

    def __init__(self) -> None:
        super().__init__()
        self.shift = nn.Parameter(torch.tensor(0.4), requires_grad=False)
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        return F.normalize(x.mean(dim=(2, 3)) - self.shift, dim=1)


def _colour_desc(rgb) -> np.ndarray:
    d = np.asarray(rgb, dtype=np.float64) / 255.0 - 0.4
    return d / np.linalg.norm(d)


# ---------------------------------------------------------------- query resize


def test_shorter_edge_shape_by_hand():
    assert shorter_edge_shape(300, 400, 640) == (640, 853)  # int(640 * 400 / 300) = int(853.33)
    assert shorter_edge_shape(480, 360, 640) == (853, 640)
    assert shorter_edge_shape(480, 640, 640) == (640, 853)
    assert shorter_edge_shape(500, 500, 640) == (640, 640)
    with pytest.raises(ValueError):
        ImageTransform(None, resize="shorter_edge")
    with pytest.raises(ValueError):
        ImageTransform((480, 640), resize="longer_edge")


def test_shorter_edge_transform_equals_torchvision_resize():
    """OpenIBL's Tokyo query transform is torchvision's ``Resize(max(H, W))`` on a PIL image."""
    from sfrs_core._torchvision import torchvision

    rng = np.random.default_rng(0)
    for h, w in [(300, 400), (480, 360), (45, 61)]:
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        ref = torchvision.transforms.functional.to_tensor(torchvision.transforms.Resize(max(SIZE))(img))
        ours = ImageTransform(SIZE, resize="shorter_edge")(img)
        assert ours.shape == ref.shape
        torch.testing.assert_close(ours, ref, rtol=0, atol=0)
        # the database transform is Resize((H, W))
        ref_db = torchvision.transforms.functional.to_tensor(torchvision.transforms.Resize(SIZE)(img))
        torch.testing.assert_close(ImageTransform(SIZE)(img), ref_db, rtol=0, atol=0)


def test_evaluate_resizes_queries_one_at_a_time(tokyo_root):
    split = load_dataset(tokyo_root)["test"]
    model = ColourNet()
    evaluate(model, split, image_size=SIZE, protocol="tokyo247", device="cpu", progress=False)
    db_shapes, q_shapes = model.shapes[:1], model.shapes[1:]
    assert db_shapes == [(12, 3, 24, 32)]  # the database at (H, W), batched
    assert q_shapes == [(1, 3, *hw) for hw in EXPECTED_QUERY_SHAPES]  # batch 1, aspect kept
    for (h, w), (wh, _, _) in zip(EXPECTED_QUERY_SHAPES, QUERIES):
        assert min(h, w) == max(SIZE)
        assert abs(w / h - wh[0] / wh[1]) < 0.03  # aspect kept up to the rounding of the longer side


# ---------------------------------------------------------------- spatial NMS


def test_spatial_nms_hand_built():
    # ten database images in five groups: {0,1,2} {3,4,5} {6,7} {8} {9}
    groups = np.array([0, 0, 0, 1, 1, 1, 2, 2, 3, 4])
    ranked = np.array([[1, 0, 4, 2, 7, 3, 9, 6, 8, 5],
                       [5, 4, 3, 8, 0, 6, 1, 2, 7, 9]])
    # whole lists: first view of each group, in rank order
    assert spatial_nms(ranked, groups, 5).tolist() == [[1, 4, 7, 9, 8], [5, 8, 0, 6, 9]]
    assert spatial_nms(ranked, groups, 3).tolist() == [[1, 4, 7], [5, 8, 0]]
    # OpenIBL's window: only the top 4 are looked at -> fewer places, padded with -1
    assert spatial_nms(ranked, groups, 3, window=4).tolist() == [[1, 4, -1], [5, 8, -1]]
    assert spatial_nms(ranked, groups, 3, window=5).tolist() == [[1, 4, 7], [5, 8, 0]]
    # recall@N on the NMS list. Query 0's right answers: group 2 (ids 6, 7); query 1's: id 9 only.
    right = [{6, 7}, {9}]
    for window, expected in [(None, {1: 0.0, 3: 0.5, 5: 1.0}), (4, {1: 0.0, 3: 0.0})]:
        k = 5 if window is None else 3
        ids = spatial_nms(ranked, groups, k, window=window)
        hits = np.array([[i in r for i in row] for row, r in zip(ids.tolist(), right)])
        assert recall_from_hits(hits, list(expected)) == expected
    # without NMS, query 0 finds group 2 at rank 5 and query 1 finds id 9 at rank 10
    plain_hits = np.array([[i in r for i in row] for row, r in zip(ranked.tolist(), right)])
    assert recall_from_hits(plain_hits, [1, 5, 10]) == {1: 0.0, 5: 0.5, 10: 1.0}


def test_rank_window_equals_nms_of_full_ranking():
    rng = np.random.default_rng(3)
    db = rng.normal(size=(40, 16)).astype(np.float32)
    q = rng.normal(size=(5, 16)).astype(np.float32)
    groups = np.repeat(np.arange(10), 4)
    _, full = rank(db, q, 40)
    for window in (None, 6, 12):
        sims, ids = rank(db, q, 3, dedupe=True, groups=groups, window=window)
        np.testing.assert_array_equal(ids, spatial_nms(full, groups, 3, window=window))
        assert np.all(np.isneginf(sims[ids < 0]))


# ---------------------------------------------------------------- groups from the .mat


def test_tokyo_reader_groups_database_by_folder(tmp_path):
    db = ["03814/0381433427_a.png", "03814/0381433427_b.png", "03815/x.png", "03816/y.png", "top.png"]
    utm = np.array([(TOKYO_E, TOKYO_N)] * 2 + [(TOKYO_E + 50, TOKYO_N)] * 2 + [(TOKYO_E + 90, TOKYO_N)])
    mat = _write_tokyo_mat(tmp_path / "tokyo247.mat", db, utm, ["q.png"], utm[:1])
    split = read_tokyo247_mat(mat, check_files=False)["test"]
    assert split.database.groups.tolist() == [0, 0, 1, 2, 3]  # folders 03814, 03815, 03816 and the root
    np.testing.assert_array_equal(nms_groups(split.database), split.database.groups)
    assert split.queries.groups is None
    # grouping by position would merge 03815 and 03816 (one position, two folders)
    assert place_labels(split.database.utm).tolist() == [0, 0, 1, 1, 2]
    assert folder_groups(["b/1.jpg", "a/2.jpg", "b/3.jpg"]).tolist() == [0, 1, 0]


def test_image_set_groups_checked():
    kw = dict(root=Path("."), paths=["a.jpg", "b.jpg"], utm=[[TOKYO_E, TOKYO_N]] * 2, zone=(54, "S"),
              latlon=[[35.69, 139.70]] * 2)
    with pytest.raises(DatasetError, match="place groups"):
        ImageSet(**kw, groups=np.array([0, 1, 2]))
    with pytest.raises(DatasetError, match="non-negative integers"):
        ImageSet(**kw, groups=np.array([0.5, 1.0]))
    no_groups = ImageSet(**kw)
    assert no_groups.groups is None and nms_groups(no_groups).tolist() == [0, 0]  # by position


# ---------------------------------------------------------------- end to end


def _reference(split, window: int | None, k: int):
    """Brute force from the known colours: sort, OpenIBL-style NMS over folders, recall on that list."""
    db_desc = np.stack([_colour_desc(_db_rgb(f, v)) for f in range(len(FOLDER_XY)) for v in range(2)])
    q_desc = np.stack([_colour_desc(rgb) for _, rgb, _ in QUERIES])
    order = np.argsort(-(q_desc @ db_desc.T), axis=1, kind="stable")
    folder = [p.split("/")[0] for p in split.database.paths]
    ids = []
    for row in order.tolist():
        seen, kept = set(), []
        for i in row[:window]:
            if folder[i] not in seen:
                seen.add(folder[i])
                kept.append(i)
        ids.append((kept + [-1] * k)[:k])
    ids = np.array(ids)
    dist = np.linalg.norm(split.database.utm[np.maximum(ids, 0)] - split.queries.utm[:, None], axis=-1)
    return ids, (ids >= 0) & (dist <= 25.0)


def test_evaluate_tokyo247_protocol_end_to_end(tokyo_root):
    ds = load_dataset(tokyo_root)
    split = ds["test"]
    assert default_protocol(ds) == "tokyo247"
    r = evaluate(ColourNet(), split, image_size=SIZE, protocol="tokyo247", device="cpu", progress=False)
    # six folders -> k capped at 6, recall@1 and @5, NMS window OpenIBL's 120 (the whole database here)
    assert r.k == 6 and sorted(r.recall) == [1, 5]
    assert r.meta["protocol"] == "tokyo247" and r.meta["nms_window"] == 120 and r.meta["nms_groups"] == "dataset"
    assert r.meta["query_resize"] == "shorter_edge" and r.meta["dedupe"] is True
    ref_ids, ref_correct = _reference(split, 120, 6)
    np.testing.assert_array_equal(r.ids, ref_ids)
    np.testing.assert_array_equal(r.correct, ref_correct)
    groups = split.database.groups
    for row in r.ids:
        assert len(set(groups[row].tolist())) == 6  # one view per folder
    # query 1 (green, at the shared position): its top two are one view of each of the two folders
    # there, which grouping by position would have merged into one place
    assert sorted(groups[r.ids[1, :2]].tolist()) == [1, 2]
    # by hand: q0 red at folder 00001 -> right at 1; q1 right at 1; q2 (teal, at folder 00004) ranks
    # folder 00003 (teal) first -> wrong at 1, then 00004 (blue) -> right within 5
    assert r.correct[:, 0].tolist() == [True, True, False]
    assert groups[r.ids[2, :2]].tolist() == [2, 3]
    assert r.recall == {1: pytest.approx(2 / 3), 5: 1.0}
    # a narrower window (explicit override) leaves short lists, padded with -1 that count as wrong
    narrow = evaluate(ColourNet(), split, image_size=SIZE, protocol="tokyo247", nms_window=3, device="cpu",
                      progress=False)
    ref_ids, ref_correct = _reference(split, 3, 6)
    np.testing.assert_array_equal(narrow.ids, ref_ids)
    assert (narrow.ids == -1).any()
    assert narrow.recall == {1: pytest.approx(recall_from_hits(ref_correct, [1])[1]),
                             5: pytest.approx(recall_from_hits(ref_correct, [5])[5])}


def test_evaluate_tokyo247_protocol_needs_an_image_size(tokyo_root):
    split = load_dataset(tokyo_root)["test"]
    with pytest.raises(ValueError, match="image_size"):
        evaluate(ColourNet(), split, protocol="tokyo247", device="cpu", progress=False)
    with pytest.raises(ValueError, match="protocol"):
        evaluate(ColourNet(), split, image_size=SIZE, protocol="openibl", device="cpu", progress=False)


def test_cli_evaluate_defaults_to_the_tokyo_protocol(tokyo_root, tmp_path, monkeypatch, capsys):
    import sfrs_core.training.checkpoint as checkpoint
    from sfrs_core.cli import main

    monkeypatch.setattr(checkpoint, "load_model", lambda path, device="cpu": (ColourNet(), {}))
    out = tmp_path / "res.npz"
    args = ["evaluate", "--checkpoint", "model.pt", "--data", str(tokyo_root), "--image-size", "24", "32",
            "--device", "cpu", "--quiet", "--save", str(out)]
    assert main(args) == 0
    assert "protocol tokyo247" in capsys.readouterr().out
    res = QueryResults.load(out)
    assert res.meta["protocol"] == "tokyo247" and res.meta["nms_window"] == 120
    assert res.recall == {1: pytest.approx(2 / 3), 5: 1.0}
    assert main([*args, "--protocol", "plain"]) == 0  # plain: no NMS, all 12 database images ranked
    plain = QueryResults.load(out)
    assert plain.meta["protocol"] == "plain" and plain.k == 12 and plain.meta["nms_window"] is None
    assert main(["evaluate", "--checkpoint", "m.pt", "--data", str(tokyo_root), "--image-size", "native",
                 "--quiet"]) == 2
    assert "--image-size H W" in capsys.readouterr().err
