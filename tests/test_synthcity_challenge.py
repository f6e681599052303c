"""SynthCity's challenge knobs: each changes what it names, nothing else, and deterministically."""
from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest

from sfrs_core.data.synthcity import PRESETS, plan_views, preset
from sfrs_core.data.synthcity.city import SIGN_HEIGHT_M, build_city
from sfrs_core.data.synthcity.labels import CLASS_ID
from sfrs_core.data.synthcity.render import _shade_walls, captured_sprites, query_season, render_view
from sfrs_core.data.synthcity.sample import facing_building
from sfrs_core.data.synthcity.textures import CAR_SPRITE_BASE, N_CARS, SPRITE_IDS

TINY = preset("tiny")


def tiny_with(**knobs):
    return dataclasses.replace(TINY, **knobs)


def facade_hash(d, building: int) -> str:
    """Hash of the shaded texture of a building's front over its first 4 m and 9 m of height."""
    seg = int(np.flatnonzero((d.wall_building == building) & ~d.wall_side)[0])
    a, h = np.meshgrid(np.arange(0.55, 4.55, 0.1), np.arange(0.05, 9.0, 0.1))
    col, _, lab = _shade_walls(d, np.full(a.size, seg), a.ravel(), h.ravel())
    return hashlib.sha256(np.round(col, 3).tobytes() + lab.tobytes()).hexdigest()


def test_challenge_preset_turns_every_knob_on_and_defaults_leave_them_off():
    assert preset("demo").challenges == {}
    assert set(PRESETS["challenge"].challenges) == {
        "facade_repeat", "traversal_change", "p_season", "sign_scale", "gps_noise_m", "heading_noise_deg"}
    with pytest.raises(ValueError, match="facade_repeat"):
        tiny_with(facade_repeat=1.5)
    with pytest.raises(ValueError, match="sign_scale"):
        tiny_with(sign_scale=2.0)


def test_knobs_are_deterministic():
    cfg = tiny_with(**PRESETS["challenge"].challenges)
    a, b = build_city(cfg), build_city(cfg)
    for split in a:
        assert np.array_equal(a[split].b_design, b[split].b_design)
        assert np.array_equal(a[split].sign_atlas, b[split].sign_atlas)
    jobs = plan_views(cfg, a)
    assert [j.name for j in jobs] == [j.name for j in plan_views(cfg, b)]
    for job in (jobs[3], jobs[-2]):  # a database view and a query
        assert np.array_equal(render_view(a[job.split], job.pose, cfg)[0], render_view(b[job.split], job.pose, cfg)[0])


def test_repetition_gives_identical_facades_across_blocks_and_leaves_other_lots_alone():
    plain = build_city(TINY)["train"]
    d = build_city(tiny_with(facade_repeat=0.5, facade_designs=3))["train"]
    assert (plain.b_design == -1).all()
    repeated = np.flatnonzero(d.b_design >= 0)
    assert 0.3 < repeated.size / d.b_design.size < 0.7
    by_design: dict[tuple, set[str]] = {}
    blocks: dict[tuple, set[tuple]] = {}
    for b in repeated[d.b_length[repeated] >= 8.0]:  # long enough for the design's door and sign
        seg = int(np.flatnonzero((d.wall_building == b) & ~d.wall_side)[0])
        along = d.wall_p1[seg] - d.wall_p0[seg]
        key = (int(d.b_design[b]), tuple(np.round(along / np.linalg.norm(along)).astype(int)))  # sunlight differs by side
        by_design.setdefault(key, set()).add(facade_hash(d, int(b)))
        blocks.setdefault(key, set()).add(tuple(np.floor(d.wall_p0[seg] / TINY.block_m).astype(int)))
    # every copy of a design shows the same texture, whichever block it stands in
    assert all(len(hashes) == 1 for hashes in by_design.values())
    assert any(len(b) > 1 for b in blocks.values())
    assert len({(k[0], h) for k, hashes in by_design.items() for h in hashes}) >= len({k[0] for k in by_design})
    one_offs = [facade_hash(plain, int(b)) for b in range(len(plain.b_design))]
    assert len(set(one_offs)) > 0.9 * len(one_offs)  # the plain city repeats (almost) nothing
    # a lot that no design replaced is the plain city's lot
    for b in np.flatnonzero(d.b_design < 0)[:20]:
        assert np.allclose(d.b_colour[b], plain.b_colour[b]) and d.b_style[b] == plain.b_style[b]


