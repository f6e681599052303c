"""Render a SynthCity view: a pinhole camera over vertical textured planes, with labels.

Walls are vertical segments on a flat ground, the camera has no pitch (its principal point is
shifted down so facades fill the frame, as a lens shift would), so each image column sees
walls as vertical spans: per column we intersect the viewing ray with every nearby wall, keep
the nearest few hits, and fill each wall's span where no nearer wall covers it (taller
buildings show above shorter ones in front). Facade, ground and sky are shaded analytically
from world coordinates; trees, cars, lamps and people are billboards drawn with a z-buffer.
"""
from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np

from .city import SIGN_HEIGHT_M, District, Pose
from .config import SynthCityConfig
from .labels import CLASS_ID
from .textures import CAR_SPRITE_BASE, N_CARS, N_PERSONS, SEASONS, SIGN_PX_HEIGHT, SPRITE_IDS, sprite_library, tree_in_season

LAYERS = 4  # walls behind walls kept per column
GROUND_FLOOR_M = 4.0
SIGN_BOTTOM_M, SIGN_TOP_M = 3.05, 3.95
SUN = np.array([0.45, -0.89])  # from the south-east, a northern-hemisphere afternoon
FOG_M = 260.0

SKY = {
    "day": ((105, 155, 215), (200, 220, 235)),
    "dusk": ((55, 50, 105), (250, 150, 85)),
    "night": ((6, 8, 22), (28, 32, 55)),
}
# Per-condition (ambient RGB multiplier, emission strength).
LIGHT = {
    "day": (np.array([1.0, 1.0, 1.0]), 0.0),
    "dusk": (np.array([0.78, 0.6, 0.5]), 0.55),
    "night": (np.array([0.13, 0.14, 0.2]), 1.0),
}


@lru_cache(maxsize=1)
def _noise_tile() -> np.ndarray:
    """A fixed 64×64 smooth noise tile in [0, 1], indexed by world coordinates."""
    tile = np.random.default_rng(12345).random((64, 64)).astype(np.float32)
    tile = cv2.GaussianBlur(np.tile(tile, (3, 3)), (0, 0), 1.0)[64:128, 64:128]  # seamless wrap
    return (tile - tile.min()) / (tile.max() - tile.min())


@lru_cache(maxsize=1)
def _cloud_tile() -> np.ndarray:
    """A soft, horizontally wrapping 96×720 cloud layer in [0, 1] (720 columns = 360 degrees)."""
    base = np.random.default_rng(54321).random((96, 720)).astype(np.float32)
    smooth = cv2.GaussianBlur(np.tile(base, (1, 3)), (0, 0), sigmaX=14, sigmaY=5)[:, 720:1440]
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return np.clip((smooth - 0.5) * 3.0, 0.0, 1.0)


def _noise(u: np.ndarray, v: np.ndarray, scale: float) -> np.ndarray:
    tile = _noise_tile()
    return tile[(np.floor(v * scale).astype(np.int64) % 64), (np.floor(u * scale).astype(np.int64) % 64)]


def _hash01(*keys: np.ndarray) -> np.ndarray:
    """A deterministic pseudo-random value in [0, 1) per integer key tuple."""
    keys = [np.atleast_1d(k) for k in keys]  # (numpy scalars would warn on the intended overflow)
    h = np.zeros(np.broadcast(*keys).shape, dtype=np.uint64)
    for k in keys:
        h = (h ^ np.asarray(k).astype(np.uint64)) * np.uint64(0x9E3779B97F4A7C15)
        h ^= h >> np.uint64(29)
    return (h % np.uint64(10_007)).astype(np.float64) / 10_007.0


class Frame:
    """Buffers of one rendered view."""

    def __init__(self, h: int, w: int):
        self.rgb = np.zeros((h, w, 3), np.float32)
        self.emit = np.zeros((h, w, 3), np.float32)  # light sources, unaffected by ambient
        self.label = np.zeros((h, w), np.uint8)
        self.depth = np.full((h, w), np.inf, np.float32)


