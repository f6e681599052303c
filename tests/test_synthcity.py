"""SynthCity: determinism, geometry of the splits, positives, labels and atomic writing."""
from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import importlib

from sfrs_core.data import load_dataset
from sfrs_core.data.synthcity import CLASSES, DistrictSpec, generate, plan_views, preset, read_meta
from sfrs_core.data.synthcity.city import build_city
from sfrs_core.data.synthcity.render import render_view
from sfrs_core.data.vpr_folder import read_vpr_folder

# The module, not the function of the same name re-exported by the package.
generate_mod = importlib.import_module("sfrs_core.data.synthcity.generate")


def _digest_tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_same_seed_gives_identical_bytes_whatever_the_worker_count(tiny_city, tmp_path):
    again = generate(preset("tiny"), tmp_path / "again", workers=1, progress=False)
    first, second = _digest_tree(tiny_city), _digest_tree(again)
    assert len(first) > 300
    assert first == second


def test_different_seed_gives_a_different_city():
    a, b = build_city(preset("tiny", seed=0)), build_city(preset("tiny", seed=1))
    assert a["train"].shop_names != b["train"].shop_names
    assert not np.array_equal(a["train"].wall_height, b["train"].wall_height)
    cfg0, cfg1 = preset("tiny", seed=0), preset("tiny", seed=1)
    job0, job1 = plan_views(cfg0, a)[5], plan_views(cfg1, b)[5]
    pose0, pose1 = job0.pose, job1.pose
    assert (pose0.x, pose0.y, pose0.heading) == (pose1.x, pose1.y, pose1.heading)  # same camera, other city
    img0, _ = render_view(a["train"], job0.pose, cfg0)
    img1, _ = render_view(b["train"], job1.pose, cfg1)
    assert np.abs(img0.astype(int) - img1.astype(int)).mean() > 5


def test_every_query_has_a_positive_within_25m(tiny_city):
    ds = read_vpr_folder(tiny_city)
    for split in ds.splits.values():
        assert all(len(p) >= 1 for p in split.eval_positives), split.name


def test_every_query_of_the_demo_plan_has_a_positive_within_25m():
    # The demo preset's poses, checked without rendering: brute force over all pairs.
    jobs = plan_views(preset("demo"))
    for split in ("train", "val", "test"):
        db = np.array([(j.pose.x, j.pose.y) for j in jobs if j.split == split and j.role == "database"])
        q = np.array([(j.pose.x, j.pose.y) for j in jobs if j.split == split and j.role == "queries"])
        d = np.linalg.norm(q[:, None] - db[None], axis=2)
        assert (d.min(axis=1) <= 25.0).all()


def test_positives_equal_brute_force(tiny_city):
    ds = read_vpr_folder(tiny_city)
    for split in ds.splits.values():
        d = np.linalg.norm(split.queries.utm[:, None, :] - split.database.utm[None, :, :], axis=2)
        for radius in (10.0, 25.0):
            for qi, pos in enumerate(split.positives(radius)):
                expected = np.flatnonzero(d[qi] <= radius)
                expected = expected[np.lexsort((expected, d[qi, expected]))]
                np.testing.assert_array_equal(pos, expected)


def test_splits_are_geographically_disjoint(tiny_city):
    ds = read_vpr_folder(tiny_city)
    cfg = preset("tiny")
    names = list(ds.splits)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            pa = np.vstack([ds[a].database.utm, ds[a].queries.utm])
            pb = np.vstack([ds[b].database.utm, ds[b].queries.utm])
            gap = np.linalg.norm(pa[:, None] - pb[None], axis=2).min()
            assert gap > cfg.render_distance_m, (a, b, gap)


def test_database_views_and_query_conditions(tiny_city):
    ds = read_vpr_folder(tiny_city)
    train = ds["train"]
    assert len(np.unique(np.round(train.database.heading))) >= 8
    # Several headings at each database place: GPS-close views of different scenes.
    places = np.unique(np.round(train.database.utm, 2), axis=0)
    assert len(train.database) == len(places) * preset("tiny").db_headings
    tags = {c.split("+")[0] for s in ds.splits.values() for c in s.queries.condition}
    assert tags == {"day", "dusk", "night"}
    # Queries are not at database positions.
    d = np.linalg.norm(train.queries.utm[:, None] - train.database.utm[None], axis=2)
    assert (d.min(axis=1) > 0.01).mean() > 0.9


def test_latlon_is_near_the_anchor_and_consistent_with_utm(tiny_city):
    import utm

    ds = read_vpr_folder(tiny_city)
    cfg = preset("tiny")
    s = ds["train"].database
    assert abs(s.latlon[:, 0].mean() - cfg.anchor_lat) < 0.02
    assert abs(s.latlon[:, 1].mean() - cfg.anchor_lon) < 0.02
    e, n, _, _ = utm.from_latlon(s.latlon[:, 0], s.latlon[:, 1], force_zone_number=s.zone[0])
    assert np.abs(e - s.utm[:, 0]).max() < 0.02 and np.abs(n - s.utm[:, 1]).max() < 0.02


def test_label_maps_match_images_and_hold_the_classes(tiny_city):
    ds = read_vpr_folder(tiny_city)
    split = ds["train"]
    seen = set()
    for i in range(0, len(split.database), 7):
        img = Image.open(split.database.image_path(i))
        lab = Image.open(split.database.label_path(i))
        assert lab.mode == "P" and lab.size == img.size == (preset("tiny").width, preset("tiny").height)
        arr = np.asarray(lab)
        assert arr.max() < len(CLASSES)
        seen |= set(np.unique(arr).tolist())
    for name in ("sky", "road", "sidewalk", "facade", "window", "sign", "tree", "vehicle"):
        assert CLASSES.index(name) in seen, name
    meta = read_meta(tiny_city)
    assert meta["classes"] == list(CLASSES)
    assert meta["counts"]["train"]["database"] == len(split.database)


def test_load_dataset_detects_synthcity(tiny_city):
    ds = load_dataset(tiny_city)
    assert ds.format == "vpr_folder" and set(ds.splits) == {"train", "val", "test"}


def test_existing_output_is_not_overwritten_silently(tiny_city):
    with pytest.raises(FileExistsError):
        generate(preset("tiny"), tiny_city, progress=False)


def test_a_crash_leaves_nothing_half_written(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = generate_mod.render_view

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 10:
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(generate_mod, "render_view", flaky)
    small = replace(preset("tiny"), train=DistrictSpec(1, 1, 4), val=DistrictSpec(1, 1, 2), test=DistrictSpec(1, 1, 2))
    with pytest.raises(RuntimeError, match="simulated crash"):
        generate(small, tmp_path / "city", workers=1, progress=False)
    assert list(tmp_path.iterdir()) == []
