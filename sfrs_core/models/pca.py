"""PCA-whitening of global descriptors, stored as a linear layer of the model, then L2.

Fitting follows NetVLAD's ``relja_PCA`` / ``addPCA.m`` (and OpenIBL's ``ibl/pca.py``): centre
the descriptors, take the eigen-decomposition of the covariance (``D x D``) or, when there are
fewer points than dimensions, of the Gram matrix (``n x n``, the "dual" trick), keep the
``out_dim`` leading components, divide each by ``sqrt(eigenvalue)`` (whitening; eigenvalues are
floored at 1e-9) and fold the centring into the bias: ``y = W (x - mu) = W x - W mu``.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class PCAWhitening(nn.Module):
    """``x -> L2(W x + b)`` with ``W, b`` fitted by :meth:`fit`."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        if out_dim > in_dim:
            raise ValueError(f"PCA output dim {out_dim} exceeds its input dim {in_dim}")
        self.in_dim = in_dim
        self.out_dim = out_dim
        # no random init (32768 x 4096 for VGG16): zeros until fitted
        self.linear = nn.utils.skip_init(nn.Linear, in_dim, out_dim)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.register_buffer("fitted", torch.tensor(False))

    @property
    def is_fitted(self) -> bool:
        return bool(self.fitted)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``... x in_dim`` -> ``... x out_dim``, L2-normalised."""
        return F.normalize(self.linear(x), p=2, dim=-1)

    @torch.no_grad()
    def fit(self, descriptors: torch.Tensor | np.ndarray, whiten: bool = True) -> torch.Tensor:
        """Fit on ``n x in_dim`` descriptors; returns the kept eigenvalues (descending)."""
        x = descriptors if isinstance(descriptors, torch.Tensor) else torch.from_numpy(np.asarray(descriptors))
        x = x.detach().to(self.linear.weight.device, torch.float32)
        n, d = x.shape
        if d != self.in_dim:
            raise ValueError(f"PCA expects descriptors of dim {self.in_dim}, got {d}")
        if self.out_dim > min(d, n - 1):
            raise ValueError(
                f"PCA to {self.out_dim} dims needs at least {self.out_dim + 1} descriptors "
                f"(got {n}); centred data of {n} points has rank {min(d, n - 1)}"
            )
        mu = x.mean(0)
        xc = x - mu
        dual = d > n
        gram = (xc @ xc.T if dual else xc.T @ xc) / (n - 1)
        exact = torch.float64 if gram.shape[0] <= 8192 else torch.float32
        lams, vecs = torch.linalg.eigh(gram.to(exact))  # ascending
        lams = lams.flip(0)[: self.out_dim].clamp_min(1e-9)
        vecs = vecs.flip(1)[:, : self.out_dim]
        if dual:  # eigenvectors of the covariance from those of the Gram matrix
            vecs = (xc.T.to(exact) @ vecs) / torch.sqrt(lams * (n - 1))
        weight = vecs.T  # out_dim x d, orthonormal rows
        if whiten:
            weight = weight / torch.sqrt(lams)[:, None]
        weight = weight.to(torch.float32)
        self.linear.weight.copy_(weight)
        self.linear.bias.copy_(-(weight @ mu))
        self.fitted.fill_(True)
        return lams.to(torch.float32)
