"""The run's append-only ``metrics.jsonl``: one JSON object per line."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..io import atomic_write_bytes


class MetricsLog:
    """Append records to ``metrics.jsonl``; each line is flushed as it is written.

    ``records`` counts the complete records in the log; a checkpoint stores it, so that a resume
    cuts the log back to exactly what that checkpoint had seen (:func:`truncate_metrics`).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records = len(read_metrics(self.path))
        self._file = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()
        self.records += 1

    def sync(self) -> None:
        """Force the log to disk (called with every checkpoint)."""
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


class NullMetricsLog:
    """What the ranks other than 0 hold instead of a :class:`MetricsLog`: writes nothing."""

    records = 0

    def write(self, record: dict[str, Any]) -> None:
        pass

    def sync(self) -> None:
        pass

    def close(self) -> None:
        pass


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All complete records of a metrics log (a torn last line, from a crash, is skipped)."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def final_recalls(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per final evaluation (end of a generation, per split): ``generation``, ``split`` and
    ``R@N`` in % (one decimal) for each recall@N the log holds."""
    return [{"generation": r["generation"], "split": r["split"],
             **{f"R@{k.split('@')[1]}": round(100 * v, 1) for k, v in r.items() if k.startswith("recall@")}}
            for r in records if r.get("event") == "eval" and r.get("final")]


def truncate_metrics(path: str | os.PathLike, iteration: int, records: int | None = None) -> None:
    """Cut the log back for a resume: to its first ``records`` records when the checkpoint says how
    many it had seen (exact: an evaluation written after the checkpoint goes, even at the same
    iteration), else to the records of iterations up to ``iteration`` (older checkpoints). A torn
    last line is dropped too."""
    all_records = read_metrics(path)
    if records is not None:
        kept = all_records[:records]
    else:
        kept = [r for r in all_records if r.get("iteration", 0) <= iteration]
    atomic_write_bytes(path, "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in kept).encode())