def _shade_walls(d: District, seg: np.ndarray, a: np.ndarray, h: np.ndarray):
    """Colour, emission and class of wall pixels at (metres along wall, height)."""
    b = d.wall_building[seg]
    side = d.wall_side[seg]
    top = d.wall_height[seg]
    length = d.b_length[b]
    col = d.b_colour[b].copy()
    lab = np.full(a.shape, CLASS_ID["facade"], np.uint8)
    emit = np.zeros(col.shape, np.float32)
    style = d.b_style[b]

    # Masonry: a fine noise everywhere, mortar courses on brick (style 0).
    col *= (0.86 + 0.26 * _noise(a, h, 9.0))[:, None]
    course = np.floor(h / 0.3)
    mortar = (style == 0) & (((h % 0.3) < 0.04) | (((a + 0.35 * (course % 2)) % 0.7) < 0.04))
    col[mortar] *= 0.82

    # Upper floors: a regular grid of windows (the same few patterns everywhere).
    sp, ww, fl = d.b_win_spacing[b], d.b_win_width[b], d.b_floor[b]
    modern = style == 1
    half_w = np.where(modern, sp / 2 - 0.12, ww / 2)
    hf = (h - GROUND_FLOOR_M) % fl
    sill = np.where(modern, fl * 0.15, fl * 0.28)
    win_h = np.where(modern, fl * 0.7, np.where(style == 2, fl * 0.6, fl * 0.5))
    au = (a % sp) - sp / 2
    upper = (~side) & (h > GROUND_FLOOR_M) & (h < top - 0.9) & (a > 0.5) & (a < length - 0.5)
    in_frame = upper & (np.abs(au) < half_w + 0.12) & (hf > sill - 0.12) & (hf < sill + win_h + 0.12)
    window = in_frame & (np.abs(au) < half_w) & (hf > sill) & (hf < sill + win_h)
    frame_only = in_frame & ~window
    col[frame_only] = np.where((style[frame_only] >= 2)[:, None], 225.0, col[frame_only] * 0.55)
    lab[in_frame] = CLASS_ID["window"]
    refl = ((hf - sill) / np.maximum(win_h, 1e-3))[window]
    col[window] = np.stack([45 + 40 * refl, 60 + 45 * refl, 80 + 50 * refl], axis=1)
    floor_idx = np.floor((h - GROUND_FLOOR_M) / fl).astype(np.int64)
    lit = window & (_hash01(b, floor_idx, np.floor(a / sp).astype(np.int64)) < 0.38)
    emit[lit] = (255.0, 205.0, 125.0)

    cornice = (~side) & ((h > top - 0.45) | ((h > GROUND_FLOOR_M) & (hf < 0.16) & (h < top - 0.9)))
    col[cornice] *= 0.72

    # Ground floor: a shop (glass front, awning, its unique sign) or a door and small windows.
    ground = (~side) & (h <= GROUND_FLOOR_M)
    shop = d.b_shop[b]
    is_shop = ground & (shop >= 0)
    door_a = d.b_door[b]
    door = ground & (a >= door_a) & (a <= door_a + 1.25) & (h < 2.45)
    col[door] = (75.0, 55.0, 40.0)
    lab[door] = CLASS_ID["door"]
    if len(d.shop_names):
        sid = np.maximum(shop, 0)
        a0, a1 = d.shop_sign_a0[sid], d.shop_sign_a1[sid]
        sign_top = SIGN_TOP_M if d.sign_height_m == SIGN_HEIGHT_M else SIGN_BOTTOM_M + d.sign_height_m
        sign = is_shop & (h >= SIGN_BOTTOM_M) & (h <= sign_top) & (a >= a0) & (a <= a1)
        if sign.any():
            s = sid[sign]
            fx = np.clip(((a[sign] - a0[sign]) / (a1[sign] - a0[sign]) * d.shop_atlas_w[s]).astype(np.int64), 0, d.shop_atlas_w[s] - 1)
            fy = np.clip(((sign_top - h[sign]) / (sign_top - SIGN_BOTTOM_M) * SIGN_PX_HEIGHT).astype(np.int64), 0, SIGN_PX_HEIGHT - 1)
            texel = d.sign_atlas[fy, d.shop_atlas_x[s] + fx].astype(np.float32)
            col[sign] = texel
            emit[sign] = texel
            lab[sign] = CLASS_ID["sign"]
        awning = is_shop & (h > 2.7) & (h < SIGN_BOTTOM_M - 0.05) & (a >= a0 - 0.3) & (a <= a1 + 0.3)
        stripes = (np.floor(a * 2.0) % 2 == 0)
        col[awning] = np.where(stripes[awning][:, None], d.shop_awning[sid[awning]], 235.0)
        lab[awning] = CLASS_ID["storefront"]
        glass = is_shop & ~door & (h > 0.4) & (h < 2.6) & (a > 0.3) & (a < length - 0.3)
        mullion = ((a % 1.6) < 0.08) | (h < 0.5)
        col[glass] = np.where(mullion[glass][:, None], 50.0, np.stack([70 + 20 * h[glass], 90 + 18 * h[glass], 100 + 15 * h[glass]], 1))
        emit[glass & ~mullion] = (170.0, 145.0, 100.0)
        lab[glass] = CLASS_ID["storefront"]
    small = ground & ~is_shop & ~door & (np.abs(au) < ww / 2) & (h > 1.1) & (h < 2.7) & (a > 0.5) & (a < length - 0.5)
    col[small] = (55.0, 70.0, 90.0)
    lab[small] = CLASS_ID["window"]

    # Directional light: walls facing the sun are brighter.
    e = d.wall_p1[seg] - d.wall_p0[seg]
    normal = np.stack([e[:, 1], -e[:, 0]], axis=1) / np.linalg.norm(e, axis=1, keepdims=True)
    col *= (0.7 + 0.35 * np.clip(normal @ SUN, 0.0, 1.0))[:, None]
    return col, emit, lab


