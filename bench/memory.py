"""Memory of a process, from Linux's ``/proc/<pid>/status``: what the benchmarks report."""
from __future__ import annotations

import os


def rss_mb(field: str = "VmRSS", pid: int | str = "self") -> float:
    """A ``/proc/<pid>/status`` memory field in MiB: ``VmRSS`` (resident now) or ``VmHWM`` (its
    peak); NaN where there is no such file (not Linux) or field."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants (e.g. the app server and its figure
    worker), in MiB; NaN when the process is gone."""
    total, todo, seen = 0.0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        rss = rss_mb("VmRSS", p)
        if rss == rss:  # not NaN
            total += rss
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo += [int(c) for c in fh.read().split()]
        except OSError:
            pass
    return total if pid in seen and total else float("nan")
