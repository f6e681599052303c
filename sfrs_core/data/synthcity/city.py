"""SynthCity geometry: districts of blocks, building facades, shops, street furniture, poses.

Coordinates are metres east (x) and north (y) of the anchor; headings are compass degrees
(0 = north, 90 = east). Each split is its own district, separated from the others by open
ground wider than the render distance, so train/val/test never see each other's buildings.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import DistrictSpec, SynthCityConfig
from .textures import CAR_COLOURS, CAR_SPRITE_BASE, N_PERSONS, SIGN_PX_HEIGHT, SPRITE_IDS, render_sign, shop_name

SIGN_HEIGHT_M = 0.9  # a shop sign's height at sign_scale 1

FACADE_COLOURS = np.array(
    [(165, 90, 70), (190, 170, 140), (140, 140, 145), (110, 120, 135), (215, 200, 170),
     (150, 110, 85), (185, 185, 180), (125, 85, 70)], dtype=np.float32)
SPLITS = ("train", "val", "test")


@dataclass
class District:
    """Everything one split's renderer needs, as flat arrays (vectorised rendering)."""

    name: str
    origin: np.ndarray  # (2,) metres east/north of the anchor of this district's (0, 0)
    size: np.ndarray  # (2,) extent in metres
    # walls: one row per vertical facade segment
    wall_p0: np.ndarray  # (S, 2)
    wall_p1: np.ndarray  # (S, 2)
    wall_height: np.ndarray  # (S,)
    wall_building: np.ndarray  # (S,) building index
    wall_offset: np.ndarray  # (S,) metres along the building front at p0
    wall_side: np.ndarray  # (S,) bool: a plain side wall, no windows or shop
    # buildings
    b_colour: np.ndarray  # (B, 3) float
    b_style: np.ndarray  # (B,) int 0..3
    b_win_spacing: np.ndarray  # (B,)
    b_win_width: np.ndarray  # (B,)
    b_floor: np.ndarray  # (B,)
    b_length: np.ndarray  # (B,) front length
    b_door: np.ndarray  # (B,) door position along the front
    b_shop: np.ndarray  # (B,) shop index or -1
    b_design: np.ndarray  # (B,) shared design index (facade_repeat) or -1 for a one-off building
    # shops: sign placement and the sign atlas (all signs side by side, one row of pixels high)
    shop_sign_a0: np.ndarray  # (P,)
    shop_sign_a1: np.ndarray  # (P,)
    shop_atlas_x: np.ndarray  # (P,) first atlas column
    shop_atlas_w: np.ndarray  # (P,) width in atlas pixels
    shop_names: list[str]
    shop_awning: np.ndarray  # (P, 3)
    sign_atlas: np.ndarray  # (SIGN_PX_HEIGHT, total, 3) uint8
    # street furniture billboards
    sprite_pos: np.ndarray  # (M, 2)
    sprite_id: np.ndarray  # (M,)
    # streets: centre lines (for road markings and camera paths)
    street_x: np.ndarray  # x of north-south streets (the outer ring's included)
    street_y: np.ndarray  # y of east-west streets
    sign_height_m: float = SIGN_HEIGHT_M

    @property
    def camera_streets(self) -> tuple[np.ndarray, np.ndarray]:
        """The streets cameras drive on: those inside ``[0, size]`` (not the outer ring)."""
        sx = self.street_x[(self.street_x >= 0) & (self.street_x <= self.size[0])]
        sy = self.street_y[(self.street_y >= 0) & (self.street_y <= self.size[1])]
        return sx, sy


@dataclass(frozen=True)
class Design:
    """A building design shared across blocks (the repetition challenge): facade, height, door
    and, for a chain store, its sign (drawn once: every copy shows the same pixels) and awning."""

    colour: np.ndarray
    style: int
    spacing: float
    win_width: float
    floor: float
    height: float
    door: float
    chain: str | None  # the chain store's name, or None for a plain facade
    sign: np.ndarray | None
    sign_a0: float
    sign_len: float
    awning: np.ndarray