def _walls(frame: Frame, d: District, cam: np.ndarray, rays: np.ndarray, fwd: np.ndarray, pose: Pose, cfg: SynthCityConfig, fy: float, cy: float) -> None:
    p0 = d.wall_p0 - cam
    p1 = d.wall_p1 - cam
    mid = (p0 + p1) / 2
    reach = np.linalg.norm(mid, axis=1) - np.linalg.norm(p1 - p0, axis=1) / 2
    keep = (reach < cfg.render_distance_m) & ((p0 @ fwd > 0.05) | (p1 @ fwd > 0.05))
    sel = np.flatnonzero(keep)
    if sel.size == 0:
        return
    p0, e = p0[sel], (p1 - p0)[sel]
    den = rays[:, None, 0] * e[None, :, 1] - rays[:, None, 1] * e[None, :, 0]  # cross(ray, e)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (p0[None, :, 0] * e[None, :, 1] - p0[None, :, 1] * e[None, :, 0]) / den
        s = (p0[None, :, 0] * rays[:, None, 1] - p0[None, :, 1] * rays[:, None, 0]) / den
    t = np.where((t > 0.3) & (s >= 0) & (s <= 1) & np.isfinite(t), t, np.inf)
    k = min(LAYERS, sel.size)
    part = np.argpartition(t, k - 1, axis=1)[:, :k]
    tk = np.take_along_axis(t, part, 1)
    order = np.argsort(tk, axis=1)
    part, tk = np.take_along_axis(part, order, 1), np.take_along_axis(tk, order, 1)
    sk = np.take_along_axis(s, part, 1)
    H, W = frame.label.shape
    rows = np.arange(H, dtype=np.float64)[:, None] + 0.5
    covered = np.zeros((H, W), bool)
    pix_v, pix_u, pix_seg, pix_a, pix_h, pix_z = [], [], [], [], [], []
    for layer in range(k):
        z = tk[:, layer]
        finite = np.isfinite(z)
        if not finite.any():
            break
        seg = sel[part[:, layer]]
        zz = np.where(finite, z, 1.0)
        height = pose.height - (rows - cy) * zz[None, :] / fy
        mask = finite[None, :] & (height >= 0) & (height <= d.wall_height[seg][None, :]) & ~covered
        vv, uu = np.nonzero(mask)
        covered |= mask
        pix_v.append(vv)
        pix_u.append(uu)
        pix_seg.append(seg[uu])
        length = np.linalg.norm(d.wall_p1[seg] - d.wall_p0[seg], axis=1)
        pix_a.append((sk[:, layer] * length + d.wall_offset[seg])[uu])
        pix_h.append(height[vv, uu])
        pix_z.append(z[uu])
    if not pix_v:
        return
    vv, uu = np.concatenate(pix_v), np.concatenate(pix_u)
    if vv.size == 0:
        return
    col, emit, lab = _shade_walls(d, np.concatenate(pix_seg), np.concatenate(pix_a), np.concatenate(pix_h))
    frame.rgb[vv, uu] = col
    frame.emit[vv, uu] = emit
    frame.label[vv, uu] = lab
    frame.depth[vv, uu] = np.concatenate(pix_z)


