"""A contact sheet of SynthCity: one place in every database heading, two queries, a label map,
and, when challenge knobs are on, a view that shows each knob."""
from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ...io import atomic_path
from .city import District, Pose, build_city, database_poses
from .config import SynthCityConfig
from .labels import CLASSES, PALETTE, colorize
from .render import query_season, render_view


def facing_building(d: District, building: int, cfg: SynthCityConfig) -> Pose:
    """A camera on the street centre line looking straight at ``building``'s front."""
    seg = int(np.flatnonzero((d.wall_building == building) & ~d.wall_side)[0])
    p0, p1 = d.wall_p0[seg], d.wall_p1[seg]
    along = (p1 - p0) / np.linalg.norm(p1 - p0)
    outward = np.array([along[1], -along[0]])  # faces are walked with the street on the right
    centre = p0 + along * min(4.0, np.linalg.norm(p1 - p0) / 2)
    cam = centre + outward * (cfg.road_half_width_m + cfg.sidewalk_m + 1.0)
    heading = math.degrees(math.atan2(-outward[0], -outward[1])) % 360.0
    return Pose(float(cam[0]), float(cam[1]), heading, cfg.fov_deg, cfg.camera_height_m)


def _knob_tiles(d: District, cfg: SynthCityConfig, ref: Pose) -> list[tuple[np.ndarray, str]]:
    """One or two views per challenge knob that is on."""
    tiles = []
    knobs = cfg.challenges
    if "facade_repeat" in knobs:
        counts = np.bincount(d.b_design[d.b_design >= 0], minlength=cfg.facade_designs)
        design = int(np.argmax(counts))
        copies = np.flatnonzero(d.b_design == design)
        if copies.size >= 2:
            for b in (copies[0], copies[-1]):
                tiles.append((render_view(d, facing_building(d, int(b), cfg), cfg)[0],
                              f"repetition: design {design}, building {b}"))
    if "traversal_change" in knobs or "p_season" in knobs:
        traversal = next((t for t in range(1, 200) if query_season(dataclasses.replace(ref, traversal=t), cfg) != "summer"), 1)
        later = dataclasses.replace(ref, traversal=traversal)
        tiles.append((render_view(d, ref, cfg)[0], "change: database capture"))
        tiles.append((render_view(d, later, cfg)[0], f"change: a query's ({query_season(later, cfg)}, cars/people)"))
    if "sign_scale" in knobs:
        shops = np.flatnonzero((d.b_shop >= 0) & (d.b_design < 0))
        if shops.size:
            tiles.append((render_view(d, facing_building(d, int(shops[0]), cfg), cfg)[0], f"signs at scale {cfg.sign_scale:g}"))
    if "gps_noise_m" in knobs or "heading_noise_deg" in knobs:
        blank = np.full((cfg.height, cfg.width, 3), 255, np.uint8)
        tiles.append((blank, f"tags: GPS error sd {cfg.gps_noise_m:g} m, compass sd {cfg.heading_noise_deg:g}°"))
    return tiles


def contact_sheet(cfg: SynthCityConfig) -> Image.Image:
    """Database views of one train place in all headings, a night and a dusk query, a label map."""
    d = build_city(cfg)["train"]
    poses = database_poses(d, cfg)
    places = sorted({(p.x, p.y) for p in poses})
    interior = [xy for xy in places if 0 < xy[0] < d.size[0] and 0 < xy[1] < d.size[1] and xy[0] % cfg.block_m == 0]
    x, y = (interior or places)[len(interior or places) // 2]
    place = [p for p in poses if (p.x, p.y) == (x, y)][:8]
    ref = place[min(2, len(place) - 1)]
    tiles = [(render_view(d, p, cfg)[0], f"database, heading {p.heading:.0f}°") for p in place]
    night = dataclasses.replace(ref, x=ref.x + 1.5, heading=ref.heading + 12, condition="night", seed=7)
    dusk = dataclasses.replace(ref, x=ref.x - 2.0, heading=ref.heading - 15, condition="dusk", occluder=True, blur=True, seed=11)
    tiles.append((render_view(d, night, cfg)[0], "query: night, 1.5 m off"))
    tiles.append((render_view(d, dusk, cfg)[0], "query: dusk, blur, occluder"))
    tiles.append((colorize(render_view(d, ref, cfg)[1]), f"label map, heading {ref.heading:.0f}°"))
    tiles += _knob_tiles(d, cfg, ref)
    W, H, pad, cols = cfg.width, cfg.height, 18, 4
    rows = (len(tiles) + 1 + cols - 1) // cols
    sheet = Image.new("RGB", (cols * W, rows * (H + pad)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=13)
    for i, (tile, caption) in enumerate(tiles):
        x0, y0 = (i % cols) * W, (i // cols) * (H + pad)
        sheet.paste(Image.fromarray(tile), (x0, y0 + pad))
        draw.text((x0 + 4, y0 + 2), caption, fill=(0, 0, 0), font=font)
    x0, y0 = (len(tiles) % cols) * W, (len(tiles) // cols) * (H + pad)
    for k, name in enumerate(CLASSES):  # legend of the label colours
        yy = y0 + 8 + k * 19
        draw.rectangle([x0 + 10, yy, x0 + 26, yy + 14], fill=tuple(int(v) for v in PALETTE[k]))
        draw.text((x0 + 32, yy), name, fill=(0, 0, 0), font=font)
    return sheet


def save_contact_sheet(cfg: SynthCityConfig, out: str | os.PathLike, quality: int = 82) -> Path:
    """Write :func:`contact_sheet` as a JPEG (atomically)."""
    with atomic_path(out) as tmp:
        contact_sheet(cfg).save(tmp, format="JPEG", quality=quality, optimize=True)
    return Path(out)
