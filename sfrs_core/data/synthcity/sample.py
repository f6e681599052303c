"""A contact sheet of SynthCity: one place in every database heading, two queries, a label map."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ...io import atomic_path
from .city import build_city, database_poses
from .config import SynthCityConfig
from .labels import CLASSES, PALETTE, colorize
from .render import render_view


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
