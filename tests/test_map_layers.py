"""The maps' new layers: SynthCity's city model as a base layer, view cones, opt-in online tiles,
and a query's GPS positives as mining sees them (Map and Soft labels pages)."""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import utm
from matplotlib.path import Path as PolyPath

from sfrs_core.data.dataset import ImageSet, PlaceSplit
from sfrs_core.data.synthcity import plan_views, preset
from sfrs_core.data.synthcity.basemap import BUILDING_DEPTH_M, district_basemap, load_basemap
from sfrs_core.data.synthcity.city import build_city
from sfrs_core.data.vpr_folder import parse_vpr_name
from sfrs_core.training.mining import MiningConfig
from viz_app.map import (LEAFLET_JS, OSM_TILES, Pin, PinSet, add_database_cones, offline_map, positives_map,
                         retrieval_map, tiles_from_env, view_cone)
from sfrs_core.explain.positives import MiningTable, PositiveMiner
from viz_app.positives import positive_marks

ONLINE = re.compile(r"https?://|//cdn|unpkg")
TILE_LAYER = re.compile(r"L\.tileLayer\(")
POS_BADGE = re.compile(r'class=\\"sfrs-pos\\"[^\n]*?\\u003e(p\d+)')
EARTH_R = 6_371_008.8  # mean Earth radius (m), for the brute-force haversine


