"""What a run was trained with: package versions, threads, device and machine (``environment.json``).

Every start or resume of a run appends one session, so a run continued on another machine or
after an upgrade says so. Together with the lock file the installs use (``constraints.txt``),
this is what makes a run's numbers reproducible.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from ..io import atomic_write_json

#: Distributions whose versions change what a run computes or shows.
PACKAGES = ("torch", "torchvision", "faiss-cpu", "faiss-gpu-cu12", "numpy", "scipy", "Pillow", "opencv-python-headless",
            "scikit-learn", "streamlit", "grad-cam", "matplotlib", "plotly")


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed versions of ``names`` (those not installed are left out)."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def environment(device: torch.device | str) -> dict[str, Any]:
    """One session's record: time, Python, packages, torch threads, device and machine."""
    dev = torch.device(device)
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": sys.version.split()[0],
        "packages": package_versions(),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "device": str(dev),
        "cuda": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
        "platform": platform.platform(),
    }


def record_environment(run_dir: str | os.PathLike, device: torch.device | str) -> dict[str, Any]:
    """Append this session to ``run_dir/environment.json`` (atomically); returns the session."""
    path = Path(run_dir) / "environment.json"
    sessions = json.loads(path.read_text()).get("sessions", []) if path.is_file() else []
    session = environment(device)
    atomic_write_json(path, {"sessions": [*sessions, session]})
    return session