def shared_designs(cfg: SynthCityConfig) -> list[Design]:
    """The ``facade_designs`` designs of the city (none while ``facade_repeat`` is 0)."""
    if cfg.facade_repeat <= 0:
        return []
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0xFACADE]))
    designs = []
    for _ in range(cfg.facade_designs):
        spacing = float(rng.choice([2.4, 2.8, 3.2, 3.6]))
        chain = shop_name(rng) if rng.random() < 0.7 else None
        sign_len = float(rng.uniform(3.5, 5.5) * cfg.sign_scale)
        sign = render_sign(chain, sign_len, rng, SIGN_HEIGHT_M * cfg.sign_scale) if chain else None
        designs.append(Design(
            colour=FACADE_COLOURS[int(rng.integers(0, len(FACADE_COLOURS)))] * rng.uniform(0.92, 1.08),
            style=int(rng.integers(0, 4)), spacing=spacing, win_width=spacing * rng.uniform(0.42, 0.58),
            floor=float(rng.uniform(3.0, 3.6)), height=float(rng.choice([11.0, 14.0, 17.0, 21.0])),
            door=float(rng.uniform(0.8, 2.0)), chain=chain, sign=sign, sign_a0=0.6, sign_len=sign_len,
            awning=rng.integers(40, 230, size=3).astype(np.float64),
        ))
    return designs