def _ground_and_sky(frame: Frame, d: District, cam: np.ndarray, rays: np.ndarray, pose: Pose, cfg: SynthCityConfig, fy: float, cy: float) -> None:
    H, W = frame.label.shape
    free = ~np.isfinite(frame.depth)
    rows = np.arange(H, dtype=np.float64) + 0.5
    top, horizon = (np.array(c, np.float32) for c in SKY[pose.condition])
    frac = np.clip(rows / max(cy, 1.0), 0, 1)[:, None] ** 1.5
    sky_rows = top[None, :] * (1 - frac) + horizon[None, :] * frac
    sky = free & (rows[:, None] <= cy + 0.5)
    vv, uu = np.nonzero(sky)
    frame.rgb[vv, uu] = sky_rows[vv]
    frame.label[vv, uu] = CLASS_ID["sky"]
    if pose.condition == "day":  # soft clouds, drifting with heading
        clouds = _cloud_tile()
        col = (np.floor(pose.heading * 2 + (uu - W / 2) * pose.fov * 2 / W).astype(np.int64)) % clouds.shape[1]
        row = np.clip((vv * clouds.shape[0] / max(cy, 1.0)).astype(np.int64), 0, clouds.shape[0] - 1)
        frame.rgb[vv, uu] += (clouds[row, col] * 90.0 * (1 - vv / max(cy, 1.0)))[:, None]

    ground = free & (rows[:, None] > cy + 0.5)
    vv, uu = np.nonzero(ground)
    z = pose.height * fy / (rows[vv] - cy)
    x = cam[0] + z * rays[uu, 0]
    y = cam[1] + z * rays[uu, 1]
    rhw, line = cfg.road_half_width_m, cfg.road_half_width_m + cfg.sidewalk_m
    in_x = (x > d.street_x[0] - line) & (x < d.street_x[-1] + line)
    in_y = (y > d.street_y[0] - line) & (y < d.street_y[-1] + line)
    dx = np.min(np.abs(x[:, None] - d.street_x[None, :]), axis=1)
    dy = np.min(np.abs(y[:, None] - d.street_y[None, :]), axis=1)
    on_ns = (dx <= rhw) & in_y  # road of a north-south street
    on_ew = (dy <= rhw) & in_x
    road = on_ns | on_ew | ~(in_x & in_y)
    tex = _noise(x, y, 6.0)
    col = np.where(road[:, None], (68 + 22 * tex)[:, None] * np.array([1.0, 1.0, 1.05]), (168 + 20 * tex)[:, None] * np.array([1.0, 0.98, 0.93]))
    lab = np.where(road, CLASS_ID["road"], CLASS_ID["sidewalk"]).astype(np.uint8)
    tiles = ~road & (((x % 1.5) < 0.06) | ((y % 1.5) < 0.06))
    col[tiles] *= 0.85
    curb = ~road & ((np.minimum(np.where(in_y, dx, 99), np.where(in_x, dy, 99)) - rhw) < 0.25)
    col[curb] = 205.0
    dash_ew = on_ew & ~on_ns & (dy < 0.09) & ((x % 6.0) < 3.0)
    dash_ns = on_ns & ~on_ew & (dx < 0.09) & ((y % 6.0) < 3.0)
    zebra_ew = on_ew & (dx > rhw + 0.6) & (dx < rhw + 3.4) & ((y % 1.0) < 0.5)
    zebra_ns = on_ns & (dy > rhw + 0.6) & (dy < rhw + 3.4) & ((x % 1.0) < 0.5)
    col[dash_ew | dash_ns] = (225.0, 205.0, 90.0)
    col[zebra_ew | zebra_ns] = 225.0
    frame.rgb[vv, uu] = col
    frame.label[vv, uu] = lab
    frame.depth[vv, uu] = z


