"""The one place that imports torchvision.

The torchvision wheel on PyPI is built against CUDA torch. On a CPU-only torch its C++
extension does not register ``torchvision::nms``/``qnms``, and ``import torchvision`` then
fails while registering the op's fake (meta) kernel ("operator torchvision::nms does not
exist"). Declaring the two op schemas first, only when the real op is missing, lets it import;
models and transforms work (image I/O must go through PIL/OpenCV, and ``torchvision.ops.nms``
itself stays unavailable, which this project does not use).

Import torchvision in this project as ``from sfrs_core._torchvision import torchvision``.
"""
from __future__ import annotations

import torch

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}


def _op_exists(name: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
        return True
    except RuntimeError:
        return False


def _declare_missing_ops() -> None:
    missing = [name for name in _SCHEMAS if not _op_exists(name)]
    if not missing:
        return
    lib = torch.library.Library("torchvision", "DEF")  # noqa: F841 - kept alive below
    for name in missing:
        lib.define(_SCHEMAS[name])
    _KEEP_ALIVE.append(lib)


_KEEP_ALIVE: list = []

try:  # a CPU build of torchvision (or a CUDA torch) imports as it is
    import torchvision  # noqa: E402
except RuntimeError as err:  # pragma: no cover - depends on the installed wheels
    if "torchvision::nms" not in str(err):
        raise
    import sys

    for mod in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[mod]
    _declare_missing_ops()
    import torchvision  # noqa: E402

__all__ = ["torchvision"]
