"""The install step's promises: a CPU-only stack, and torchvision importable through the shim."""
from __future__ import annotations

import importlib.metadata

import pytest
import torch


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine legitimately has CUDA packages")
def test_cpu_install_pulls_no_cuda_packages():
    names = {d.metadata["Name"].lower() for d in importlib.metadata.distributions()}
    assert not sorted(n for n in names if n.startswith("nvidia-") or n in {"triton", "cuda-python"})
    assert "faiss-cpu" in names


def test_torchvision_and_grad_cam_import_through_the_shim():
    from sfrs_core._torchvision import torchvision

    assert torchvision.models.mobilenet_v2(weights=None).features[0][0].out_channels == 32
    import pytorch_grad_cam  # imports torchvision itself; must not fail after the shim

    assert hasattr(pytorch_grad_cam, "GradCAM")