def query_season(pose: Pose, cfg: SynthCityConfig) -> str:
    """The season of a capture: summer for the database, another for a ``p_season`` share of queries."""
    if pose.traversal == 0 or cfg.p_season <= 0 or _hash01(pose.traversal, 0x5EA)[0] >= cfg.p_season:
        return "summer"
    return SEASONS[1 + int(_hash01(pose.traversal, 0x5EB)[0] < 0.5)]


def captured_sprites(d: District, pose: Pose, cfg: SynthCityConfig) -> tuple[np.ndarray, np.ndarray]:
    """Positions and sprite ids of the street furniture as this pose's capture saw it: the
    database capture sees the district's own; a query's capture (``pose.traversal``) sees its
    season's trees, and a ``traversal_change`` share of the parked cars and people gone or
    replaced by another model (fixed per sprite and capture, so two views of one capture agree)."""
    pos, ids = d.sprite_pos, tree_in_season(d.sprite_id, query_season(pose, cfg))
    if pose.traversal == 0 or cfg.traversal_change <= 0:
        return pos, ids
    idx = np.arange(len(ids))
    car = (ids >= CAR_SPRITE_BASE) & (ids < CAR_SPRITE_BASE + N_CARS)
    person = (ids >= SPRITE_IDS["person0"]) & (ids < SPRITE_IDS["person0"] + N_PERSONS)
    changed = (car | person) & (_hash01(idx, pose.traversal) < cfg.traversal_change)
    gone = changed & (_hash01(idx, pose.traversal, 1) < 0.5)
    step = 1 + np.floor(_hash01(idx, pose.traversal, 2) * 3).astype(np.int64)  # another model, never the same
    ids = np.where(changed & car, CAR_SPRITE_BASE + (ids - CAR_SPRITE_BASE + step) % N_CARS, ids)
    ids = np.where(changed & person, SPRITE_IDS["person0"] + (ids - SPRITE_IDS["person0"] + step) % N_PERSONS, ids)
    return pos[~gone], ids[~gone]


def _sprites(frame: Frame, d: District, cam: np.ndarray, fwd: np.ndarray, right: np.ndarray, pose: Pose, cfg: SynthCityConfig, rng: np.random.Generator, f: float, cx: float, cy: float) -> None:
    pos, ids = captured_sprites(d, pose, cfg)
    rel = pos - cam
    z = rel @ fwd
    xr = rel @ right
    if pose.occluder:  # a truck or a pedestrian right in front of the camera
        oz = rng.uniform(3.0, 7.0)
        ox = rng.uniform(-0.35, 0.35) * oz
        oid = SPRITE_IDS["bus"] if rng.random() < 0.5 else SPRITE_IDS["person0"] + int(rng.integers(0, 4))
        z, xr, ids = np.append(z, oz), np.append(xr, ox), np.append(ids, oid)
    lib = sprite_library()
    H, W = frame.label.shape
    widths = np.array([lib[i].width_m for i in ids])
    visible = (z > 1.0) & (z < cfg.render_distance_m) & (np.abs(xr) - widths / 2 < z * (W / 2) / f + 1.0)
    for i in np.flatnonzero(visible)[np.argsort(-z[visible])]:
        sp = lib[ids[i]]
        uc = cx + f * xr[i] / z[i]
        half = f * sp.width_m / 2 / z[i]
        v_top = cy + f * (pose.height - sp.height_m) / z[i]
        v_bot = cy + f * pose.height / z[i]
        u0, u1 = max(int(math.floor(uc - half)), 0), min(int(math.ceil(uc + half)), W)
        v0, v1 = max(int(math.floor(v_top)), 0), min(int(math.ceil(v_bot)), H)
        if u0 >= u1 or v0 >= v1:
            continue
        th, tw = sp.alpha.shape
        tu = np.clip(((np.arange(u0, u1) + 0.5 - (uc - half)) / (2 * half) * tw).astype(np.int64), 0, tw - 1)
        tv = np.clip(((np.arange(v0, v1) + 0.5 - v_top) / (v_bot - v_top) * th).astype(np.int64), 0, th - 1)
        alpha = sp.alpha[tv[:, None], tu[None, :]]
        win = (slice(v0, v1), slice(u0, u1))
        draw = alpha & (z[i] < frame.depth[win])
        if not draw.any():
            continue
        frame.rgb[win][draw] = sp.rgb[tv[:, None], tu[None, :]][draw]
        frame.label[win][draw] = sp.label[tv[:, None], tu[None, :]][draw]
        frame.depth[win][draw] = z[i]
        frame.emit[win][draw] = 0.0
        if sp.emissive is not None:
            glow = draw & sp.emissive[tv[:, None], tu[None, :]]
            frame.emit[win][glow] = (255.0, 235.0, 180.0)


