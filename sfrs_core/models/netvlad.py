"""NetVLAD pooling (Arandjelovic et al., CVPR 2016) in matrix-multiplication form.

For local descriptors ``x_i`` (the ``H*W`` pixels of a feature map) and ``K`` centroids ``c_k``::

    a_k(x_i) = softmax_k(w_k . x_i + b_k)             (1x1 conv, softmax over K)
    V_k      = sum_i a_k(x_i) (x_i - c_k)
             = (A @ X^T)_k - c_k * sum_i a_k(x_i)      (A: N x K x HW, X: N x D x HW)

The right-hand side is what :meth:`NetVLAD.aggregate` computes: one batched matmul and a rank-1
correction, never the ``N x K x D x HW`` residual tensor.

Input normalisation: like OpenIBL (``normalize_input=True``, its default) and NetVLAD, local
descriptors are L2-normalised along channels before assignment *and* aggregation.

Initialisation (:meth:`NetVLAD.init_from_descriptors`), as NetVLAD's ``addLayers.m`` and OpenIBL:
k-means over L2-normalised local descriptors gives centroids ``C`` (cluster means, so not
unit-norm): ``method="kmeans++"`` is OpenIBL's ``examples/cluster.py`` (scikit-learn's ``KMeans``,
k-means++ seeding, ``random_state`` = the seed, OpenIBL's 43; 100 iterations; ``n_init`` 10, the
scikit-learn default OpenIBL ran with), ``method="faiss"`` faiss's k-means from randomly drawn
points (faster; the project's earlier default, kept by the demo presets); with the unit-norm
directions ``C^ = C / ||C||``, ``alpha = -log(0.01) / mean(d1 - d2)`` where ``d1 >= d2`` are each
descriptor's two largest dot products with ``C^``; the assignment conv gets weight ``alpha * C^`` and no bias (the layout of
OpenIBL checkpoints: ``conv.weight``, ``centroids``). In the paper's parametrisation
``w_k = 2a c_k, b_k = -a ||c_k||^2`` this is ``a = alpha / 2`` with unit-norm ``c_k`` (the bias is
then the same for every k and drops out of the softmax); ``alpha`` makes the nearest centroid
weigh 100x the second nearest on average.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def intra_l2(vlad: torch.Tensor) -> torch.Tensor:
    """Intra-normalisation per cluster, flatten, L2: ``... x K x D -> ... x (K*D)``."""
    vlad = F.normalize(vlad, p=2, dim=-1)
    return F.normalize(vlad.flatten(-2), p=2, dim=-1)


class NetVLAD(nn.Module):
    """Soft-assignment VLAD over a ``N x D x H x W`` feature map."""

    def __init__(self, num_clusters: int = 64, dim: int = 512, normalize_input: bool = True) -> None:
        super().__init__()
        self.num_clusters = num_clusters
        self.dim = dim
        self.normalize_input = normalize_input
        self.alpha: float | None = None  # set by init_from_descriptors
        self.conv = nn.Conv2d(dim, num_clusters, kernel_size=1, bias=False)
        self.centroids = nn.Parameter(torch.rand(num_clusters, dim))

    @property
    def output_dim(self) -> int:
        """Length of the normalised descriptor, ``K * D``."""
        return self.num_clusters * self.dim

    def assign(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(Normalised) local descriptors ``NxDxHxW`` and soft-assignment ``NxKxHxW``."""
        if self.normalize_input:  # = F.normalize(x, dim=1), about twice as fast fwd+bwd on CPU
            x = x * x.pow(2).sum(1, keepdim=True).clamp_min(1e-24).rsqrt()
        return x, F.softmax(self.conv(x), dim=1)

    def aggregate(self, x: torch.Tensor, assignment: torch.Tensor) -> torch.Tensor:
        """Un-normalised VLAD ``NxKxD`` from ``assign``'s outputs (any spatial crop of both)."""
        a = assignment.flatten(2)  # N x K x HW
        v = torch.bmm(a, x.flatten(2).transpose(1, 2))  # N x K x D: sum_i a_ik x_i
        return v - self.centroids.unsqueeze(0) * a.sum(-1, keepdim=True)

    def vlad(self, x: torch.Tensor) -> torch.Tensor:
        """Un-normalised VLAD ``NxKxD`` of a feature map (needed for region sums)."""
        return self.aggregate(*self.assign(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map ``NxDxHxW`` -> intra-normalised, L2-normalised ``N x K*D``."""
        return intra_l2(self.vlad(x))

    @torch.no_grad()
    def init_from_descriptors(
        self,
        local_descs: torch.Tensor | np.ndarray,
        *,
        niter: int = 100,
        seed: int = 43,
        max_descriptors: int | None = 50_000,
        method: str = "faiss",
    ) -> float:
        """k-means init of centroids and assignment conv; returns alpha (see module doc).

        ``local_descs``: ``M x D`` local descriptors (e.g. from :func:`sample_local_descriptors`);
        they are L2-normalised here. At most ``max_descriptors`` of them are used. ``method``:
        ``"faiss"`` (random-init k-means) or ``"kmeans++"`` (OpenIBL's scikit-learn k-means++).
        """
        if method not in KMEANS_METHODS:
            raise ValueError(f"unknown k-means method {method!r}; choose one of {list(KMEANS_METHODS)}")
        descs = np.array(  # a copy: normalised in place below, the caller's array stays as it was
            local_descs.detach().cpu().numpy() if isinstance(local_descs, torch.Tensor) else local_descs,
            dtype=np.float32, order="C", copy=True,
        )
        if descs.ndim != 2 or descs.shape[1] != self.dim:
            raise ValueError(f"expected M x {self.dim} local descriptors, got shape {descs.shape}")
        if descs.shape[0] < self.num_clusters:
            raise ValueError(f"k-means needs at least {self.num_clusters} descriptors, got {descs.shape[0]}")
        rng = np.random.default_rng(seed)
        if max_descriptors is not None and descs.shape[0] > max_descriptors:
            descs = descs[rng.choice(descs.shape[0], max_descriptors, replace=False)]
        descs /= np.maximum(np.linalg.norm(descs, axis=1, keepdims=True), 1e-12)

        centroids = kmeans_centroids(descs, self.num_clusters, niter=niter, seed=seed, method=method)
        directions = centroids / np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)

        dots = np.sort(descs @ directions.T, axis=1)  # M x K, ascending
        alpha = float(-math.log(0.01) / np.mean(dots[:, -1] - dots[:, -2]))

        self.centroids.copy_(torch.from_numpy(centroids))
        self.conv.weight.copy_(torch.from_numpy(alpha * directions)[:, :, None, None])
        self.alpha = alpha
        return alpha


#: k-means initialisations of NetVLAD (see the module docstring)
KMEANS_METHODS = ("faiss", "kmeans++")
#: OpenIBL's examples/cluster.py: KMeans(n_clusters, max_iter=100, random_state=args.seed), with the
#: scikit-learn of its time, whose default n_init was 10 (k-means++ seeding, best inertia kept)
OPENIBL_KMEANS_N_INIT = 10
OPENIBL_KMEANS_SEED = 43


def kmeans_centroids(descs: np.ndarray, k: int, *, niter: int = 100, seed: int = OPENIBL_KMEANS_SEED,
                     method: str = "faiss") -> np.ndarray:
    """``k x D`` float32 centroids of the rows of ``descs`` (``M x D`` float32).

    ``"kmeans++"``: scikit-learn's ``KMeans`` as OpenIBL's ``cluster.py`` runs it (k-means++ seeding,
    ``random_state=seed``, ``max_iter=niter``, ``n_init`` :data:`OPENIBL_KMEANS_N_INIT`), on one
    thread so that a seed gives the same bits every time. ``"faiss"``: faiss's k-means from ``k`` random points.
    """
    if method == "kmeans++":
        from sklearn.cluster import KMeans  # scikit-learn comes with grad-cam, a base dependency
        from threadpoolctl import threadpool_limits  # scikit-learn's own dependency

        # One thread: scikit-learn's threads add their partial sums in the order they finish, so
        # the centroids' last bits (and, on near ties, the kept init) would change from run to
        # run. The paper's 50,000 x 512 descriptors, K=64, take a few minutes once per run.
        with threadpool_limits(limits=1):
            km = KMeans(n_clusters=k, init="k-means++", n_init=OPENIBL_KMEANS_N_INIT, max_iter=niter,
                        random_state=seed).fit(descs)
        return np.ascontiguousarray(km.cluster_centers_, dtype=np.float32)
    if method != "faiss":
        raise ValueError(f"unknown k-means method {method!r}; choose one of {list(KMEANS_METHODS)}")
    import faiss

    kmeans = faiss.Kmeans(descs.shape[1], k, niter=niter, seed=seed, verbose=False,
                          max_points_per_centroid=max(256, descs.shape[0] // k + 1))
    kmeans.train(descs)
    return kmeans.centroids.astype(np.float32)


def sample_local_descriptors(
    feature_maps: torch.Tensor, per_image: int = 100, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``per_image`` random local descriptors of each map ``NxDxHxW`` -> ``(N*per_image) x D``.

    As OpenIBL's clustering script: different random pixels for each image (all of them when the
    map has fewer pixels). Descriptors are returned as they are (``init_from_descriptors``
    L2-normalises).
    """
    n, d = feature_maps.shape[:2]
    flat = feature_maps.flatten(2).transpose(1, 2)  # N x HW x D
    hw = flat.shape[1]
    take = min(per_image, hw)
    idx = torch.stack([torch.randperm(hw, generator=generator)[:take] for _ in range(n)])
    idx = idx.to(flat.device)
    return torch.gather(flat, 1, idx.unsqueeze(-1).expand(-1, -1, d)).reshape(-1, d)