def _haversine_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    (la1, lo1), (la2, lo2) = np.radians(a), np.radians(b)
    h = math.sin((la2 - la1) / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    return 2 * EARTH_R * math.asin(math.sqrt(h))


def _bearing_deg(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Initial great-circle bearing from a to b, compass degrees (0 north, 90 east)."""
    (la1, lo1), (la2, lo2) = np.radians(a), np.radians(b)
    y = math.sin(lo2 - lo1) * math.cos(la2)
    x = math.cos(la1) * math.sin(la2) - math.sin(la1) * math.cos(la2) * math.cos(lo2 - lo1)
    return math.degrees(math.atan2(y, x)) % 360.0


# --------------------------------------------------------------------------- SynthCity base layer
@pytest.fixture(scope="module")
def tiny_model():
    """The tiny preset's config, its city (built here, independently of the base layer) and the test
    district's base layer."""
    cfg = preset("tiny")
    return cfg, build_city(cfg), district_basemap(cfg, "test")


def _to_latlon(cfg, district, xy) -> tuple[float, float]:
    """District metres -> degrees, by hand: the anchor's UTM + the district origin + x/y."""
    e0, n0, zone, band = utm.from_latlon(cfg.anchor_lat, cfg.anchor_lon)
    lat, lon = utm.to_latlon(e0 + district.origin[0] + xy[0], n0 + district.origin[1] + xy[1], zone, band)
    return float(lat), float(lon)


def _ring_latlon(feature) -> np.ndarray:
    ring = np.array(feature["geometry"]["coordinates"][0])
    assert (ring[0] == ring[-1]).all()  # a closed GeoJSON ring
    return ring[:-1, ::-1]  # (lat, lon) corners


def test_base_layer_has_the_generators_streets_buildings_and_shops(tiny_model):
    cfg, city, layers = tiny_model
    d = city["test"]
    roads, buildings = layers.roads["features"], layers.buildings["features"]
    assert len(roads) == len(d.street_x) + len(d.street_y)
    assert len(buildings) == len(d.b_length) == int((~d.wall_side).sum())
    assert sorted(s.name for s in layers.shops) == sorted(d.shop_names)
    assert len(layers.shops) == int((d.b_shop >= 0).sum())

    # the street at x = 0 (a north-south one): 4.5 m either side of its centre line, end to end
    (street,) = [f for f in roads if f["properties"]["street"] == "x=0"]
    hw = cfg.road_half_width_m
    y0, y1 = d.street_y.min() - hw, d.street_y.max() + hw
    expected = [_to_latlon(cfg, d, xy) for xy in [(-hw, y0), (hw, y0), (hw, y1), (-hw, y1)]]
    assert _ring_latlon(street) == pytest.approx(np.array(expected), abs=1e-6)

    # one building's footprint: its front wall's two ends, then 9 m into its block
    b = 5
    (w,) = np.flatnonzero((d.wall_building == b) & ~d.wall_side)
    p0, p1 = d.wall_p0[w], d.wall_p1[w]
    corners = _ring_latlon(buildings[b])
    assert corners[0] == pytest.approx(_to_latlon(cfg, d, p0), abs=1e-6)
    assert corners[1] == pytest.approx(_to_latlon(cfg, d, p1), abs=1e-6)
    along = (p1 - p0) / np.linalg.norm(p1 - p0)
    for back, front in ((corners[2], p1), (corners[3], p0)):  # the back corners: BUILDING_DEPTH_M behind the line
        e, n, *_ = utm.from_latlon(back[0], back[1])
        e0, n0, *_ = utm.from_latlon(cfg.anchor_lat, cfg.anchor_lon)
        xy = np.array([e - e0 - d.origin[0], n - n0 - d.origin[1]])
        rel = xy - front
        depth = float(along[0] * rel[1] - along[1] * rel[0])  # left of the wall's direction: into the block
        assert depth > 0 and depth + 1e-3 >= BUILDING_DEPTH_M - 2.0  # setbacks are < 2 m
    assert buildings[b]["properties"]["shop"] == (d.shop_names[d.b_shop[b]] if d.b_shop[b] >= 0 else None)


def test_footprints_do_not_overlap_and_cameras_stand_on_streets(tiny_model):
    cfg, city, layers = tiny_model
    polys = [PolyPath(_ring_latlon(f)) for f in layers.buildings["features"]]
    centroids = [_ring_latlon(f).mean(axis=0) for f in layers.buildings["features"]]
    for i, c in enumerate(centroids):  # each footprint's centroid lies in it and in no other (mitred corners)
        inside = [j for j, p in enumerate(polys) if p.contains_point(c)]
        assert inside == [i], (i, inside)
    streets = [PolyPath(_ring_latlon(f)) for f in layers.roads["features"]]
    cams = [parse_vpr_name(j.name) for j in plan_views(cfg, city) if j.split == "test" and j.role == "database"]
    assert cams
    for cam in cams:  # the images' own GPS tags fall on the drawn streets, never in a building
        assert any(s.contains_point((cam.lat, cam.lon)) for s in streets), cam
        assert not any(p.contains_point((cam.lat, cam.lon)) for p in polys), cam


def test_load_basemap_reads_a_rendered_city_and_refuses_other_folders(tiny_city, tmp_path):
    layers = load_basemap(tiny_city, "val")
    assert layers is not None and layers.split == "val"
    assert layers.buildings == district_basemap(preset("tiny"), "val").buildings
    assert load_basemap(tiny_city, "val") is layers  # built once, then kept
    assert load_basemap(tmp_path, "val") is None  # not a SynthCity
    assert load_basemap(tiny_city, "nope") is None


def test_the_layers_are_kept_beside_the_dataset_for_the_next_process(tiny_city, monkeypatch):
    from sfrs_core.data.synthcity import basemap

    built = load_basemap(tiny_city, "test")
    path = basemap.basemap_file(tiny_city, "test")
    assert path.is_file()
    basemap._cached_basemap.cache_clear()  # as a new process
    monkeypatch.setattr(basemap, "_cached_city", lambda *a: pytest.fail("the city was built again"))
    assert load_basemap(tiny_city, "test") == built  # read from the file, equal to the built layers
    # a file of another config or code, or a broken one, is rebuilt and rewritten
    monkeypatch.undo()
    for content in ('{"stamp": "other", "roads": {}, "buildings": {}, "shops": []}', "{ broken"):
        path.write_text(content)
        basemap._cached_basemap.cache_clear()
        assert load_basemap(tiny_city, "test") == built
        assert json.loads(path.read_text())["buildings"] == built.buildings


def test_offline_map_draws_the_city_with_nothing_online(tiny_model):
    cfg, city, layers = tiny_model
    m = retrieval_map(np.array([[40.4406, -79.9959]]), [], query_latlon=(40.4406, -79.9959), basemap=layers)
    page = m.get_root().render()
    assert LEAFLET_JS in page and not ONLINE.search(page) and not TILE_LAYER.search(page)
    for name in ("Streets", "Buildings", "Shop names"):
        assert f'"{name}"' in page  # a layer of the layer switch
    assert all(json.dumps(s.name)[1:-1] in page for s in layers.shops)


# --------------------------------------------------------------------------- view cones
@pytest.mark.parametrize("heading", [0.0, 45.0, 90.0, 180.0, 271.0, 330.0])
def test_a_view_cone_points_the_way_its_heading_says(heading):
    apex = (40.4406, -79.9959)
    cone = view_cone(apex, heading, 60.0, 10.0, arc_points=7)
    assert cone[0] == apex and len(cone) == 8
    tip = cone[4]  # the middle of the arc
    assert _bearing_deg(apex, tip) == pytest.approx(heading, abs=0.2)
    assert _haversine_m(apex, tip) == pytest.approx(10.0, abs=0.05)
    left, right = cone[1], cone[-1]  # the arc's ends: the field of view either side of the heading
    assert (_bearing_deg(apex, right) - _bearing_deg(apex, left)) % 360 == pytest.approx(60.0, abs=0.3)
    assert _bearing_deg(apex, left) == pytest.approx((heading - 30.0) % 360, abs=0.2)


def test_heading_90_is_due_east():
    apex = (40.4406, -79.9959)
    tip = view_cone(apex, 90.0, 65.0, 12.0, arc_points=5)[3]
    assert tip[0] == pytest.approx(apex[0], abs=1e-9) and tip[1] > apex[1]  # same latitude, further east


def test_pins_and_the_query_get_cones_where_the_heading_is_known():
    thumb = np.full((30, 40, 3), 128, np.uint8)
    pins = [Pin(1, (40.0, -80.0), thumb, 0.9, 3.0, True, 5, heading=90.0), Pin(2, (40.0001, -80.0), thumb, 0.8, 11.0,
                                                                           True, 6)]
    with_cones = retrieval_map(np.array([[40.0, -80.0]]), [PinSet("A", pins, "#0072B2")], query_latlon=(40.0, -80.0),
                               query_heading=180.0).get_root().render()
    without = retrieval_map(np.array([[40.0, -80.0]]), [PinSet("A", pins[1:], "#0072B2")],
                            query_latlon=(40.0, -80.0)).get_root().render()
    assert with_cones.count("L.polygon(") == 2 and without.count("L.polygon(") == 0  # the query's and pin 1's


def test_database_cones_only_near_the_query_and_from_a_close_zoom():
    lat0, lon0 = 40.0, -80.0
    # 8 headings at a spot 5 m east of the query, and 8 more 200 m north (outside the neighbourhood)
    db = np.array([(lat0, lon0 + 5 / 85_000)] * 8 + [(lat0 + 200 / 111_000, lon0)] * 8)
    headings = np.tile(np.arange(8) * 45.0, 2)
    headings[3] = np.nan  # unknown: no cone
    m = offline_map((lat0, lon0))
    layer = add_database_cones(m, db, headings, (lat0, lon0), 60.0, exclude=[5])
    assert len(layer.data["features"]) == 6  # the near spot's 8, but the unknown heading and the excluded one
    page = retrieval_map(db, [], query_latlon=(lat0, lon0), database_heading=headings).get_root().render()
    assert re.search(r"map\.getZoom\(\) >= 20", page)  # drawn only when zoomed in


# --------------------------------------------------------------------------- tiles
def test_online_tiles_add_exactly_one_tile_layer_and_offline_none():
    offline = retrieval_map(np.array([[40.0, -80.0]]), [], query_latlon=(40.0, -80.0)).get_root().render()
    online = retrieval_map(np.array([[40.0, -80.0]]), [], query_latlon=(40.0, -80.0), tiles="osm").get_root().render()
    assert len(TILE_LAYER.findall(offline)) == 0 and not ONLINE.search(offline)
    assert len(TILE_LAYER.findall(online)) == 1
    attribution = re.search(r'"attribution": (".*?(?<!\\)"),', online)
    assert OSM_TILES in online and "OpenStreetMap</a> contributors" in json.loads(attribution.group(1))
    assert '"maxNativeZoom": 19' in online  # upscaled past OSM's last zoom, not blank


def test_tiles_default_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("SFRS_MAP_TILES", raising=False)
    assert tiles_from_env() == "none"
    monkeypatch.setenv("SFRS_MAP_TILES", "OSM")
    assert tiles_from_env() == "osm"
    monkeypatch.setenv("SFRS_MAP_TILES", "google")
    assert tiles_from_env() == "none"  # unknown: stays offline


# --------------------------------------------------------------------------- positives
def _synthetic_split(seed: int = 0) -> tuple[PlaceSplit, list[float]]:
    """One query and 120 database views at 15 spots 0-30 m around it (8 headings per spot): one at
    the query, at 9.9, 10.1 and 12 m, the others random but not within 5 cm of the 10 m radius (where
    UTM's scale, 0.9997 here, and haversine could disagree)."""
    rng = np.random.default_rng(seed)
    e0, n0, zone, band = utm.from_latlon(40.4406, -79.9959)
    # spots just inside and outside the radius (and at 12 m), then random ones
    spots = [(e0 + r * np.cos(a), n0 + r * np.sin(a)) for r, a in ((0.0, 0.0), (9.9, 1.0), (10.1, 2.0), (12.0, 3.0))]
    while len(spots) < 15:
        r, a = rng.uniform(0, 30), rng.uniform(0, 2 * np.pi)
        if abs(r - 10.0) > 0.05:
            spots.append((e0 + r * np.cos(a), n0 + r * np.sin(a)))
    db_utm = np.repeat(np.array(spots), 8, axis=0)
    db_ll = np.stack(utm.to_latlon(db_utm[:, 0], db_utm[:, 1], zone, band), axis=1)
    headings = np.tile(np.arange(8) * 45.0, len(spots))
    db = ImageSet("/nowhere", [f"db{i}.jpg" for i in range(len(db_utm))], db_utm, (zone, band), db_ll, heading=headings)
    q = ImageSet("/nowhere", ["q0.jpg", "q1.jpg"], np.array([[e0, n0], [e0 + 1000, n0]]), (zone, band),
                 np.stack(utm.to_latlon(np.array([e0, e0 + 1000]), np.array([n0, n0]), zone, band), axis=1),
                 heading=np.array([30.0, 0.0]))
    return PlaceSplit("val", db, q), headings.tolist()


def test_the_positives_shown_are_the_gps_positives_within_10_m():
    split, headings = _synthetic_split()
    query = tuple(split.queries.latlon[0])
    truth = {i for i in range(len(split.database)) if _haversine_m(query, tuple(split.database.latlon[i])) <= 10.0}
    assert 0 < len(truth) < len(split.database)
    marks = positive_marks(split, 0)
    assert {m.db_index for m in marks} == truth
    assert [m.label for m in marks] == [f"p{i + 1}" for i in range(len(marks))]
    for m in marks:
        assert m.distance_m == pytest.approx(_haversine_m(query, m.latlon), abs=0.05)
        assert m.heading == headings[m.db_index] and m.picked is None and not m.easiest
    assert [m.distance_m for m in marks] == sorted(m.distance_m for m in marks)  # nearest first

    page = positives_map(query, marks, query_heading=30.0).get_root().render()
    assert sorted(POS_BADGE.findall(page)) == sorted(m.label for m in marks)  # one badge per positive
    assert page.count("L.polygon(") == len(marks) + 1  # their cones and the query's
    assert not ONLINE.search(page)


def test_mined_positives_mark_the_easiest_and_the_picked():
    split, _ = _synthetic_split(1)
    rng = np.random.default_rng(3)
    db = rng.normal(size=(len(split.database), 16)).astype(np.float32)
    q = rng.normal(size=(len(split.queries), 16)).astype(np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    cfg = MiningConfig(pos_num=3, pos_pool=6, neg_num=2, neg_pool=10, rerank_k1=5)
    mined = PositiveMiner(split, db, q, cfg).mine(0)
    positives = [i for i in range(len(split.database))
                 if _haversine_m(tuple(split.queries.latlon[0]), tuple(split.database.latlon[i])) <= 10.0]
    sims = db[positives] @ q[0]
    best = [positives[i] for i in np.argsort(-sims, kind="stable")]
    assert mined.easiest == best[0]  # the most similar GPS positive
    assert set(mined.picked) <= set(best[:6]) and 1 <= len(mined.picked) <= 3  # from the pool of 6, at most 3
    marks = positive_marks(split, 0, mined, model_label="gen 1")
    assert [m.db_index for m in marks if m.easiest] == [best[0]]
    assert {m.db_index for m in marks if m.picked} == set(mined.picked.tolist())
    assert all(m.picked is False for m in marks if m.db_index not in set(mined.picked.tolist()))
    outside = [m for m in marks if m.db_index in best[6:]]
    assert all("outside the pool of 6" in m.note for m in outside)
    assert PositiveMiner(split, db, q, cfg).mine(1) is None  # the far query has no GPS positive


def test_the_saved_mining_table_gives_what_the_miner_gives(tmp_path):
    split, _ = _synthetic_split(2)
    rng = np.random.default_rng(4)
    db, q = (rng.normal(size=(n, 8)).astype(np.float32) for n in (len(split.database), len(split.queries)))
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    cfg = MiningConfig(pos_num=2, pos_pool=5, neg_num=2, neg_pool=10, rerank_k1=5)
    miner = PositiveMiner(split, db, q, cfg)
    MiningTable.from_miner(miner, len(split.queries)).save(tmp_path / "t.npz")
    table = MiningTable.load(tmp_path / "t.npz", cfg)
    for query in range(len(split.queries)):
        a, b = miner.mine(query), table.mine(query)
        assert (a is None) == (b is None)
        if a is not None:
            for field in ("positives", "ranked", "pool", "picked"):
                assert getattr(a, field).tolist() == getattr(b, field).tolist(), field
            assert a.easiest == b.easiest
    assert MiningTable.load(tmp_path / "t.npz", MiningConfig(pos_num=3, pos_pool=5)) is None  # other settings


# --------------------------------------------------------------------------- pages
def _map_script(at) -> str:
    from tests.apptest import map_html

    page = map_html(at)
    assert f'src="{LEAFLET_JS}"' in page
    return page


def _brute_force_positives(split, q: int, radius_m: float = 10.0) -> set[int]:
    query = tuple(split.queries.latlon[q])
    return {i for i in range(len(split.database)) if _haversine_m(query, tuple(split.database.latlon[i])) <= radius_m}


def test_map_page_draws_the_city_and_cones_offline_and_osm_tiles_on_request(app_env):
    from tests.apptest import run_page

    at = run_page("viz_app/app_pages/map.py")
    script = _map_script(at)
    assert not ONLINE.search(script) and not TILE_LAYER.search(script)
    for name in ("Streets", "Buildings", "Shop names"):
        assert f'"{name}"' in script
    assert script.count("L.polygon(") >= 1  # at least the query's cone (SynthCity knows every heading)
    at.toggle(key="map_tiles_toggle").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    online = _map_script(at)
    assert len(TILE_LAYER.findall(online)) == 1 and OSM_TILES in online


def test_map_page_shows_a_validation_querys_positives_and_mines_them(app_env):
    from sfrs_core.data import load_dataset
    from sfrs_core.runs import open_run
    from tests.apptest import run_page

    split = load_dataset(open_run(app_env / "tiny-sfrs").data)["val"]
    q = next(i for i in range(len(split.queries)) if len(_brute_force_positives(split, i)) >= 2)
    truth = _brute_force_positives(split, q)
    at = run_page("viz_app/app_pages/map.py")
    next(s for s in at.selectbox if s.label == "Split").set_value("val").run()
    at.selectbox(key="map_query").set_value(q).run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(POS_BADGE.findall(_map_script(at))) == len(truth)  # one badge per GPS positive within 10 m
    mine = [b for b in at.button if b.key == "map_mine"]
    if mine:  # descriptors not cached yet: extract them (the tiny split is small)
        mine[0].click().run(timeout=300)
        assert not at.exception, [e.value for e in at.exception]
    assert not [b for b in at.button if b.key == "map_mine"]
    script = _map_script(at)
    assert len(POS_BADGE.findall(script)) == len(truth)
    assert script.count("\\u2605") == 1  # exactly one easiest positive


def test_soft_labels_page_maps_the_positives_with_their_soft_labels(app_env):
    from sfrs_core.data import load_dataset
    from sfrs_core.explain.soft_labels import load_snapshots
    from sfrs_core.runs import open_run
    from tests.apptest import run_page

    run = open_run(app_env / "tiny-sfrs")
    snaps = load_snapshots(run.path)
    split = load_dataset(run.data)[snaps[0].split]
    truth = _brute_force_positives(split, int(snaps[0].queries[0]))
    at = run_page("viz_app/app_pages/soft_labels.py")
    assert len(POS_BADGE.findall(_map_script(at))) == len(truth)
    mine = [b for b in at.button if b.key == "sl_mine"]
    if mine:
        mine[0].click().run(timeout=300)
        assert not at.exception, [e.value for e in at.exception]
    shares = [float(m) for md in at.markdown for m in re.findall(r"<b>picked</b>: (\d+)% of the soft labels", md.value)]
    roles = [md.value for md in at.markdown if "<b>picked</b>" in md.value or md.value.endswith(">left out</div>")]
    assert len(roles) == len(truth) and 1 <= len(shares) <= run.config["mining"]["pos_num"]
    assert sum(shares) == pytest.approx(100, abs=len(shares))  # the picked positives share the soft labels