def test_traversal_change_alters_cars_people_and_season_only_in_query_captures():
    cfg = tiny_with(traversal_change=0.5, p_season=1.0)
    d = build_city(cfg)["train"]
    pose = plan_views(cfg)[0].pose
    pos, ids = captured_sprites(d, pose, cfg)
    assert np.array_equal(ids, d.sprite_id) and np.array_equal(pos, d.sprite_pos)  # the database capture
    query = dataclasses.replace(pose, traversal=5)
    season = query_season(query, cfg)
    assert season in ("autumn", "bare")
    qpos, qids = captured_sprites(d, query, cfg)
    movable = ((d.sprite_id >= CAR_SPRITE_BASE) & (d.sprite_id < CAR_SPRITE_BASE + N_CARS)) | (
        (d.sprite_id >= SPRITE_IDS["person0"]) & (d.sprite_id < SPRITE_IDS["person0"] + 4))
    kept = {tuple(p) for p in qpos}
    same = sum(1 for i in np.flatnonzero(movable)
               if tuple(d.sprite_pos[i]) in kept and qids[np.flatnonzero((qpos == d.sprite_pos[i]).all(1))[0]] == d.sprite_id[i])
    assert 0.35 < 1 - same / movable.sum() < 0.65  # about half of the cars and people changed
    trees = (d.sprite_id == SPRITE_IDS["tree0"]) | (d.sprite_id == SPRITE_IDS["tree1"])
    assert trees.sum() > 0 and not np.isin(qids, [SPRITE_IDS["tree0"], SPRITE_IDS["tree1"]]).any()
    assert np.array_equal(captured_sprites(d, query, cfg)[1], qids)  # one capture, one state
    off = tiny_with()
    assert np.array_equal(captured_sprites(d, query, off)[1], d.sprite_id)


def test_sign_scale_shrinks_the_signs():
    def sign_pixels(scale: float) -> int:
        cfg = tiny_with(sign_scale=scale)
        d = build_city(cfg)["train"]
        assert d.sign_height_m == pytest.approx(SIGN_HEIGHT_M * scale)
        shops = np.flatnonzero(d.b_shop >= 0)[:4]
        return sum(int((render_view(d, facing_building(d, int(b), cfg), cfg)[1] == CLASS_ID["sign"]).sum()) for b in shops)

    full, small = sign_pixels(1.0), sign_pixels(0.5)
    assert full > 0 and small < 0.5 * full


def test_gps_noise_moves_the_tags_not_the_views_one_fix_per_place():
    plain = plan_views(TINY)
    noisy = plan_views(tiny_with(gps_noise_m=3.0, heading_noise_deg=5.0))
    from sfrs_core.data.vpr_folder import parse_vpr_name

    p = np.array([[parse_vpr_name(j.name).east, parse_vpr_name(j.name).north, parse_vpr_name(j.name).heading] for j in plain])
    n = np.array([[parse_vpr_name(j.name).east, parse_vpr_name(j.name).north, parse_vpr_name(j.name).heading] for j in noisy])
    assert [j.pose for j in plain] == [j.pose for j in noisy]  # the cameras did not move
    err = n[:, :2] - p[:, :2]
    assert 2.0 < err.std() < 4.0
    db = [i for i, j in enumerate(plain) if j.split == "train" and j.role == "database"]
    per_place = err[db].reshape(-1, TINY.db_headings, 2)
    assert np.allclose(per_place, per_place[:, :1])  # a place's headings share one GPS fix
    dh = (n[:, 2] - p[:, 2] + 180) % 360 - 180
    assert 3.0 < dh.std() < 7.0


def test_info_counts_positives_that_face_away_by_brute_force(tiny_city):
    from sfrs_core.data import load_dataset
    from sfrs_core.data.dataset import facing_away

    split = load_dataset(tiny_city)["train"]
    got = facing_away(split)
    pairs = away = 0
    for q in range(len(split.queries)):
        dist = np.linalg.norm(split.database.utm - split.queries.utm[q], axis=1)
        for i in np.flatnonzero(dist <= 10.0):
            pairs += 1
            diff = abs(split.database.heading[i] - split.queries.heading[q]) % 360
            away += min(diff, 360 - diff) > 65.0
    assert got["pairs"] == pairs and got["share_away"] == pytest.approx(away / pairs, abs=1e-4)
    # 8 headings per place, a 65° field of view: most GPS positives look elsewhere
    assert 0.5 < got["share_away"] < 0.9
    assert load_dataset(tiny_city).summary()["splits"]["train"]["positives_10m_facing_away"] == got
