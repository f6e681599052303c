"""The one error type raised for bad dataset input."""
from __future__ import annotations

import os


class DatasetError(ValueError):
    """A dataset file or folder is missing, malformed or inconsistent.

    The message always names the offending file (``path``) and what is wrong (``problem``), on
    one line: control characters in either (a file named with a newline) are shown escaped.
    """

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{printable(self.path)}: {printable(problem)}")


def printable(text: str) -> str:
    """``text`` with its non-printable characters (newlines, tabs, undecodable bytes) escaped."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def short_repr(value: object, limit: int = 60) -> str:
    """``repr(value)`` on one line and at most about ``limit`` characters, for error messages.

    Arrays larger than a few items are described by shape and type rather than printed.
    """
    try:
        import numpy as np

        if isinstance(value, np.ndarray) and (value.size > 4 or value.ndim > 1):
            shape = "x".join(str(s) for s in value.shape) or "0-d"
            return f"<{shape} {value.dtype} array>"
        text = repr(value)
    except Exception:  # a repr that fails must not hide the real problem
        text = f"<{type(value).__name__}>"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