def _district(name: str, spec: DistrictSpec, origin: np.ndarray, cfg: SynthCityConfig, rng: np.random.Generator,
              used_names: set[str], designs: list[Design] | None = None, rep_rng: np.random.Generator | None = None) -> District:
    designs = designs or []
    chain_shop: dict[int, int] = {}  # design index -> this district's shop row of its chain store
    B = cfg.block_m
    line = cfg.road_half_width_m + cfg.sidewalk_m  # building line, from the street centre line
    # One ring of blocks around the camera area, so perimeter streets have buildings on both sides.
    street_x = np.arange(-1, spec.blocks_x + 2) * B
    street_y = np.arange(-1, spec.blocks_y + 2) * B
    walls: list[tuple] = []
    b_rows: list[tuple] = []
    shops: list[tuple] = []
    atlas_parts: list[np.ndarray] = []
    atlas_x = 0

    for bx in range(-1, spec.blocks_x + 1):
        for by in range(-1, spec.blocks_y + 1):
            x0, x1 = bx * B + line, (bx + 1) * B - line
            y0, y1 = by * B + line, (by + 1) * B - line
            # Four faces of the block, each walked left to right as seen from its street:
            # (start corner, direction along the face, outward normal).
            faces = [
                (np.array([x0, y0]), np.array([1.0, 0.0]), np.array([0.0, -1.0]), x1 - x0),  # south face
                (np.array([x1, y0]), np.array([0.0, 1.0]), np.array([1.0, 0.0]), y1 - y0),  # east face
                (np.array([x1, y1]), np.array([-1.0, 0.0]), np.array([0.0, 1.0]), x1 - x0),  # north face
                (np.array([x0, y1]), np.array([0.0, -1.0]), np.array([-1.0, 0.0]), y1 - y0),  # west face
            ]
            for start, along, normal, length in faces:
                cuts = [0.0]
                while length - cuts[-1] > 22.0:
                    cuts.append(cuts[-1] + float(rng.uniform(9.0, 17.0)))
                cuts.append(length)
                n_lots = len(cuts) - 1
                setbacks = np.where(rng.random(n_lots) < 0.3, rng.uniform(0.6, 1.8, n_lots), 0.0)
                setbacks[0] = setbacks[-1] = 0.0  # corners stay closed
                heights = rng.choice([8.0, 11.0, 14.0, 17.0, 21.0, 26.0, 32.0], size=n_lots)
                heights = heights + rng.uniform(-0.8, 0.8, n_lots)
                for lot in range(n_lots):
                    a0, a1 = cuts[lot], cuts[lot + 1]
                    lot_len = a1 - a0
                    b = len(b_rows)
                    # Repetition draws come from their own stream: the other lots stay as in the plain city.
                    design = -1
                    if designs and rep_rng.random() < cfg.facade_repeat:
                        design = int(rep_rng.integers(0, len(designs)))
                        heights[lot] = designs[design].height
                    front = start - normal * setbacks[lot]
                    p0, p1 = front + along * a0, front + along * a1
                    walls.append((p0, p1, heights[lot], b, 0.0, False))
                    if lot > 0 and setbacks[lot] != setbacks[lot - 1]:
                        # Exposed side wall of the lot that stands further out.
                        out = lot if setbacks[lot] < setbacks[lot - 1] else lot - 1
                        q0 = start - normal * setbacks[lot - 1] + along * a0
                        q1 = start - normal * setbacks[lot] + along * a0
                        owner = b if out == lot else b - 1
                        walls.append((q0, q1, heights[out], owner, 0.0, True))
                    style = int(rng.integers(0, 4))
                    spacing = float(rng.choice([2.4, 2.8, 3.2, 3.6]))
                    shop = -1
                    door = float(rng.uniform(0.8, max(1.0, lot_len - 2.0)))
                    if rng.random() < cfg.shop_fraction and lot_len > 5.0:
                        name = shop_name(rng)
                        while name in used_names:
                            name = shop_name(rng)
                        used_names.add(name)
                        sign_len = float(min(lot_len - 1.0, rng.uniform(3.5, 7.5) * cfg.sign_scale))
                        s0 = float(rng.uniform(0.5, lot_len - sign_len - 0.5))
                        sign = render_sign(name, sign_len, rng, SIGN_HEIGHT_M * cfg.sign_scale)
                        awning = FACADE_COLOURS[0] * 0 + rng.integers(40, 230, size=3)
                        if design < 0:
                            shop = len(shops)
                            shops.append((s0, s0 + sign_len, atlas_x, sign.shape[1], name, awning))
                            atlas_parts.append(sign)
                            atlas_x += sign.shape[1]
                        door = s0 + sign_len + 0.2 if s0 + sign_len + 1.4 < lot_len else max(0.2, s0 - 1.4)
                    colour = FACADE_COLOURS[int(rng.integers(0, len(FACADE_COLOURS)))] * rng.uniform(0.92, 1.08)
                    row = (colour, style, spacing, spacing * rng.uniform(0.42, 0.58), float(rng.uniform(3.0, 3.6)), lot_len, door, shop)
                    if design >= 0:  # the shared design replaces the one-off draws (still drawn above)
                        row, shop_rows = _apply_design(designs[design], design, lot_len, chain_shop, len(shops), atlas_x)
                        for sign_row, sign in shop_rows:
                            shops.append(sign_row)
                            atlas_parts.append(sign)
                            atlas_x += sign.shape[1]
                    b_rows.append(row + (design,))

    # Street furniture along every street side: the same few models everywhere.
    sprite_pos, sprite_id = [], []
    tree_off = cfg.road_half_width_m + 1.2
    car_off = cfg.road_half_width_m - 1.1
    lamp_off = cfg.road_half_width_m + 0.4
    person_off = cfg.road_half_width_m + 2.2
    segments = []  # (start, end) of every street between intersections
    for y in street_y:
        for i in range(len(street_x) - 1):
            segments.append((np.array([street_x[i], y]), np.array([street_x[i + 1], y])))
    for x in street_x:
        for j in range(len(street_y) - 1):
            segments.append((np.array([x, street_y[j]]), np.array([x, street_y[j + 1]])))
    for s0, s1 in segments:
        d = (s1 - s0) / np.linalg.norm(s1 - s0)
        n = np.array([-d[1], d[0]])
        length = float(np.linalg.norm(s1 - s0))
        for side in (-1.0, 1.0):
            for a in np.arange(line + 4.0, length - line - 2.0, 11.0):
                if rng.random() < 0.75:
                    sprite_pos.append(s0 + d * (a + rng.uniform(-1.5, 1.5)) + n * side * tree_off)
                    sprite_id.append(SPRITE_IDS["tree0"] + int(rng.random() < 0.35))
            for a in np.arange(line + 8.0, length - line, 24.0):
                sprite_pos.append(s0 + d * a + n * side * lamp_off)
                sprite_id.append(SPRITE_IDS["lamp"])
            for a in np.arange(line + 3.0, length - line - 3.0, 6.0):
                if rng.random() < 0.38:
                    sprite_pos.append(s0 + d * a + n * side * car_off)
                    shape = int(rng.choice(3, p=[0.5, 0.35, 0.15]))
                    sprite_id.append(CAR_SPRITE_BASE + shape * len(CAR_COLOURS) + int(rng.integers(0, len(CAR_COLOURS))))
            for _ in range(int(rng.poisson(0.8))):
                sprite_pos.append(s0 + d * rng.uniform(line, length - line) + n * side * person_off)
                sprite_id.append(SPRITE_IDS["person0"] + int(rng.integers(0, N_PERSONS)))

    atlas = np.concatenate(atlas_parts, axis=1) if atlas_parts else np.zeros((SIGN_PX_HEIGHT, 1, 3), np.uint8)
    w = list(zip(*walls))
    b = list(zip(*b_rows))
    s = list(zip(*shops)) if shops else [[]] * 6
    return District(
        name=name, origin=origin,
        size=np.array([spec.blocks_x * B, spec.blocks_y * B], dtype=np.float64),
        wall_p0=np.array(w[0], dtype=np.float64), wall_p1=np.array(w[1], dtype=np.float64),
        wall_height=np.array(w[2], dtype=np.float64), wall_building=np.array(w[3], dtype=np.int64),
        wall_offset=np.array(w[4], dtype=np.float64), wall_side=np.array(w[5], dtype=bool),
        b_colour=np.array(b[0], dtype=np.float32), b_style=np.array(b[1], dtype=np.int64),
        b_win_spacing=np.array(b[2]), b_win_width=np.array(b[3]), b_floor=np.array(b[4]),
        b_length=np.array(b[5]), b_door=np.array(b[6]), b_shop=np.array(b[7], dtype=np.int64),
        b_design=np.array(b[8], dtype=np.int64),
        shop_sign_a0=np.array(s[0], dtype=np.float64), shop_sign_a1=np.array(s[1], dtype=np.float64),
        shop_atlas_x=np.array(s[2], dtype=np.int64), shop_atlas_w=np.array(s[3], dtype=np.int64),
        shop_names=list(s[4]), shop_awning=np.array(s[5], dtype=np.float32).reshape(-1, 3),
        sign_atlas=atlas,
        sprite_pos=np.array(sprite_pos, dtype=np.float64).reshape(-1, 2),
        sprite_id=np.array(sprite_id, dtype=np.int64),
        street_x=street_x.astype(np.float64), street_y=street_y.astype(np.float64),
        sign_height_m=SIGN_HEIGHT_M * cfg.sign_scale,
    )


