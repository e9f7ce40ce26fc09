"""A Gaussian mixture in D dimensions, fitted by gradient descent on the likelihood (chapter 01).

The density is

.. math:: p_\\theta(x) = \\sum_{k=1}^K \\pi_k\\, \\mathcal N(x;\\, \\mu_k, \\Sigma_k),

with mixture weights :math:`\\pi = \\mathrm{softmax}(\\alpha)` and full covariances
:math:`\\Sigma_k = L_k L_k^\\top` through a Cholesky factor whose diagonal is kept positive by a
softplus, so every parameter is unconstrained and plain gradient descent applies.  Maximum
likelihood minimises the negative log-likelihood :math:`-\\frac1N\\sum_i \\log p_\\theta(x_i)`,
which equals :math:`\\mathrm{KL}(p_\\text{data}\\,\\|\\,p_\\theta)` up to the data's entropy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import Config, check_positive


@dataclass
class GMMConfig(Config):
    components: int = 8
    dim: int = 2
    init_scale: float = 1.0  # spread of the initial means (data should be roughly standardised)
    init_std: float = 0.5  # initial standard deviation of every component

    def validate(self) -> None:
        check_positive(self, "components", "dim")
        check_positive(self, "init_scale", "init_std", minimum=0, strict=True)


class GaussianMixture(nn.Module):
    """A K-component full-covariance Gaussian mixture with unconstrained parameters."""

    def __init__(
        self, config: GMMConfig | None = None, *, generator: torch.Generator | None = None
    ):
        super().__init__()
        self.config = c = config or GMMConfig()
        if c.components < 1 or c.dim < 1:
            raise ValueError(f"components and dim must be >= 1, got {c.components}, {c.dim}")
        self.logits = nn.Parameter(torch.zeros(c.components))
        self.means = nn.Parameter(
            c.init_scale * torch.randn(c.components, c.dim, generator=generator)
        )
        # softplus^{-1}(init_std) on the diagonal, zeros below it
        raw = torch.zeros(c.components, c.dim, c.dim)
        raw.diagonal(dim1=-2, dim2=-1).fill_(math.log(math.expm1(c.init_std)))
        self.raw_scale = nn.Parameter(raw)

    @torch.no_grad()
    def init_means_kmeanspp(
        self, x: Tensor, *, generator: torch.Generator | None = None
    ) -> GaussianMixture:
        """Place the means by k-means++ seeding: each next mean is a data point drawn with
        probability proportional to its squared distance to the nearest mean so far.

        Gradient descent on a mixture's likelihood has poor local optima (two components on
        one mode, a component starved to zero weight); spread-out starting means avoid most.
        """
        if x.ndim != 2 or x.shape[1] != self.config.dim:
            raise ValueError(
                f"expected points of shape (N, {self.config.dim}), got {tuple(x.shape)}"
            )
        x = x.to(self.means.device, self.means.dtype)
        first = torch.randint(len(x), (1,), generator=generator).item()
        centres = [x[first]]
        for _ in range(1, self.config.components):
            d2 = torch.cdist(x, torch.stack(centres)).min(1).values.pow(2)
            centres.append(x[torch.multinomial(d2 / d2.sum(), 1, generator=generator).item()])
        self.means.copy_(torch.stack(centres))
        return self

    @property
    def weights(self) -> Tensor:
        """Mixture weights :math:`\\pi` (K,)."""
        return self.logits.softmax(0)

    @property
    def scale_tril(self) -> Tensor:
        """Cholesky factors :math:`L_k` (K, D, D), lower triangular with a positive diagonal."""
        lower = torch.tril(self.raw_scale, diagonal=-1)
        diag = F.softplus(self.raw_scale.diagonal(dim1=-2, dim2=-1)) + 1e-4
        return lower + torch.diag_embed(diag)

    @property
    def covariances(self) -> Tensor:
        L = self.scale_tril
        return L @ L.transpose(-1, -2)

    def component_log_prob(self, x: Tensor) -> Tensor:
        """(N, D) -> (N, K): :math:`\\log \\pi_k + \\log \\mathcal N(x_n; \\mu_k, \\Sigma_k)`."""
        if x.ndim != 2 or x.shape[1] != self.config.dim:
            raise ValueError(
                f"expected points of shape (N, {self.config.dim}), got {tuple(x.shape)}"
            )
        L = self.scale_tril  # (K, D, D)
        diff = (x[:, None, :] - self.means[None]).unsqueeze(-1)  # (N, K, D, 1)
        # Mahalanobis term through a triangular solve: |L^{-1}(x - mu)|^2
        z = torch.linalg.solve_triangular(L.expand(len(x), -1, -1, -1), diff, upper=False)
        maha = z.squeeze(-1).pow(2).sum(-1)  # (N, K)
        log_det = 2 * torch.log(L.diagonal(dim1=-2, dim2=-1)).sum(-1)  # log|Sigma_k|, (K,)
        d = self.config.dim
        log_norm = -0.5 * (maha + log_det + d * math.log(2 * math.pi))
        return torch.log_softmax(self.logits, 0) + log_norm

    def log_prob(self, x: Tensor) -> Tensor:
        """(N, D) -> (N,) :math:`\\log p_\\theta(x)` by a log-sum-exp over components."""
        return torch.logsumexp(self.component_log_prob(x), dim=1)

    def loss(self, batch: Tensor | tuple[Tensor, ...]) -> Tensor:
        """Negative log-likelihood per point, :math:`-\\frac1N\\sum_n \\log p_\\theta(x_n)` (nats)."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return -self.log_prob(x).mean()

    @torch.no_grad()
    def sample(
        self, n: int, *, labels: None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """``n`` points (n, D) by ancestral sampling (:meth:`sample_with_components`). The
        mixture is unconditional: ``labels`` must be ``None``."""
        if labels is not None:
            raise ValueError("a GaussianMixture is unconditional: pass labels=None")
        return self.sample_with_components(n, generator=generator)[0]

    @torch.no_grad()
    def sample_with_components(
        self, n: int, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Ancestral sampling: :math:`k \\sim \\pi`, then :math:`x = \\mu_k + L_k\\varepsilon`.

        Returns points (n, D) and their components (n,)."""
        device = self.means.device
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.config.dim, 1, generator=generator, device=device)
        x = self.means[k] + (self.scale_tril[k] @ eps).squeeze(-1)
        return x, k

    @torch.no_grad()
    def responsibilities(self, x: Tensor) -> Tensor:
        """(N, K) posterior :math:`p(k \\mid x_n)`."""
        return self.component_log_prob(x).softmax(1)


def gaussian_kl(mu_p: Tensor, var_p: Tensor, mu_q: Tensor, var_q: Tensor) -> Tensor:
    """KL between diagonal Gaussians, summed over the last dimension (nats).

    .. math:: \\mathrm{KL}(\\mathcal N(\\mu_p, \\sigma_p^2)\\,\\|\\,\\mathcal N(\\mu_q, \\sigma_q^2))
       = \\tfrac12\\left(\\log\\frac{\\sigma_q^2}{\\sigma_p^2}
       + \\frac{\\sigma_p^2 + (\\mu_p - \\mu_q)^2}{\\sigma_q^2} - 1\\right)
    """
    if (torch.as_tensor(var_p) <= 0).any() or (torch.as_tensor(var_q) <= 0).any():
        raise ValueError("variances must be positive")
    kl = 0.5 * (torch.log(var_q / var_p) + (var_p + (mu_p - mu_q) ** 2) / var_q - 1)
    return kl.sum(-1)
