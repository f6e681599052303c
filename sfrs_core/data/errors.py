"""The one error type raised for bad dataset input."""
from __future__ import annotations

import os


class DatasetError(ValueError):
    """A dataset file or folder is missing, malformed or inconsistent.

    The message always names the offending file (``path``) and what is wrong (``problem``).
    """

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
