"""Mixed precision of the training step (``TrainConfig.amp``).

On CUDA, autocast runs in bfloat16 where the GPU supports it (no loss scaling needed: bf16 has
float32's range), else in float16 with a :class:`torch.amp.GradScaler`; on CPU in bfloat16 (CPU
autocast knows no float16 training). Off (the default), every context here is a no-op and the
scaler a pass-through, so the numbers are exactly float32's. Losses are always computed in
float32 from the descriptors the autocast forward produced.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Precision:
    """How the step runs: ``dtype`` None means float32 throughout."""

    device_type: str = "cpu"
    dtype: torch.dtype | None = None

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    @property
    def name(self) -> str:
        return "float32" if self.dtype is None else str(self.dtype).removeprefix("torch.")

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast to ``dtype`` on ``device_type`` (a null context when disabled)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A loss scaler, active only for float16 (a pass-through otherwise)."""
        return torch.amp.GradScaler(self.device_type if self.device_type == "cuda" else "cpu",
                                    enabled=self.dtype == torch.float16)


def resolve_precision(amp: bool, device: torch.device) -> Precision:
    """The precision ``amp`` asks for on ``device``: bf16 (CUDA with bf16 support, CPU) or fp16 (older CUDA GPUs)."""
    if not amp:
        return Precision(device.type, None)
    if device.type == "cuda":
        with torch.cuda.device(device):
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return Precision("cuda", dtype)
    if device.type == "cpu":
        return Precision("cpu", torch.bfloat16)
    raise ValueError(f"amp is supported on CUDA and CPU, not on {device.type}")