def render_view(d: District, pose: Pose, cfg: SynthCityConfig) -> tuple[np.ndarray, np.ndarray]:
    """Render one view: an H×W×3 uint8 image and its H×W uint8 class-id map."""
    W, H = cfg.width, cfg.height
    rng = np.random.default_rng(pose.seed)
    f = (W / 2) / math.tan(math.radians(pose.fov) / 2)
    cx, cy = W / 2, 0.62 * H
    th = math.radians(pose.heading)
    fwd = np.array([math.sin(th), math.cos(th)])
    right = np.array([math.cos(th), -math.sin(th)])
    cam = np.array([pose.x, pose.y])
    k = (np.arange(W) + 0.5 - cx) / f
    rays = fwd[None, :] + k[:, None] * right[None, :]
    frame = Frame(H, W)
    _walls(frame, d, cam, rays, fwd, pose, cfg, f, cy)
    _ground_and_sky(frame, d, cam, rays, pose, cfg, f, cy)
    _sprites(frame, d, cam, fwd, right, pose, cfg, rng, f, cx, cy)
    return _finish(frame, pose, rng), frame.label


def _finish(frame: Frame, pose: Pose, rng: np.random.Generator) -> np.ndarray:
    """Fog, lighting for the time of day, then the camera's colour, blur and noise."""
    sky_h = np.array(SKY[pose.condition][1], np.float32)
    fog = 1.0 - np.exp(-np.minimum(frame.depth, 1e6) / FOG_M)
    fog[~np.isfinite(frame.depth)] = 0.0
    rgb = frame.rgb * (1 - fog[..., None]) + sky_h * fog[..., None]
    ambient, emission = LIGHT[pose.condition]
    is_sky = frame.label == CLASS_ID["sky"]
    rgb = np.where(is_sky[..., None], rgb, rgb * ambient)
    if emission > 0:
        emit = frame.emit * emission
        halo = cv2.GaussianBlur(emit, (0, 0), 3.0) * 0.6
        rgb = np.maximum(rgb, emit) + halo * (0.5 if pose.condition == "night" else 0.2)
    if pose.color_shift:
        gains = rng.uniform(0.8, 1.2, 3).astype(np.float32)
        gamma = rng.uniform(0.8, 1.25)
        rgb = 255.0 * (np.clip(rgb * gains, 0, 255) / 255.0) ** gamma
    if pose.blur:
        if rng.random() < 0.5:
            rgb = cv2.GaussianBlur(rgb, (0, 0), rng.uniform(0.8, 1.8))
        else:
            n = int(rng.integers(5, 10))
            rgb = cv2.filter2D(rgb, -1, np.full((1, n), 1.0 / n, np.float32))
    sigma = {"day": 1.5, "dusk": 2.5, "night": 4.0}[pose.condition]
    rgb = rgb + rng.normal(0.0, sigma, rgb.shape).astype(np.float32)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