def _apply_design(design: Design, index: int, lot_len: float, chain_shop: dict[int, int], n_shops: int,
                  atlas_x: int) -> tuple[tuple, list[tuple]]:
    """A building row for a lot built from ``design``, and the chain store's shop row (with its
    sign) to append when this district has not shown that chain yet."""
    new_shops = []
    shop = -1
    door = min(design.door, max(0.2, lot_len - 1.5))
    if design.chain and design.sign_a0 + design.sign_len + 0.5 <= lot_len:
        if index not in chain_shop:
            chain_shop[index] = n_shops
            row = (design.sign_a0, design.sign_a0 + design.sign_len, atlas_x, design.sign.shape[1], design.chain, design.awning)
            new_shops.append((row, design.sign))
        shop = chain_shop[index]
        end = design.sign_a0 + design.sign_len
        door = end + 0.2 if end + 1.4 < lot_len else door
    row = (design.colour, design.style, design.spacing, design.win_width, design.floor, lot_len, door, shop)
    return row, new_shops


def build_city(cfg: SynthCityConfig) -> dict[str, District]:
    """Generate the three districts (train, val, test) of the city for ``cfg.seed``."""
    root = np.random.SeedSequence([cfg.seed, 0x5C17])
    children = root.spawn(len(SPLITS))
    designs = shared_designs(cfg)
    used_names: set[str] = {d.chain for d in designs if d.chain}
    districts = {}
    x = 0.0
    for si, (name, child) in enumerate(zip(SPLITS, children)):
        spec = getattr(cfg, name)
        rep_rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0xFACADE, si]))
        districts[name] = _district(name, spec, np.array([x, 0.0]), cfg, np.random.default_rng(child), used_names,
                                    designs, rep_rng)
        x += spec.blocks_x * cfg.block_m + cfg.district_gap_m
    return districts


