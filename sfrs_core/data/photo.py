"""Reading a photo a user uploaded: validated, made upright 8-bit RGB, with its EXIF GPS.

:func:`read_photo` takes the file's bytes and returns a :class:`Photo`, or raises
:class:`PhotoError` whose message names the file and says, in plain words, what is wrong with
it (empty, not an image, truncated, too large). Photos that are usable after a conversion are
converted and say so in ``Photo.notes``: CMYK, 16-bit, greyscale and palette images become RGB,
transparency is filled with white, and a photo stored sideways is turned upright by its EXIF
orientation. A GPS block that cannot be used is ignored with a note (the photo is still
localized, only its error cannot be measured).

Given the ``size`` (H, W) the photo will be described at (its database's image size), a large
photo is decoded reduced: JPEGs through Pillow's ``draft`` (the decoder scales by 1/2, 1/4 or
1/8 while decoding, to no less than twice the size needed, so a 12-megapixel photo is never held at
full size), then every format is scaled down (area average), aspect kept, until it just covers that
size. ``Photo.rgb`` is then bounded by the
database image size (at most :data:`MAX_COVER_AREA` times its area), not by the photo's;
``Photo.original_size`` keeps the photo's own size. Decompression bombs are refused from the
header, before any decoding (:func:`.images.checked_image`).

The checks are the dataset readers' own (:func:`.images.checked_image`, :func:`.images.to_rgb`,
:func:`.exif_folder.read_gps`); those work on files, so the bytes are written to a private
temporary file first. HEIC/HEIF photos (iPhones) open when ``pillow-heif`` is installed: its
Pillow plugin is registered here, once, on import.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .errors import DatasetError
from .exif_folder import read_gps
from .geo import check_latlon
from .images import checked_image, to_rgb

try:  # optional: HEIC/HEIF support (wheels on PyPI for the usual platforms)
    from pillow_heif import register_heif_opener
except ImportError:  # pragma: no cover - depends on the installation
    HEIF_SUPPORTED = False
else:
    register_heif_opener()
    HEIF_SUPPORTED = True

#: File types an upload may have (suffixes, lower case, no dot).
PHOTO_TYPES: tuple[str, ...] = ("jpg", "jpeg", "png") + (("heic", "heif") if HEIF_SUPPORTED else ())

_ORIENTATION = 0x0112
_SIDEWAYS = (5, 6, 7, 8)  # EXIF orientations that swap width and height
#: A photo decoded for a target size keeps at most this many times the target's pixels (a
#: photo of another aspect ratio keeps its aspect ratio, so it may exceed the target on one side).
MAX_COVER_AREA = 4.0
_CONVERSIONS = {
    "CMYK": "CMYK colours were converted to RGB",
    "I;16": "16-bit values were scaled to 8 bits",
    "I;16B": "16-bit values were scaled to 8 bits",
    "I;16L": "16-bit values were scaled to 8 bits",
    "I": "32-bit integer values were scaled to 8 bits",
    "L": "greyscale photo: converted to RGB (the models were trained on colour photos)",
    "LA": "greyscale photo: converted to RGB (the models were trained on colour photos)",
    "1": "black-and-white photo: converted to RGB (the models were trained on colour photos)",
}


class PhotoError(DatasetError):
    """A photo cannot be used; ``str(err)`` is a message fit to show the user (file and problem)."""


@dataclass(frozen=True)
class Photo:
    """An uploaded photo: ``rgb`` upright ``H×W×3`` uint8, ``gps`` its EXIF (lat, lon) or None,
    ``notes`` what was done to make it usable (conversions, rotation, ignored GPS),
    ``original_size`` the photo's own (width, height), upright (``rgb`` is smaller when the photo
    was decoded reduced for the size it will be described at; None: the size of ``rgb``)."""

    name: str
    rgb: np.ndarray
    gps: tuple[float, float] | None
    notes: tuple[str, ...] = ()
    original_size: tuple[int, int] | None = field(default=None)

    def __post_init__(self) -> None:
        if self.original_size is None:
            object.__setattr__(self, "original_size", self.size)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of ``rgb`` in pixels, upright."""
        return self.rgb.shape[1], self.rgb.shape[0]


def _friendly(problem: str) -> str:
    """The image readers' problem text in the uploader's words (Pillow's jargon replaced)."""
    if "not an image file Pillow can read" in problem:
        return f"not an image file (expected {', '.join(t.upper() for t in PHOTO_TYPES if t != 'jpeg')})"
    return problem


def _conversion_note(img) -> str | None:
    if img.mode in ("RGBA", "PA", "LA") or (img.mode == "P" and "transparency" in img.info):
        return "transparent areas were filled with white"
    if img.mode == "P":
        return "palette image: converted to RGB"
    return _CONVERSIONS.get(img.mode)


