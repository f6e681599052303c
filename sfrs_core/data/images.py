"""Reading images safely: every failure becomes a DatasetError naming the file."""
from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .errors import DatasetError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MAX_PIXELS = 80_000_000  # a 80-megapixel photo; larger is refused rather than risk memory

ImageFile.LOAD_TRUNCATED_IMAGES = False


def is_image_name(name: str | os.PathLike) -> bool:
    """True when the file name has an image suffix this project reads."""
    return str(name).lower().endswith(IMAGE_SUFFIXES)


@contextmanager
def checked_image(path: str | os.PathLike) -> Iterator[Image.Image]:
    """Open an image file with the checks every reader needs (exists, not empty, not oversized).

    Any failure, also inside the ``with`` block (decoding, EXIF), becomes a
    :class:`DatasetError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, "image file not found")
    if path.stat().st_size == 0:
        raise DatasetError(path, "unreadable image: file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise DatasetError(path, f"image is {img.width}x{img.height}, over the {MAX_PIXELS:,}-pixel limit")
                yield img
    except DatasetError:
        raise
    except UnidentifiedImageError:
        raise DatasetError(path, "unreadable image: not an image file Pillow can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DatasetError(path, f"image is too large: over the {MAX_PIXELS:,}-pixel limit "
                                 "(refused to protect memory)") from None
    except Exception as err:  # truncated data, bad EXIF offsets ...
        raise DatasetError(path, f"unreadable or truncated image ({type(err).__name__}: {err})") from None


def open_rgb(path: str | os.PathLike) -> Image.Image:
    """Open an image as 8-bit RGB, upright (EXIF orientation applied), fully decoded.

    CMYK, 16-bit, palette, grey and alpha images are converted; missing, empty, truncated,
    non-image or oversized files raise :class:`DatasetError` naming the file.
    """
    with checked_image(path) as img:
        img.load()
        return to_rgb(ImageOps.exif_transpose(img))


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow image mode to 8-bit RGB; alpha is composited over white."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        import numpy as np

        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() if arr.size and arr.max() > 255 else 255.0
        img = Image.fromarray((arr * (255.0 / hi)).clip(0, 255).astype("uint8"), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def verify_image(path: str | os.PathLike) -> None:
    """Raise :class:`DatasetError` unless ``path`` is a readable image (decodes it fully)."""
    open_rgb(path).close()
