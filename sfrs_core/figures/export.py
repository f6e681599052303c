"""Writing matplotlib figures: PDF and SVG (vector, no browser needed) and PNG, atomically."""
from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from ..io import atomic_path
from .style import paper_rc

FIGURE_FORMATS: tuple[str, ...] = ("pdf", "svg", "png")
_ALL_FORMATS = frozenset({*FIGURE_FORMATS, "jpg", "jpeg", "eps", "ps", "tif", "tiff", "webp"})
MIME_TYPES: dict[str, str] = {
    "pdf": "application/pdf",
    "svg": "image/svg+xml",
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "eps": "application/postscript",
    "html": "text/html",
}
# No creation dates: the same figure gives the same bytes (diff-friendly, cache-friendly).
_METADATA: dict[str, dict[str, object]] = {
    "pdf": {"Creator": "SFRS Studio", "Producer": None, "CreationDate": None},
    "svg": {"Creator": "SFRS Studio", "Date": None},
    "png": {"Software": "SFRS Studio"},
}


def _check_format(fmt: str) -> str:
    fmt = fmt.lower().lstrip(".")
    if fmt not in _ALL_FORMATS:
        raise ValueError(f"unsupported figure format {fmt!r}; use one of {', '.join(sorted(_ALL_FORMATS))}")
    return fmt


def _savefig(fig: Figure, target: str | io.BytesIO, fmt: str, dpi: float) -> None:
    with paper_rc():
        fig.savefig(target, format=fmt, dpi=dpi, metadata=_METADATA.get(fmt), facecolor="white")


def figure_bytes(fig: Figure, fmt: str = "png", dpi: float = 200) -> bytes:
    """The figure encoded as ``fmt`` (``"pdf"``, ``"svg"``, ``"png"`` …), e.g. for a download button."""
    fmt = _check_format(fmt)
    buf = io.BytesIO()
    _savefig(fig, buf, fmt, dpi)
    return buf.getvalue()


def figure_paths(path: str | os.PathLike, formats: Sequence[str] = FIGURE_FORMATS) -> list[Path]:
    """The files :func:`save_figure` writes: ``path`` with each format's suffix.

    A suffix that is already a figure format (``fig.pdf``) is replaced; any other dot in the
    name (``recall@N.v2``) is kept as part of the name.
    """
    path = Path(path)
    if path.suffix.lower().lstrip(".") in _ALL_FORMATS:
        path = path.with_suffix("")
    return [path.with_name(f"{path.name}.{_check_format(fmt)}") for fmt in formats]


def save_figure(
    fig: Figure,
    path: str | os.PathLike,
    formats: Sequence[str] = FIGURE_FORMATS,
    dpi: float = 200,
) -> list[Path]:
    """Write ``fig`` in every format (default PDF, SVG, PNG at ``dpi``); returns the paths written.

    Each file is written to a temporary name and renamed, so a crash never leaves half a file.
    The PNG is exactly ``figsize × dpi`` pixels (no tight bounding box: layouts are exact).
    """
    if not formats:
        raise ValueError("save_figure needs at least one format")
    written = []
    for target, fmt in zip(figure_paths(path, formats), formats):
        with atomic_path(target) as tmp:
            _savefig(fig, tmp, _check_format(fmt), dpi)
        written.append(target)
    return written
