"""Procedural textures: unique shop signs and the repetitive street furniture sprites.

Every texture is an RGB array plus a class-id array (and an alpha mask for sprites), drawn
with Pillow from a seeded random generator, so the same seed gives the same pixels.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .labels import CLASS_ID

SIGN_PX_HEIGHT = 28
_SYLLABLES = (
    "ka", "lo", "mi", "ra", "ne", "to", "su", "vi", "de", "po", "ba", "zen", "mar", "tel",
    "lu", "no", "ri", "sa", "fo", "qui", "ber", "dal", "gor", "ham", "jin", "kel", "mon", "pav",
)
_TRADES = (
    "CAFE", "BAR", "BOOKS", "PIZZA", "BANK", "HOTEL", "DELI", "SALON", "TECH", "FLOWERS",
    "MARKET", "SUSHI", "GYM", "BAKERY", "PHARMACY", "TOYS", "SHOES", "OPTICS", "RAMEN", "TACOS",
)
_SIGN_COLOURS = (
    (200, 30, 40), (20, 70, 160), (240, 190, 20), (20, 130, 70), (240, 240, 235), (30, 30, 35),
    (230, 100, 20), (120, 40, 140), (0, 150, 170), (250, 120, 170), (90, 60, 30), (160, 200, 40),
)


def shop_name(rng: np.random.Generator) -> str:
    """A made-up shop name such as 'KALOMI CAFE' or 'ZENRA 24'."""
    word = "".join(rng.choice(_SYLLABLES, size=int(rng.integers(2, 4)))).upper()
    style = rng.random()
    if style < 0.6:
        return f"{word} {rng.choice(_TRADES)}"
    if style < 0.8:
        return f"{rng.choice(_TRADES)} {word}"
    return f"{word} {int(rng.integers(1, 99))}"


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _contrast(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    luma = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    return (20, 20, 25) if luma > 140 else (250, 250, 245)


def render_sign(name: str, length_m: float, rng: np.random.Generator, height_m: float = 0.9) -> np.ndarray:
    """Draw a shop sign ``length_m`` wide and ``height_m`` tall as an RGB uint8 array."""
    h = SIGN_PX_HEIGHT
    w = max(2 * h, int(round(h * length_m / height_m)))
    idx = rng.choice(len(_SIGN_COLOURS), size=2, replace=False)
    bg = _SIGN_COLOURS[idx[0]]
    accent = _SIGN_COLOURS[idx[1]]
    fg = _contrast(bg)
    img = Image.new("RGB", (w, h), bg)
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, 0, w - 1, h - 1], outline=accent, width=2)
    x = 6
    if rng.random() < 0.6:  # a logo: disc, square or diamond in the accent colour
        shape = int(rng.integers(0, 3))
        box = [x, 5, x + h - 10, h - 6]
        if shape == 0:
            draw.ellipse(box, fill=accent)
        elif shape == 1:
            draw.rectangle(box, fill=accent)
        else:
            cx, cy, r = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, (h - 10) / 2
            draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=accent)
        x += h - 4
    size = h - 8
    font = _font(size)
    while size > 8 and draw.textlength(name, font=font) > w - x - 6:
        size -= 1
        font = _font(size)
    text_w = draw.textlength(name, font=font)
    tx = x + max(0.0, (w - x - 6 - text_w) / 2)
    draw.text((tx, h / 2), name, fill=fg, font=font, anchor="lm")
    return np.asarray(img, dtype=np.uint8)


@dataclass(frozen=True)
class Sprite:
    """A billboard texture: RGB, alpha (bool) and class ids, with its size in metres."""

    rgb: np.ndarray
    alpha: np.ndarray
    label: np.ndarray
    width_m: float
    height_m: float
    emissive: np.ndarray | None = None  # pixels that glow at night (lamp heads)


def _finish(img: Image.Image, lab: Image.Image, width_m: float, height_m: float, glow: Image.Image | None = None) -> Sprite:
    rgba = np.asarray(img, dtype=np.uint8)
    label = np.asarray(lab, dtype=np.uint8)
    emissive = None if glow is None else np.asarray(glow, dtype=np.uint8) > 0
    return Sprite(rgba[..., :3].copy(), rgba[..., 3] > 127, label, width_m, height_m, emissive)


SEASONS = ("summer", "autumn", "bare")
_FOLIAGE = {
    "autumn": ([(200, 110, 30), (225, 150, 40), (170, 70, 25), (235, 190, 70)],
               [(190, 60, 25), (215, 120, 35), (150, 45, 20), (240, 170, 60)]),
}


def make_tree(variant: int, season: str = "summer") -> Sprite:
    """One of two street-tree models, identical wherever they stand (repetitive content), in
    summer leaf, autumn colours or bare (the same trunk and crown shape in every season)."""
    rng = np.random.default_rng(1000 + variant)
    w, h = 96, 144
    img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    lab = Image.new("L", (w, h), 0)
    d, dl = ImageDraw.Draw(img), ImageDraw.Draw(lab)
    trunk = [w // 2 - 4, int(h * 0.55), w // 2 + 4, h - 1]
    d.rectangle(trunk, fill=(95, 70, 45, 255))
    dl.rectangle(trunk, fill=CLASS_ID["tree"])
    greens = [(45, 110, 40), (60, 135, 50), (35, 90, 35), (80, 150, 60)] if variant == 0 else [
        (70, 120, 30), (95, 140, 45), (55, 100, 30), (120, 160, 60)]
    if season in _FOLIAGE:
        greens = _FOLIAGE[season][variant]
    for _ in range(70):
        cx = rng.normal(w / 2, w * 0.16)
        cy = rng.normal(h * 0.33, h * 0.12)
        r = rng.uniform(7, 15)
        shade = greens[int(rng.integers(0, len(greens)))]
        if season == "bare":  # a twig from the trunk towards where the leaf cluster would be
            d.line([(w / 2, h * 0.55), (cx, cy)], fill=(85, 65, 45, 255), width=2)
            dl.line([(w / 2, h * 0.55), (cx, cy)], fill=CLASS_ID["tree"], width=2)
            continue
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=shade + (255,))
        dl.ellipse([cx - r, cy - r, cx + r, cy + r], fill=CLASS_ID["tree"])
    return _finish(img, lab, 4.5, 7.0)


CAR_COLOURS = ((200, 200, 205), (30, 30, 35), (150, 20, 25), (40, 60, 110), (230, 230, 225))


def make_car(shape: int, colour: int) -> Sprite:
    """A parked car seen from the side: three body shapes in five common colours."""
    w, h = 128, 48 if shape != 2 else 64
    img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    lab = Image.new("L", (w, h), 0)
    d, dl = ImageDraw.Draw(img), ImageDraw.Draw(lab)
    body = CAR_COLOURS[colour] + (255,)
    glass = (60, 80, 100, 255)
    v = CLASS_ID["vehicle"]
    if shape == 2:  # van
        d.rounded_rectangle([4, 6, w - 4, h - 12], radius=6, fill=body)
        d.rectangle([14, 12, 50, 28], fill=glass)
        d.rectangle([56, 12, 92, 28], fill=glass)
        dl.rounded_rectangle([4, 6, w - 4, h - 12], radius=6, fill=v)
    else:
        roof_l, roof_r = (30, 92) if shape == 0 else (24, 104)
        d.rounded_rectangle([2, 20, w - 2, h - 10], radius=6, fill=body)
        d.polygon([(roof_l - 10, 21), (roof_l, 6), (roof_r, 6), (roof_r + 12, 21)], fill=body)
        d.polygon([(roof_l - 4, 20), (roof_l + 3, 10), (roof_r - 2, 10), (roof_r + 6, 20)], fill=glass)
        dl.rounded_rectangle([2, 20, w - 2, h - 10], radius=6, fill=v)
        dl.polygon([(roof_l - 10, 21), (roof_l, 6), (roof_r, 6), (roof_r + 12, 21)], fill=v)
    for cx in (26, w - 26):
        d.ellipse([cx - 11, h - 22, cx + 11, h - 1], fill=(20, 20, 20, 255))
        d.ellipse([cx - 5, h - 16, cx + 5, h - 6], fill=(150, 150, 150, 255))
        dl.ellipse([cx - 11, h - 22, cx + 11, h - 1], fill=v)
    return _finish(img, lab, 4.4, 1.5 if shape != 2 else 2.1)


def make_lamp() -> Sprite:
    """A street lamp post; its head glows at night."""
    w, h = 24, 192
    img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    lab = Image.new("L", (w, h), 0)
    glow = Image.new("L", (w, h), 0)
    d, dl = ImageDraw.Draw(img), ImageDraw.Draw(lab)
    d.rectangle([10, 8, 13, h - 1], fill=(60, 65, 70, 255))
    d.rectangle([8, h - 10, 15, h - 1], fill=(50, 55, 60, 255))
    d.rectangle([3, 2, 20, 10], fill=(230, 225, 190, 255))
    dl.rectangle([3, 2, 20, h - 1], fill=CLASS_ID["pole"])
    ImageDraw.Draw(glow).rectangle([3, 2, 20, 10], fill=255)
    return _finish(img, lab, 0.6, 6.0, glow)


def make_person(variant: int) -> Sprite:
    """A pedestrian silhouette (four clothing variants)."""
    rng = np.random.default_rng(2000 + variant)
    w, h = 32, 96
    img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    lab = Image.new("L", (w, h), 0)
    d, dl = ImageDraw.Draw(img), ImageDraw.Draw(lab)
    shirt = tuple(int(c) for c in rng.integers(30, 220, size=3)) + (255,)
    trousers = tuple(int(c) for c in rng.integers(20, 90, size=3)) + (255,)
    skin = (200, 160, 130, 255)
    parts = [
        ("ellipse", [11, 2, 21, 14], skin), ("rectangle", [8, 14, 24, 52], shirt),
        ("rectangle", [9, 52, 15, 94], trousers), ("rectangle", [17, 52, 23, 94], trousers),
        ("rectangle", [4, 16, 8, 46], shirt), ("rectangle", [24, 16, 28, 46], shirt),
    ]
    for kind, box, colour in parts:
        getattr(d, kind)(box, fill=colour)
        getattr(dl, kind)(box, fill=CLASS_ID["person"])
    return _finish(img, lab, 0.6, 1.75)


def make_bus() -> Sprite:
    """A large delivery truck, used as a close occluder in queries."""
    w, h = 160, 96
    img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    lab = Image.new("L", (w, h), 0)
    d, dl = ImageDraw.Draw(img), ImageDraw.Draw(lab)
    d.rectangle([2, 4, w - 34, h - 16], fill=(235, 235, 230, 255))
    d.rectangle([w - 36, 30, w - 2, h - 16], fill=(40, 90, 160, 255))
    d.rectangle([w - 30, 36, w - 8, 56], fill=(60, 80, 100, 255))
    for cx in (30, w - 60, w - 18):
        d.ellipse([cx - 14, h - 30, cx + 14, h - 1], fill=(20, 20, 20, 255))
    dl.rectangle([2, 4, w - 2, h - 1], fill=CLASS_ID["vehicle"])
    alpha_fix = Image.new("L", (w, h), 0)
    ImageDraw.Draw(alpha_fix).rectangle([2, 4, w - 2, h - 12], fill=255)
    img.putalpha(Image.fromarray(np.maximum(np.asarray(img)[..., 3], np.asarray(alpha_fix))))
    return _finish(img, lab, 7.0, 3.4)


@lru_cache(maxsize=1)
def sprite_library() -> tuple[Sprite, ...]:
    """All sprites, indexed by the ids of :data:`SPRITE_IDS`."""
    sprites = [make_tree(0), make_tree(1), make_lamp(), make_bus()]
    sprites += [make_person(v) for v in range(4)]
    sprites += [make_car(s, c) for s in range(3) for c in range(len(CAR_COLOURS))]
    sprites += [make_tree(v, season) for season in SEASONS[1:] for v in range(2)]  # appended: ids above stay
    return tuple(sprites)


SPRITE_IDS = {"tree0": 0, "tree1": 1, "lamp": 2, "bus": 3, "person0": 4}
CAR_SPRITE_BASE = 8  # car (shape s, colour c) is sprite CAR_SPRITE_BASE + s * len(CAR_COLOURS) + c
N_PERSONS = 4
N_CARS = 3 * len(CAR_COLOURS)
SEASON_TREE_BASE = CAR_SPRITE_BASE + N_CARS  # tree v in SEASONS[k] (k >= 1): SEASON_TREE_BASE + 2 (k - 1) + v


def tree_in_season(sprite_id: np.ndarray, season: str) -> np.ndarray:
    """The ids of the same trees in ``season`` (other sprites unchanged)."""
    if season == "summer":
        return sprite_id
    tree = (sprite_id == SPRITE_IDS["tree0"]) | (sprite_id == SPRITE_IDS["tree1"])
    return np.where(tree, SEASON_TREE_BASE + 2 * (SEASONS.index(season) - 1) + sprite_id, sprite_id)