def cover_size(width: int, height: int, size: tuple[int, int]) -> tuple[int, int]:
    """(width, height) of a ``width × height`` photo scaled down, aspect kept, so that it just
    covers ``size`` = (H, W), and to at most :data:`MAX_COVER_AREA` times its area; a photo
    already that small is kept as it is."""
    th, tw = max(1, int(size[0])), max(1, int(size[1]))
    scale = min(1.0, max(th / height, tw / width), (MAX_COVER_AREA * th * tw / (width * height)) ** 0.5)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _decode(path: Path, size: tuple[int, int] | None = None) -> tuple[np.ndarray, list[str], tuple[int, int]]:
    """(upright RGB array, notes, the photo's own upright (width, height)); with ``size`` (H, W)
    the photo is decoded reduced and scaled down to just cover it (:func:`cover_size`)."""
    notes = []
    with checked_image(path) as img:  # refuses oversized headers before anything is decoded
        orientation = img.getexif().get(_ORIENTATION, 1)
        sideways = orientation in _SIDEWAYS
        full = (img.height, img.width) if sideways else (img.width, img.height)
        if size is not None:
            th, tw = max(1, int(size[0])), max(1, int(size[1]))
            # the decoder's own downscaling (JPEG: 1/2, 1/4, 1/8), in the file's stored orientation,
            # to no less than twice the size needed: the area average below then does the rest
            img.draft(None, (2 * th, 2 * tw) if sideways else (2 * tw, 2 * th))
        img.load()
        note = _conversion_note(img)
        if note:
            notes.append(note)
        upright = ImageOps.exif_transpose(img)
        if orientation not in (None, 1):
            notes.append(f"turned upright following its EXIF orientation (tag value {orientation})")
        rgb = to_rgb(upright)
        if size is not None:
            target = cover_size(rgb.width, rgb.height, size)
            if target != rgb.size:
                # an area average (box filter, as OpenCV's INTER_AREA): of Pillow's filters and
                # decoder reductions, the one whose result from a 12 MP upscale of a demo query the
                # demo models most often match to the 320×240 query's own top-1 (bench/app.py)
                rgb = rgb.resize(target, Image.BOX)
        array = np.asarray(rgb, dtype=np.uint8).copy()
    return array, notes, full


def _gps(path: Path) -> tuple[tuple[float, float] | None, list[str]]:
    try:
        fix = read_gps(path, decode=False)
        if fix is not None:
            check_latlon(fix[0], fix[1], path)
    except DatasetError as err:
        return None, [f"its EXIF GPS position was ignored: {err.problem}"]
    except Exception as err:  # a malformed EXIF block the reader did not foresee: the photo is still usable
        return None, [f"its EXIF GPS position was ignored: unreadable EXIF ({type(err).__name__})"]
    return (None, []) if fix is None else ((fix[0], fix[1]), [])


def _read(path: Path, label: str, size: tuple[int, int] | None) -> Photo:
    try:
        rgb, notes, full = _decode(path, size)
    except DatasetError as err:  # any failure while decoding is one (checked_image)
        raise PhotoError(label, _friendly(err.problem)) from None
    gps, gps_notes = _gps(path)
    return Photo(Path(label).name or "photo", rgb, gps, tuple(notes + gps_notes), full)


def read_photo(data: bytes, name: str = "photo", size: tuple[int, int] | None = None) -> Photo:
    """Validate and decode an uploaded photo (its file ``data``; ``name`` is only for messages).

    ``size`` is the (H, W) the photo will be described at (the database's image size, e.g.
    :attr:`~sfrs_core.retrieval.bundle.IndexBundle.image_size`): the photo is then decoded
    reduced and scaled down to just cover it (never up). None keeps the photo's full size.

    Raises :class:`PhotoError` for an empty file, a file that is not an image, a truncated or
    corrupt image and an image over :data:`~.images.MAX_PIXELS` pixels.
    """
    name = Path(name).name or "photo"
    if not data:
        raise PhotoError(name, "the file is empty (0 bytes)")
    with tempfile.TemporaryDirectory(prefix="sfrs-upload-") as tmp:
        path = Path(tmp) / "upload"
        path.write_bytes(data)
        return _read(path, name, size)


def open_photo(path: str | os.PathLike, size: tuple[int, int] | None = None) -> Photo:
    """:func:`read_photo` of a file on disk (the ``query`` command's photo); errors name ``path``."""
    path = Path(path)
    if not path.is_file():
        raise PhotoError(path, "photo file not found")
    if path.stat().st_size == 0:
        raise PhotoError(path, "the file is empty (0 bytes)")
    return _read(path, str(path), size)
