"""Pick the torch device: CUDA when it is there, else CPU; never assumed."""
from __future__ import annotations

import torch


def cuda_available() -> bool:
    """True when torch sees at least one CUDA device."""
    return torch.cuda.is_available() and torch.cuda.device_count() > 0


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The device to run on.

    ``None`` or ``"auto"``: ``cuda`` when available, else ``cpu``. An explicit request
    (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``torch.device``) is honoured (CUDA with an explicit
    index, the current one when none is given); asking for CUDA where
    there is none (or for a CUDA index that does not exist) raises ``RuntimeError``.
    """
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        return torch.device("cuda", torch.cuda.current_device()) if cuda_available() else torch.device("cpu")
    try:
        dev = torch.device(device.strip().lower() if isinstance(device, str) else device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from exc
    if dev.type == "cuda":
        if not cuda_available():
            raise RuntimeError(
                f"device {str(device)!r} was requested but CUDA is not available "
                "(no GPU, or torch was built without CUDA); use device='cpu' or 'auto'"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise RuntimeError(f"device {str(device)!r} was requested but only {count} CUDA device(s) exist")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    return dev
