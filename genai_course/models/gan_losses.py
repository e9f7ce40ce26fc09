"""GAN objectives as pure functions (chapters 06 and 07).

Notation of the book: a discriminator outputs a logit :math:`\\ell(x)` and
:math:`D(x) = \\sigma(\\ell(x)) \\in (0, 1)` is its probability that :math:`x` is real; the
generator maps noise :math:`z \\sim p_z` to :math:`G(z)`, whose distribution is :math:`p_g`.
The minimax game of Goodfellow et al. (2014) is

.. math:: \\min_G \\max_D\\; V(D, G) = \\mathbb E_{x \\sim p_\\text{data}}[\\log D(x)]
          + \\mathbb E_{z \\sim p_z}[\\log(1 - D(G(z)))].

For a fixed generator the best discriminator is, pointwise,

.. math:: D^*(x) = \\frac{p_\\text{data}(x)}{p_\\text{data}(x) + p_g(x)},

and plugging it in gives :math:`V(D^*, G) = 2\\,\\mathrm{JS}(p_\\text{data} \\,\\|\\, p_g) - \\log 4`,
minimal (:math:`-\\log 4`) exactly when :math:`p_g = p_\\text{data}`. See
:func:`optimal_discriminator` and :func:`jensen_shannon`.

Every loss here is something to *minimise*, is a mean over the batch, and works on logits
(or critic scores) of any shape; the logarithms are computed from logits through softplus,
:math:`\\log \\sigma(\\ell) = -\\mathrm{softplus}(-\\ell)` and
:math:`\\log(1 - \\sigma(\\ell)) = -\\mathrm{softplus}(\\ell)`, which never takes the log of 0.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "discriminator_loss",
    "generator_loss_nonsaturating",
    "generator_loss_saturating",
    "gradient_penalty",
    "jensen_shannon",
    "optimal_discriminator",
    "wasserstein_critic_loss",
    "wasserstein_generator_loss",
]


# the minimax game


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """The discriminator's loss, :math:`-V(D, G)` estimated on a batch:

    .. math:: \\mathcal L_D = -\\mathbb E_x[\\log D(x)] - \\mathbb E_z[\\log(1 - D(G(z)))],

    i.e. binary cross-entropy with real samples labelled 1 and generated ones labelled 0.
    It is :math:`\\log 4 \\approx 1.386` when D outputs 1/2 everywhere and tends to 0 for a
    perfect discriminator.

    Args:
        real_logits: logits :math:`\\ell(x)` of real samples, any shape (N,) or (N, 1).
        fake_logits: logits :math:`\\ell(G(z))` of generated samples, any shape.

    Returns:
        A scalar tensor in nats.
    """
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real + fake


def generator_loss_saturating(fake_logits: Tensor) -> Tensor:
    """The generator's side of the minimax game, which it minimises:

    .. math:: \\mathcal L_G^{\\text{minimax}} = \\mathbb E_z[\\log(1 - D(G(z)))]
              = -\\mathbb E_z[\\mathrm{softplus}(\\ell(G(z)))] \\;\\le 0.

    It *saturates*: early in training D rejects the fakes confidently (:math:`\\ell \\ll 0`),
    where :math:`\\partial \\mathcal L / \\partial \\ell = -\\sigma(\\ell) \\approx 0`, so the
    generator gets almost no gradient exactly when it needs it most.

    Returns:
        A scalar tensor in nats.
    """
    return -F.softplus(fake_logits).mean()


def generator_loss_nonsaturating(fake_logits: Tensor) -> Tensor:
    """The non-saturating generator loss of Goodfellow et al. (2014):

    .. math:: \\mathcal L_G^{\\text{NS}} = -\\mathbb E_z[\\log D(G(z))]
              = \\mathbb E_z[\\mathrm{softplus}(-\\ell(G(z)))] \\;\\ge 0.

    It has the same fixed point as the minimax loss, but
    :math:`\\partial \\mathcal L / \\partial \\ell = -(1 - \\sigma(\\ell)) \\approx -1` where D
    rejects the fakes, so the generator learns from its worst samples.

    Returns:
        A scalar tensor in nats.
    """
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


# Wasserstein GAN


def wasserstein_critic_loss(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """The critic's loss of WGAN (Arjovsky et al., 2017),

    .. math:: \\mathcal L_f = \\mathbb E_z[f(G(z))] - \\mathbb E_x[f(x)],

    whose negative, maximised over 1-Lipschitz critics f, is the Wasserstein-1 distance
    :math:`W(p_\\text{data}, p_g)`. The scores f are unbounded reals, not probabilities; the
    Lipschitz constraint comes from :func:`gradient_penalty` (WGAN-GP) or weight clipping.

    Returns:
        A scalar tensor (in the critic's units).
    """
    return fake_scores.mean() - real_scores.mean()


def wasserstein_generator_loss(fake_scores: Tensor) -> Tensor:
    """The generator's loss of WGAN, :math:`\\mathcal L_G = -\\mathbb E_z[f(G(z))]`: the
    generator moves its samples towards higher critic scores.

    Returns:
        A scalar tensor.
    """
    return -fake_scores.mean()


def gradient_penalty(
    critic: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The gradient penalty of WGAN-GP (Gulrajani et al., 2017), without its weight
    :math:`\\lambda` (usually 10, applied by the caller):

    .. math:: \\mathrm{GP} = \\mathbb E_{\\hat x}\\big[(\\lVert\\nabla_{\\hat x} f(\\hat x)\\rVert_2
              - 1)^2\\big], \\qquad \\hat x = \\epsilon\\, x + (1 - \\epsilon)\\, \\tilde x,
              \\quad \\epsilon \\sim U[0, 1],

    with one :math:`\\epsilon` per example, drawn as ``torch.rand(N, generator=generator)`` on
    the generator's device (the CPU when ``generator`` is None), so a seeded generator fixes
    the interpolation points. The gradient is taken with ``create_graph=True``, so the penalty
    can be backpropagated into the critic's parameters. ``real`` and ``fake`` are detached
    first: the penalty regularises the critic, not the generator.

    The norm is over all non-batch axes, so any input shape works: (N, 2) points,
    (N, 1, 28, 28) images. Each score must depend on its own example only (no batch norm in the
    critic; layer norm is fine). A critic that needs more inputs, such as the labels of a
    conditional critic, is passed with them bound: ``functools.partial(critic, labels=y)``.

    Args:
        critic: maps (N, ...) inputs to (N,) or (N, 1) scores.
        real: (N, ...) real samples :math:`x`.
        fake: (N, ...) generated samples :math:`\\tilde x = G(z)`, same shape as ``real``.
        generator: random source of :math:`\\epsilon`.

    Returns:
        A scalar tensor.
    """
    if real.shape != fake.shape or real.ndim < 1 or len(real) == 0:
        raise ValueError(
            f"real and fake must be non-empty batches (N, ...) of the same shape, got "
            f"{tuple(real.shape)} and {tuple(fake.shape)}"
        )
    n = real.shape[0]
    device = generator.device if generator is not None else torch.device("cpu")
    eps = torch.rand(n, generator=generator, device=device).to(real.device, real.dtype)
    eps = eps.view(n, *([1] * (real.ndim - 1)))  # broadcast over the non-batch axes
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    scores = critic(x_hat)
    if scores.shape[0] != n or scores.numel() != n:
        raise ValueError(f"the critic must return one score per example, got {tuple(scores.shape)}")
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    norms = grad.flatten(1).norm(2, dim=1) if grad.ndim > 1 else grad.abs()
    return (norms - 1).pow(2).mean()


# the optimal discriminator and the Jensen-Shannon divergence


def optimal_discriminator(p_data: Tensor, p_g: Tensor) -> Tensor:
    """The best discriminator for a fixed generator, pointwise:
    :math:`D^*(x) = p_\\text{data}(x) / (p_\\text{data}(x) + p_g(x))`.

    It maximises :math:`p_\\text{data}\\log D + p_g \\log(1 - D)` at every x. Where both
    densities are 0 any value is optimal; 1/2 is returned there.

    Args:
        p_data, p_g: non-negative densities at the same points, same shape.

    Returns:
        A tensor of that shape with values in [0, 1].
    """
    if p_data.shape != p_g.shape:
        raise ValueError(
            f"p_data and p_g must have the same shape, got {tuple(p_data.shape)} and "
            f"{tuple(p_g.shape)}"
        )
    if (p_data < 0).any() or (p_g < 0).any():
        raise ValueError("densities must be non-negative")
    total = p_data + p_g
    half = torch.full_like(total, 0.5)
    return torch.where(total > 0, p_data / torch.where(total > 0, total, 1), half)


def jensen_shannon(p: Tensor, q: Tensor, dx: float) -> float:
    """Jensen-Shannon divergence, in nats, between two densities tabulated on a regular grid:

    .. math:: \\mathrm{JS}(p \\,\\|\\, q) = \\tfrac12 \\mathrm{KL}(p \\,\\|\\, m)
              + \\tfrac12 \\mathrm{KL}(q \\,\\|\\, m), \\qquad m = \\tfrac12 (p + q),

    each KL integrated as a Riemann sum :math:`\\sum_i p_i \\log(p_i / m_i)\\, \\Delta x`
    (with :math:`0 \\log 0 = 0`). It lies in :math:`[0, \\log 2]` when p and q integrate to 1 on
    the grid, which the caller ensures (a grid wide and fine enough).

    With the optimal discriminator, the minimax objective is
    :math:`V(D^*, G) = 2\\,\\mathrm{JS}(p_\\text{data} \\,\\|\\, p_g) - \\log 4`.

    Args:
        p, q: non-negative density values on the same grid points, same shape.
        dx: the grid's cell size (its volume in more than one dimension), > 0.
    """
    if p.shape != q.shape:
        raise ValueError(
            f"p and q must have the same shape, got {tuple(p.shape)} and {tuple(q.shape)}"
        )
    if dx <= 0:
        raise ValueError(f"dx must be > 0, got {dx}")
    if (p < 0).any() or (q < 0).any():
        raise ValueError("densities must be non-negative")
    p, q = p.double(), q.double()
    m = (p + q) / 2
    safe_m = torch.where(m > 0, m, 1)  # where m = 0, p = q = 0 and xlogy gives 0
    kl_pm = torch.xlogy(p, p / safe_m).sum() * dx
    kl_qm = torch.xlogy(q, q / safe_m).sum() * dx
    return (0.5 * (kl_pm + kl_qm)).item()
