"""Exact per-pixel decomposition of the similarity ``<f(q), t>`` of an image to a target descriptor.

NetVLAD is a sum over the ``n = h*w`` local features: ``V_k = sum_i a_ik (x_i - c_k)``. Holding
the whole image's normalisation constants fixed — the intra-normalisation scales
``s_k = 1/||V_k||``, the global scale ``1/||s ⊙ V||`` and, with PCA, the output scale ``1/||W g + b||``
— every step up to the descriptor is linear in the per-pixel terms ``v_ik = a_ik (x_i - c_k)``, so::

    <f(q), t> = sum_i  <W (s ⊙ v_i) / ||s ⊙ V||, t> / ||W g + b||   +   <b, t> / ||W g + b||

The first sum is pixel ``i``'s own contribution. The PCA bias term (the only part not produced
by any pixel; ``b = -W mu`` re-centres on the training mean) is spread UNIFORMLY over the pixels.
That equals spreading it by assignment mass, since every pixel's soft-assignment sums to 1 over
the clusters. Without PCA the bias term is 0. The contributions therefore sum exactly (float64)
to the similarity; they are signed (a pixel can pull the descriptor away from the target).
No gradients are needed.
"""
from __future__ import annotations

import numpy as np
import torch

from sfrs_core.explain.heatmap_core import (
    DescriptorLike,
    Heatmap,
    ImageInput,
    as_descriptor,
    check_descriptor,
    prepare_image,
    upsample,
)
from sfrs_core.models.model import NetVLADModel
from sfrs_core.models.pca import PCAWhitening

_EPS = 1e-12  # F.normalize's eps, as used by intra_l2 and PCAWhitening


def _vlad_scales(x: torch.Tensor, a: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole-image scales and the normalised VLAD of ``D×n`` features with ``K×n`` assignment.

    Returns ``scale`` (K): ``s_k / ||s ⊙ V||`` (intra-norm times global L2), and ``g`` (K*D).
    """
    vlad = a @ x.T - centroids * a.sum(1, keepdim=True)  # K×D
    s = 1.0 / vlad.norm(dim=1).clamp_min(_EPS)
    u = (vlad * s[:, None]).flatten()
    u_norm = u.norm().clamp_min(_EPS)
    return s / u_norm, u / u_norm


def _pulled_back_target(g: torch.Tensor, target: torch.Tensor, pca: PCAWhitening | None) -> tuple[torch.Tensor, float]:
    """The target seen in VLAD space (``W^T t / ||y||``) and the PCA bias term ``<b, t> / ||y||``."""
    check_descriptor(target, pca.out_dim if pca is not None else g.numel())
    if pca is None:
        return target.double(), 0.0
    weight, bias = pca.linear.weight, pca.linear.bias  # float32 mat-vecs: W may be 4096 x 32768
    y_norm = ((weight @ g.to(weight.dtype)).double() + bias.double()).norm().clamp_min(_EPS)
    t_vlad = (weight.T @ target.to(weight.dtype)).double() / y_norm
    return t_vlad, float(bias.double() @ target.double() / y_norm)


def pixel_contributions(
    x: torch.Tensor, a: torch.Tensor, centroids: torch.Tensor, target: torch.Tensor,
    pca: PCAWhitening | None = None,
) -> tuple[torch.Tensor, float]:
    """Per-pixel contributions (``h×w`` float64, summing to the similarity) and the bias term.

    ``x``: normalised local features ``D×h×w``; ``a``: soft-assignment ``K×h×w`` (both from
    ``NetVLAD.assign``); ``target``: the other descriptor. The bias term is already included,
    uniformly, in the returned contributions.
    """
    h, w = x.shape[-2:]
    feats, assign, cents = x.flatten(1).double(), a.flatten(1).double(), centroids.double()
    scale, g = _vlad_scales(feats, assign, cents)
    t_vlad, bias_term = _pulled_back_target(g, target, pca)
    # pixel i's share of g is scale ⊙ v_i with v_ik = a_ik (x_i - c_k): fold the scales into t
    t_k = t_vlad.view(cents.shape) * scale[:, None]  # K×D
    per_pixel = (assign * (t_k @ feats - (t_k * cents).sum(1, keepdim=True))).sum(0)
    return (per_pixel + bias_term / per_pixel.numel()).view(h, w), bias_term


@torch.no_grad()
def decomposition_heatmap(
    model: NetVLADModel, image: ImageInput, other_descriptor: DescriptorLike, *,
    use_pca: bool | None = None, size: tuple[int, int] | None = None,
) -> Heatmap:
    """Exact similarity decomposition of ``image`` against ``other_descriptor`` (see module doc).

    ``.feature``: ``h×w`` contributions summing to ``.similarity``; ``.image``: their bilinear
    upsampling as a per-image-pixel density (scaled by ``h*w / (H*W)``, so ``.image.sum()`` is
    approximately the similarity). ``.details`` holds ``bias_term`` (already spread uniformly).
    """
    batch = prepare_image(model, image, size)
    x, a = model.net_vlad.assign(model.features(batch))
    target = as_descriptor(model, other_descriptor)
    contrib, bias_term = pixel_contributions(
        x[0], a[0], model.net_vlad.centroids, target, model._pca_or_none(use_pca)
    )
    (h, w), (height, width) = contrib.shape, batch.shape[-2:]
    feature = contrib.float().cpu().numpy().astype(np.float32)
    image_map = upsample(feature * (h * w / (height * width)), (height, width))
    return Heatmap(
        image=image_map, feature=feature, method="decomp", signed=True,
        similarity=float(contrib.sum()), details={"bias_term": bias_term},
    )


def decomposition_map(
    model: NetVLADModel, image: ImageInput, other_descriptor: DescriptorLike, *,
    use_pca: bool | None = None, size: tuple[int, int] | None = None,
) -> np.ndarray:
    """``H×W`` float32 image map of :func:`decomposition_heatmap` (signed density)."""
    return decomposition_heatmap(model, image, other_descriptor, use_pca=use_pca, size=size).image