@dataclass(frozen=True)
class Pose:
    """A camera: position (district metres), heading, field of view, height, appearance."""

    x: float
    y: float
    heading: float
    fov: float
    height: float
    condition: str = "day"  # day | dusk | night
    color_shift: bool = False
    blur: bool = False
    occluder: bool = False
    seed: int = 0
    traversal: int = 0  # which capture: 0 the database's, each query its own (cars, people, season)


def street_points(district: District, spacing: float) -> np.ndarray:
    """Points every ``spacing`` metres along all street centre lines (intersections once)."""
    pts = []
    street_x, street_y = district.camera_streets
    for y in street_y:
        xs = np.arange(0.0, district.size[0] + 1e-6, spacing)
        pts.extend((x, y) for x in xs)
    for x in street_x:
        ys = np.arange(0.0, district.size[1] + 1e-6, spacing)
        pts.extend((x, y) for y in ys)
    pts = np.round(np.array(pts), 3)
    return np.unique(pts, axis=0)


def database_poses(district: District, cfg: SynthCityConfig) -> list[Pose]:
    """Database views: every ``db_spacing_m`` along the streets, ``db_headings`` headings each."""
    headings = np.arange(cfg.db_headings) * (360.0 / cfg.db_headings)
    return [
        Pose(float(x), float(y), float(h), cfg.fov_deg, cfg.camera_height_m)
        for x, y in street_points(district, cfg.db_spacing_m)
        for h in headings
    ]


def query_poses(district: District, cfg: SynthCityConfig, count: int, rng: np.random.Generator) -> list[Pose]:
    """Queries at other positions and headings, with appearance change."""
    poses = []
    street_x, street_y = district.camera_streets
    nx, ny = len(street_x) - 1, len(street_y) - 1
    for _ in range(count):
        if rng.random() < (nx * (ny + 1)) / (nx * (ny + 1) + ny * (nx + 1)):
            x = rng.uniform(0.0, district.size[0])
            y = street_y[rng.integers(0, ny + 1)] + rng.uniform(-1, 1) * cfg.query_lateral_m
        else:
            x = street_x[rng.integers(0, nx + 1)] + rng.uniform(-1, 1) * cfg.query_lateral_m
            y = rng.uniform(0.0, district.size[1])
        u = rng.random()
        condition = "night" if u < cfg.p_night else "dusk" if u < cfg.p_night + cfg.p_dusk else "day"
        poses.append(Pose(
            float(x), float(y), float(rng.uniform(0.0, 360.0)),
            float(cfg.fov_deg * rng.uniform(0.85, 1.1)), float(cfg.camera_height_m + rng.uniform(-0.6, 0.3)),
            condition, bool(rng.random() < cfg.p_color_shift), bool(rng.random() < cfg.p_blur),
            bool(rng.random() < cfg.p_occluder), int(rng.integers(0, 2**31 - 1)),
        ))
    return poses
