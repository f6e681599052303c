"""torch.hub entry points of SFRS Studio (NetVLAD / SFRS image-retrieval models).

    import torch
    model = torch.hub.load("path/to/sfrs-studio", "sfrs", weights="runs/sfrs/gen3.pt", source="local")
    x = model.transform("photo.jpg")[None]          # path or PIL image -> normalised 1x3xHxW tensor
    with torch.no_grad():
        descriptor = model(x)                       # 1 x dim, L2-normalised (PCA-whitened if fitted)

``weights`` is one of our checkpoints (``gen{g}.pt``, a run's ``latest.pt``, an exported or
``import-weights`` checkpoint) or OpenIBL's ``vgg16_netvlad`` release file; every file is read with
``torch.load(weights_only=True)``. Nothing is ever downloaded: ``sfrs`` with ``weights=None`` is a
``ValueError``; the per-trunk entry points give an untrained model with ``weights=None``.
Preprocessing: ``model.transform``, ``model.normalization``, ``model.input_norm`` (see
``sfrs_core.models.hub``). Keyword arguments: ``device`` ("cpu"), ``image_size`` ((H, W) for
``model.transform``; default each image's own size).
"""
from __future__ import annotations

# torchvision goes through our shim first: on a CPU-only torch the PyPI wheel fails to import otherwise
from sfrs_core._torchvision import torchvision as _torchvision  # noqa: F401
from sfrs_core.models import hub as _hub

dependencies = ["torch", "torchvision", "numpy", "PIL"]


def sfrs(weights=None, **kwargs):
    """SFRS / NetVLAD model of any trunk from ``weights`` (required: our checkpoint, a run's
    ``latest.pt`` or OpenIBL's ``vgg16_netvlad`` file); eval mode, with the file's PCA whitening
    and its input normalisation (``model.transform``, ``model.normalization``, ``model.input_norm``).
    Keyword arguments: ``device`` ("cpu"), ``image_size`` ((H, W) of ``model.transform``)."""
    return _hub.hub_model(weights, entry="sfrs", **kwargs)


def _trunk_entry(name: str, trunk: str):
    def entry(weights=None, **kwargs):
        return _hub.hub_model(weights, trunk=trunk, entry=name, **kwargs)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = (
        f"SFRS / NetVLAD model with a {trunk} trunk. ``weights=FILE``: as ``sfrs``, refusing another trunk's "
        f"file. ``weights=None``: untrained ({trunk} at its default cut, K=64, no PCA, ImageNet trunk weights "
        f"only if already on this machine, never downloaded); ModelConfig fields as keyword arguments change "
        f"that, e.g. num_clusters=32, pca_dim=256. Also ``device`` and ``image_size``.")
    return entry


sfrs_vgg16 = _trunk_entry("sfrs_vgg16", "vgg16")
sfrs_mobilenet = _trunk_entry("sfrs_mobilenet", "mobilenet_v2")
sfrs_resnet18 = _trunk_entry("sfrs_resnet18", "resnet18")
sfrs_resnet50 = _trunk_entry("sfrs_resnet50", "resnet50")
