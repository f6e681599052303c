"""Reading a photo a user uploaded: validated, made upright 8-bit RGB, with its EXIF GPS.

:func:`read_photo` takes the file's bytes and returns a :class:`Photo`, or raises
:class:`PhotoError` whose message names the file and says, in plain words, what is wrong with
it (empty, not an image, truncated, too large). Photos that are usable after a conversion are
converted and say so in ``Photo.notes``: CMYK, 16-bit, greyscale and palette images become RGB,
transparency is filled with white, and a photo stored sideways is turned upright by its EXIF
orientation. A GPS block that cannot be used is ignored with a note (the photo is still
localized, only its error cannot be measured).

The checks are the dataset readers' own (:func:`.images.checked_image`, :func:`.images.to_rgb`,
:func:`.exif_folder.read_gps`); those work on files, so the bytes are written to a private
temporary file first. HEIC/HEIF photos (iPhones) open when ``pillow-heif`` is installed: its
Pillow plugin is registered here, once, on import.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ImageOps

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
    ``notes`` what was done to make it usable (conversions, rotation, ignored GPS)."""

    name: str
    rgb: np.ndarray
    gps: tuple[float, float] | None
    notes: tuple[str, ...] = ()

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels, upright."""
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


def _decode(path: Path) -> tuple[np.ndarray, list[str]]:
    notes = []
    with checked_image(path) as img:
        img.load()
        orientation = img.getexif().get(_ORIENTATION, 1)
        note = _conversion_note(img)
        if note:
            notes.append(note)
        upright = ImageOps.exif_transpose(img)
        if orientation not in (None, 1):
            notes.append(f"turned upright following its EXIF orientation (tag value {orientation})")
        rgb = np.asarray(to_rgb(upright), dtype=np.uint8).copy()
    return rgb, notes


def _gps(path: Path) -> tuple[tuple[float, float] | None, list[str]]:
    try:
        fix = read_gps(path, decode=False)
        if fix is not None:
            check_latlon(fix[0], fix[1], path)
    except DatasetError as err:
        return None, [f"its EXIF GPS position was ignored: {err.problem}"]
    return (None, []) if fix is None else ((fix[0], fix[1]), [])


def read_photo(data: bytes, name: str = "photo") -> Photo:
    """Validate and decode an uploaded photo (its file ``data``; ``name`` is only for messages).

    Raises :class:`PhotoError` for an empty file, a file that is not an image, a truncated or
    corrupt image and an image over :data:`~.images.MAX_PIXELS` pixels.
    """
    name = Path(name).name or "photo"
    if not data:
        raise PhotoError(name, "the file is empty (0 bytes)")
    with tempfile.TemporaryDirectory(prefix="sfrs-upload-") as tmp:
        path = Path(tmp) / "upload"
        path.write_bytes(data)
        try:
            rgb, notes = _decode(path)
        except DatasetError as err:
            raise PhotoError(name, _friendly(err.problem)) from None
        gps, gps_notes = _gps(path)
    return Photo(name, rgb, gps, tuple(notes + gps_notes))
