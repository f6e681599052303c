"""Grad-CAM (pytorch-grad-cam's ``GradCAM``) of a descriptor's similarity to another descriptor.

The CAM model is the full descriptor model (``images -> L2-normalised descriptor``); the target
is the inner product with the other image's descriptor (:class:`DescriptorSimilarityTarget`,
not a class score); the layer is the trunk's last module (``model.trunk.body[-1]``, the last
conv block). Only the layer's output is made to require a gradient: the backward pass stops
there, no parameter gradient is computed, and the model's ``requires_grad`` flags, gradients
and train/eval mode are restored afterwards. Runs on CPU or the model's device.

Thread safety (the app serves many visitors from one process and shares its models): the hooks
and flags Grad-CAM needs are put on a *twin* of the model, its own module objects sharing the
model's parameters and buffers (no weights copied), one per model and used under its lock; plain
forward passes of the model in other threads never meet them.
"""
from __future__ import annotations

import copy
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from sfrs_core._torchvision import torchvision  # noqa: F401  (must precede pytorch_grad_cam)
from sfrs_core.explain.heatmap_core import (
    DescriptorLike,
    Heatmap,
    ImageInput,
    as_descriptor,
    check_descriptor,
    output_dim,
    prepare_image,
)
from sfrs_core.models.model import NetVLADModel


def _grad_cam_class() -> type:
    """pytorch-grad-cam's ``GradCAM``, imported on first use (its import takes seconds)."""
    from pytorch_grad_cam import GradCAM

    return GradCAM


class DescriptorSimilarityTarget:
    """Grad-CAM target: inner product of the model's output descriptor with a fixed descriptor."""

    def __init__(self, descriptor: torch.Tensor) -> None:
        self.descriptor = descriptor

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        return (model_output * self.descriptor.to(model_output.device)).sum(-1)


class _DescriptorModel(nn.Module):
    """``images -> descriptor`` with a fixed ``use_pca`` (what GradCAM calls)."""

    def __init__(self, model: NetVLADModel, use_pca: bool | None) -> None:
        super().__init__()
        self.model = model
        self.use_pca = use_pca

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images, use_pca=self.use_pca)


@contextmanager
def _gradient_at(model: nn.Module, layer: nn.Module) -> Iterator[None]:
    """Within: no parameter needs a gradient, ``layer``'s output does; restores the model after."""
    params = list(model.parameters())
    flags, grads, training = [p.requires_grad for p in params], [p.grad for p in params], model.training

    def _leaf(_module: nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor:
        return output.detach().requires_grad_(True)

    handle = layer.register_forward_hook(_leaf)  # registered before GradCAM's hooks: runs first
    try:
        for p in params:
            p.requires_grad_(False)
        with torch.enable_grad():
            yield
    finally:
        handle.remove()
        for p, flag, grad in zip(params, flags, grads):
            p.requires_grad_(flag)
            p.grad = grad
        model.train(training)


_TWINS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> (twin, lock)
_TWINS_GUARD = threading.Lock()


def _twin(model: nn.Module) -> tuple[nn.Module, threading.Lock]:
    """The model's Grad-CAM twin (modules copied, parameters and buffers shared) and its lock."""
    with _TWINS_GUARD:
        found = _TWINS.get(model)
        if found is None:
            shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
            found = _TWINS[model] = (copy.deepcopy(model, shared), threading.Lock())
        return found


def gradcam_heatmap(
    model: NetVLADModel, image: ImageInput, other_descriptor: DescriptorLike, *,
    target_layer: nn.Module | None = None, use_pca: bool | None = None, size: tuple[int, int] | None = None,
) -> Heatmap:
    """Grad-CAM of ``<f(image), other_descriptor>``.

    ``.image``: pytorch-grad-cam's output (ReLU, min-max scaled to [0, 1], resized to the image);
    ``.feature``: the raw ReLU'd CAM on the layer's grid (not rescaled); ``.similarity``: the
    target's value.
    """
    batch = prepare_image(model, image, size)
    descriptor = as_descriptor(model, other_descriptor)
    check_descriptor(descriptor, output_dim(model, use_pca))
    target = DescriptorSimilarityTarget(descriptor)
    layer_name = "trunk.body." + str(len(model.trunk.body) - 1) if target_layer is None else next(
        name for name, m in model.named_modules() if m is target_layer)
    twin, lock = _twin(model)
    with lock:
        twin.train(model.training)
        return _gradcam(twin, twin.get_submodule(layer_name), batch, target, use_pca)


def _gradcam(model: NetVLADModel, layer: nn.Module, batch: torch.Tensor, target: DescriptorSimilarityTarget,
             use_pca: bool | None) -> Heatmap:
    with _gradient_at(model, layer):
        cam = _grad_cam_class()(model=_DescriptorModel(model, use_pca), target_layers=[layer])
        try:
            image_map = cam(input_tensor=batch, targets=[target])[0]
            grads = cam.activations_and_grads
            raw = cam.get_cam_image(batch, layer, [target], grads.activations[0].numpy(), grads.gradients[0].numpy())
            similarity = float(target(cam.outputs[0].detach()))
        finally:
            cam.activations_and_grads.release()
    return Heatmap(
        image=np.asarray(image_map, dtype=np.float32),
        feature=np.maximum(raw[0], 0).astype(np.float32),
        method="gradcam", similarity=similarity,
    )


def gradcam_map(
    model: NetVLADModel, image: ImageInput, other_descriptor: DescriptorLike, *,
    target_layer: nn.Module | None = None, use_pca: bool | None = None, size: tuple[int, int] | None = None,
) -> np.ndarray:
    """``H×W`` float32 Grad-CAM map in [0, 1] (see :func:`gradcam_heatmap`)."""
    return gradcam_heatmap(
        model, image, other_descriptor, target_layer=target_layer, use_pca=use_pca, size=size
    ).image
