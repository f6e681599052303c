"""Memory of a process, from Linux's ``/proc/<pid>/status``: what the benchmarks report."""
from __future__ import annotations


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
