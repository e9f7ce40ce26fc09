"""Variational autoencoders: the ELBO, beta-VAE, class-conditional VAE and the IWAE bound
(chapters 03-04).

A latent-variable model draws a code :math:`z` from a prior :math:`p(z) = \\mathcal N(0, I)` and
an image from a decoder :math:`p_\\theta(x \\mid z)`.  Its likelihood
:math:`p_\\theta(x) = \\int p_\\theta(x \\mid z)\\, p(z)\\, dz` has no closed form, so it is
bounded instead.  Any distribution :math:`q_\\phi(z \\mid x)` over codes (the *encoder*, here
:math:`\\mathcal N(\\mu_\\phi(x), \\mathrm{diag}\\, \\sigma_\\phi^2(x))`) rewrites the integral as
an expectation, :math:`p_\\theta(x) = \\mathbb E_{q}[p_\\theta(x, z) / q_\\phi(z \\mid x)]`, and
Jensen's inequality (the log of a mean is at least the mean of the log) gives the evidence lower
bound

.. math:: \\log p_\\theta(x) \\ge \\mathrm{ELBO}(x)
   = \\mathbb E_{q_\\phi(z \\mid x)}\\big[\\log p_\\theta(x \\mid z)\\big]
   - \\mathrm{KL}\\big(q_\\phi(z \\mid x)\\,\\|\\,p(z)\\big).

The first term rewards reconstructing :math:`x` from its code; the second keeps the codes of all
images close to the prior, so that decoding prior samples gives images.  Writing
:math:`p_\\theta(x, z) = p_\\theta(z \\mid x)\\, p_\\theta(x)` inside the bound shows how loose it is:

.. math:: \\log p_\\theta(x) - \\mathrm{ELBO}(x)
   = \\mathrm{KL}\\big(q_\\phi(z \\mid x)\\,\\|\\,p_\\theta(z \\mid x)\\big) \\ge 0,

so raising the ELBO over :math:`\\phi` moves the encoder towards the true posterior (the
likelihood does not depend on :math:`\\phi`).  Over :math:`\\theta` it raises a lower bound,
not necessarily the likelihood: a step may instead shrink the gap, by moving the true posterior
:math:`p_\\theta(z \\mid x)` towards the Gaussians the encoder can represent.  There is no
log-determinant anywhere: the KL term is between two Gaussians and has the closed form of
:func:`gaussian_kl_standard`.

The expectation is estimated with one sample, drawn by *reparameterisation*
:math:`z = \\mu_\\phi(x) + \\sigma_\\phi(x) \\odot \\varepsilon`, :math:`\\varepsilon \\sim
\\mathcal N(0, I)`: the randomness no longer depends on :math:`\\phi`, so the gradient of the
sampled ELBO flows through :math:`\\mu` and :math:`\\sigma` into the encoder.

A *beta-VAE* (Higgins et al. 2017) minimises
:math:`-\\mathbb E_q[\\log p_\\theta(x \\mid z)] + \\beta\\,\\mathrm{KL}`; :math:`\\beta > 1`
trades reconstructions for smoother, more disentangled codes.  Since the KL is non-negative, for
:math:`\\beta \\ge 1` minus the objective is still a lower bound on the log-likelihood,
:math:`\\log p_\\theta(x) \\ge \\mathrm{ELBO} \\ge \\mathbb E_q[\\log p_\\theta(x \\mid z)] -
\\beta\\,\\mathrm{KL}`, a looser one than the ELBO (:math:`\\beta = 1`); :math:`\\beta < 1` gives
no bound.  A *class-conditional* VAE gives the label :math:`y` (one-hot) to both
networks, :math:`q_\\phi(z \\mid x, y)` and :math:`p_\\theta(x \\mid z, y)`, and bounds
:math:`\\log p_\\theta(x \\mid y)`: keeping :math:`z` and changing :math:`y` is meant to redraw
the same handwriting style as another digit.  This is the M2 model of Kingma et al. (2014) with
the label always observed; the conditional VAE of Sohn et al. (2015) also conditions the prior,
:math:`p_\\theta(z \\mid y)`, which here stays :math:`\\mathcal N(0, I)`.

To *measure* the likelihood, the importance-weighted bound (IWAE, Burda et al. 2016) averages
:math:`k` weights :math:`w_i = p_\\theta(x, z_i) / q_\\phi(z_i \\mid x)`, :math:`z_i \\sim q_\\phi`,
inside the log:

.. math:: \\mathcal L_k(x) = \\mathbb E\\Big[\\log \\frac1k \\sum_{i=1}^k w_i\\Big], \\qquad
   \\mathrm{ELBO} = \\mathcal L_1 \\le \\mathcal L_k \\le \\mathcal L_{k+1} \\le \\log p_\\theta(x),

and :math:`\\mathcal L_k \\to \\log p_\\theta(x)` as :math:`k \\to \\infty`.  The negative
log-likelihood is reported as :math:`-\\mathcal L_k` with :math:`k = 1000` (:func:`iwae_nll`),
an estimate that errs on the side of a worse (higher) NLL.

Shapes: N or B batch, C channels, H = W = ``image_size``, D = C*H*W pixels, d ``latent_dim``,
K ``num_classes``.  Log-likelihoods and KLs are in nats, summed over pixels or latent dims.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checks import check_image_batch, check_values
from ..config import Config, check_choice, check_positive

ARCHS = ("mlp", "conv")
LIKELIHOODS = ("bernoulli", "gaussian")
_LOG_2PI = math.log(2 * math.pi)


@dataclass
class VAEConfig(Config):
    """What a :class:`VAE` is built from; JSON-serialisable, so checkpoints can rebuild it."""

    arch: str = "mlp"  # mlp | conv
    image_size: int = 28  # H = W; the conv arch halves it twice, so it must be divisible by 4
    channels: int = 1
    latent_dim: int = 16  # 2 for the latent maps of chapter 03; 16 reconstructs MNIST well
    hidden: int = 400  # MLP width, the classic choice of Kingma & Welling for MNIST
    conv_channels: tuple[int, int] = (32, 64)  # two stride-2 stages of the conv arch
    likelihood: str = "bernoulli"  # bernoulli: decoder gives logits; gaussian: a mean in [0, 1]
    beta: float = 1.0  # weight of the KL term; only 1.0 makes the loss a bound on -log p(x)
    num_classes: int = 0  # 0: unconditional; K > 0: encoder and decoder see a one-hot label
    gaussian_std: float = 0.1  # fixed std of the Gaussian decoder, in pixel units of [0, 1]

    def validate(self) -> None:
        check_choice(self, "arch", ARCHS)
        check_choice(self, "likelihood", LIKELIHOODS)
        check_positive(self, "image_size", "channels", "latent_dim", "hidden")
        if len(self.conv_channels) != 2 or min(self.conv_channels) < 1:
            raise ValueError(f"conv_channels must be two positive ints, got {self.conv_channels}")
        if self.arch == "conv" and self.image_size % 4:
            raise ValueError(
                f"the conv arch halves the image twice, so image_size must be divisible by 4, "
                f"got {self.image_size}"
            )
        check_positive(self, "num_classes", "beta", minimum=0)  # 0: unconditional, no KL term
        check_positive(self, "gaussian_std", minimum=0, strict=True)


# ----------------------------------------------------------------------------------------------
# densities and divergences (pure functions)


def gaussian_kl_standard(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL from a diagonal Gaussian to the standard normal, summed over the last dim (nats).

    .. math:: \\mathrm{KL}\\big(\\mathcal N(\\mu, \\mathrm{diag}\\,\\sigma^2)\\,\\|\\,
       \\mathcal N(0, I)\\big) = \\tfrac12 \\sum_{j=1}^d
       \\big(\\mu_j^2 + \\sigma_j^2 - \\log \\sigma_j^2 - 1\\big), \\qquad
       \\log \\sigma^2 = \\texttt{logvar}.

    mu, logvar (..., d) -> (...,), e.g. (B, d) -> (B,).
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).sum(-1)


def aggregate_posterior_moments(mu: Tensor, logvar: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation, per latent dim, of the aggregate posterior
    :math:`q(z) = \\frac1N \\sum_n \\mathcal N(z; \\mu_n, \\mathrm{diag}\\,\\sigma_n^2)`.

    The mixture's moments follow from the law of total variance,

    .. math:: \\mathbb E_q[z_j] = \\frac1N \\sum_n \\mu_{nj}, \\qquad
       \\mathrm{Var}_q[z_j] = \\frac1N \\sum_n \\sigma_{nj}^2
       + \\frac1N \\sum_n \\big(\\mu_{nj} - \\mathbb E_q[z_j]\\big)^2,

    the spread within each posterior plus the spread of the posterior means.  Averaged over the
    data, the ELBO's KL term is :math:`I_q(x; z) + \\mathrm{KL}(q(z) \\,\\|\\, p(z))` (Hoffman and
    Johnson 2016), so training keeps :math:`q(z)` near the prior, with moments near 0 and 1, but
    does not force it there; an autoencoder's codes sit at any scale.  ``logvar`` may be
    ``-inf`` for point masses (an autoencoder's codes).
    mu, logvar (N, d) -> (mean (d,), std (d,)).
    """
    if mu.ndim != 2 or mu.shape != logvar.shape or len(mu) == 0:
        raise ValueError(
            f"expected mu and logvar of one shape (N, d), N >= 1, got {tuple(mu.shape)} and "
            f"{tuple(logvar.shape)}"
        )
    mean = mu.mean(0)
    var = logvar.exp().mean(0) + (mu - mean).pow(2).mean(0)
    return mean, var.sqrt()


def log_normal_diag(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """Log-density of a diagonal Gaussian, summed over the last dim (nats).

    .. math:: \\log \\mathcal N(z; \\mu, \\mathrm{diag}\\,\\sigma^2) = -\\tfrac12 \\sum_{j=1}^d
       \\Big(\\log 2\\pi + \\log \\sigma_j^2 + \\frac{(z_j - \\mu_j)^2}{\\sigma_j^2}\\Big).

    z, mu, logvar broadcastable to (..., d) -> (...,).  ``mu = logvar = 0`` gives the prior
    :math:`\\log p(z)`.
    """
    mu, logvar = torch.as_tensor(mu, dtype=z.dtype), torch.as_tensor(logvar, dtype=z.dtype)
    return -0.5 * (_LOG_2PI + logvar + (z - mu).pow(2) * torch.exp(-logvar)).sum(-1)


def bernoulli_log_likelihood(logits: Tensor, x: Tensor) -> Tensor:
    """Bernoulli log-likelihood of pixels given decoder logits, summed over pixels (nats).

    .. math:: \\log p(x \\mid z) = \\sum_{p=1}^D x_p \\log \\pi_p + (1 - x_p) \\log(1 - \\pi_p),
       \\qquad \\pi = \\mathrm{sigmoid}(\\texttt{logits}),

    computed stably as minus ``binary_cross_entropy_with_logits``.  logits, x (B, ...) -> (B,).
    For binary pixels this is a log-probability; for grey levels in [0, 1] it is a
    cross-entropy, not a normalised density, bounded below by the pixels' binary entropy
    (``bernoulli_nll_floor``); the figures VAE papers report are on binarised digits.
    """
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


def bernoulli_nll_floor(x: Tensor) -> Tensor:
    """The smallest Bernoulli "NLL" any decoder can give grey-level pixels, summed over pixels
    (nats): the binary entropy of each pixel value,

    .. math:: \\min_{\\pi} -\\sum_p \\big(x_p \\log \\pi_p + (1 - x_p) \\log(1 - \\pi_p)\\big)
       = \\sum_{p=1}^D H_2(x_p), \\qquad H_2(u) = -u \\log u - (1 - u) \\log(1 - u),

    reached at :math:`\\pi = x` (the cross-entropy of a pixel is minimised by its own value).
    It is 0 only for binary pixels, so on grey-level digits a VAE's cross-entropy has this floor
    and cannot be compared with likelihoods of binarised digits.  x (B, ...) in [0, 1] -> (B,).
    """
    if not isinstance(x, Tensor) or x.ndim < 2 or not x.is_floating_point():
        got = f"{x.dtype} of shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"expected a float batch (B, ...) of pixels in [0, 1], got {got}")
    if check_values() and bool(((x < 0) | (x > 1)).any()):
        raise ValueError("expected pixels in [0, 1] (a Bernoulli mean), got values outside it")
    x = x.flatten(1)
    return -(torch.xlogy(x, x) + torch.xlogy(1 - x, 1 - x)).sum(1)


def gaussian_log_likelihood(mean: Tensor, x: Tensor, std: float | Tensor) -> Tensor:
    """Log-density of pixels under :math:`\\mathcal N(\\text{mean}, \\text{std}^2 I)`, summed over
    pixels, with its normalising constant (nats).

    .. math:: \\log p(x \\mid z) = -\\sum_{p=1}^D \\Big(\\frac{(x_p - m_p)^2}{2 s^2}
       + \\log s + \\tfrac12 \\log 2\\pi\\Big).

    mean, x (B, ...) -> (B,); ``std`` is a positive float or a tensor broadcastable to x.  It
    is a density over real-valued pixels, so it can exceed 0 (small ``std``).
    """
    std = torch.as_tensor(std, dtype=mean.dtype, device=mean.device)
    log_px = -0.5 * ((x - mean) / std).pow(2) - torch.log(std) - 0.5 * _LOG_2PI
    return log_px.expand_as(x).flatten(1).sum(1)


def _standard_normal(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None):
    """N(0, I) noise of ``shape`` with ``like``'s dtype and device, drawn from ``generator``
    wherever it lives (a CPU generator gives the same numbers for a CUDA model)."""
    device = like.device if generator is None else generator.device
    eps = torch.randn(shape, generator=generator, dtype=like.dtype, device=device)
    return eps.to(like.device)


# ----------------------------------------------------------------------------------------------
# the model


class VAE(nn.Module):
    """A Gaussian-encoder VAE with an MLP or a small conv encoder and decoder.

    ``encode`` gives :math:`(\\mu_\\phi, \\log\\sigma_\\phi^2)`; ``decode`` gives the decoder's
    parameters as images: logits of :math:`p_\\theta(x \\mid z)` (Bernoulli) or its mean in
    [0, 1] through a sigmoid (Gaussian, with the fixed ``gaussian_std``).  The MLP arch is
    flatten -> hidden -> ReLU -> hidden -> ReLU -> (mu, logvar) and its mirror; the conv arch
    is two stride-2 convs -> flatten -> linear and, back, linear -> two stride-2 transposed
    convs.  With ``num_classes = K > 0`` the one-hot label is appended to the encoder's flat
    features and to :math:`z`.  ``loss(batch)`` is what :class:`genai_course.train.Trainer`
    minimises.
    """

    def __init__(self, config: VAEConfig | None = None):
        super().__init__()
        self.config = c = config or VAEConfig()
        d, k, s = c.latent_dim, c.num_classes, c.image_size
        pixels = c.channels * s * s
        if c.arch == "mlp":
            self.enc_features = nn.Flatten()  # (B, D)
            self.enc_head = nn.Sequential(
                nn.Linear(pixels + k, c.hidden),
                nn.ReLU(),
                nn.Linear(c.hidden, c.hidden),
                nn.ReLU(),
                nn.Linear(c.hidden, 2 * d),  # (B, 2d): mu and logvar
            )
            self.dec_body = nn.Sequential(
                nn.Linear(d + k, c.hidden),
                nn.ReLU(),
                nn.Linear(c.hidden, c.hidden),
                nn.ReLU(),
                nn.Linear(c.hidden, pixels),  # (B, D)
                nn.Unflatten(1, (c.channels, s, s)),  # (B, C, H, W)
            )
        else:
            c1, c2 = c.conv_channels
            q = s // 4
            # kernel 4, stride 2, padding 1 halves (and its transpose doubles) any even size
            self.enc_features = nn.Sequential(
                nn.Conv2d(c.channels, c1, 4, stride=2, padding=1),
                nn.ReLU(),  # (B, c1, H/2, W/2)
                nn.Conv2d(c1, c2, 4, stride=2, padding=1),
                nn.ReLU(),  # (B, c2, H/4, W/4)
                nn.Flatten(),  # (B, c2 * H/4 * W/4)
            )
            self.enc_head = nn.Linear(c2 * q * q + k, 2 * d)
            self.dec_body = nn.Sequential(
                nn.Linear(d + k, c2 * q * q),
                nn.ReLU(),
                nn.Unflatten(1, (c2, q, q)),  # (B, c2, H/4, W/4)
                nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1),
                nn.ReLU(),  # (B, c1, H/2, W/2)
                nn.ConvTranspose2d(c1, c.channels, 4, stride=2, padding=1),  # (B, C, H, W)
            )

    # -- checks -------------------------------------------------------------------------------

    def _check_images(self, x: Tensor) -> None:
        c = self.config
        check_image_batch(x, (c.channels, c.image_size, c.image_size))

    def _one_hot(self, y: Tensor | int | None, n: int, like: Tensor) -> Tensor | None:
        """(n, K) one-hot labels in ``like``'s dtype, or None for an unconditional model (which
        ignores ``y``, so that (x, y) batches train it unchanged)."""
        k = self.config.num_classes
        if k == 0:
            return None
        if y is None:
            raise ValueError(
                f"this VAE is class-conditional (num_classes={k}): pass labels y of shape "
                f"(N,) with values in [0, {k})"
            )
        y = torch.as_tensor(y, device=like.device)
        if y.ndim == 0:
            y = y.expand(n)
        if y.shape != (n,) or y.is_floating_point() or y.dtype == torch.bool:
            raise ValueError(
                f"expected integer labels y of shape ({n},), got {tuple(y.shape)} {y.dtype}"
            )
        if len(y) and check_values() and (y.min() < 0 or y.max() >= k):
            raise ValueError(
                f"labels must be in [0, {k}) for num_classes={k}, "
                f"got values in [{int(y.min())}, {int(y.max())}]"
            )
        return F.one_hot(y.long(), k).to(like.dtype)

    # -- the two networks -----------------------------------------------------------------------

    def encode(self, x: Tensor, y: Tensor | int | None = None) -> tuple[Tensor, Tensor]:
        """Images (B, C, H, W) [and labels (B,)] -> posterior parameters mu, logvar, each (B, d)."""
        self._check_images(x)
        h = self.enc_features(x)  # (B, F)
        onehot = self._one_hot(y, len(x), h)
        if onehot is not None:
            h = torch.cat([h, onehot], dim=1)  # (B, F + K)
        mu, logvar = self.enc_head(h).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: Tensor, y: Tensor | int | None = None) -> Tensor:
        """Codes (B, d) [and labels (B,)] -> decoder output (B, C, H, W): logits (Bernoulli)
        or the mean in [0, 1] (Gaussian)."""
        d = self.config.latent_dim
        if z.ndim != 2 or z.shape[1] != d:
            raise ValueError(f"expected codes z of shape (B, {d}), got {tuple(z.shape)}")
        onehot = self._one_hot(y, len(z), z)
        if onehot is not None:
            z = torch.cat([z, onehot], dim=1)  # (B, d + K)
        out = self.dec_body(z)
        return out if self.config.likelihood == "bernoulli" else torch.sigmoid(out)

    def reparameterize(
        self, mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """:math:`z = \\mu + \\exp(\\tfrac12 \\log\\sigma^2) \\odot \\varepsilon`,
        :math:`\\varepsilon \\sim \\mathcal N(0, I)`; (B, d) -> (B, d), differentiable in mu, logvar."""
        return mu + torch.exp(0.5 * logvar) * _standard_normal(mu.shape, mu, generator)

    def log_likelihood(self, x: Tensor, decoded: Tensor) -> Tensor:
        """:math:`\\log p_\\theta(x \\mid z)` (B,) in nats from images x and ``decode(z)``, both
        (B, C, H, W)."""
        self._check_images(x)
        if self.config.likelihood == "gaussian":
            return gaussian_log_likelihood(decoded, x, self.config.gaussian_std)
        # One reduction and a host sync per call; worth it, since grey levels outside [0, 1]
        # give a "likelihood" that is silently meaningless rather than an error.
        if check_values() and bool(((x < 0) | (x > 1)).any()):
            raise ValueError(
                "a Bernoulli decoder needs pixels in [0, 1], got values in "
                f"[{x.min().item():.3g}, {x.max().item():.3g}]"
            )
        return bernoulli_log_likelihood(decoded, x)

    def mean_image(self, decoded: Tensor) -> Tensor:
        """The decoder's mean :math:`\\mathbb E[x \\mid z]` in [0, 1], (B, C, H, W): sigmoid of
        the logits (Bernoulli) or the Gaussian mean itself."""
        return torch.sigmoid(decoded) if self.config.likelihood == "bernoulli" else decoded

    # -- objectives ---------------------------------------------------------------------------

    def forward(
        self, x: Tensor, y: Tensor | int | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One pass through the VAE: (decoder output for a posterior sample, mu, logvar)."""
        mu, logvar = self.encode(x, y)
        z = self.reparameterize(mu, logvar, generator)
        return self.decode(z, y), mu, logvar

    def _terms(
        self, x: Tensor, y: Tensor | int | None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """One-sample estimate of :math:`\\log p_\\theta(x \\mid z)` and the exact KL, each (B,)."""
        decoded, mu, logvar = self(x, y, generator)
        # float32 even under bf16 autocast: exp(logvar) and sums over 784 pixels lose digits
        log_px = self.log_likelihood(x.float(), decoded.float())
        kl = gaussian_kl_standard(mu.float(), logvar.float())
        return log_px, kl

    def elbo(
        self, x: Tensor, y: Tensor | int | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Per-example ELBO (B,) in nats, :math:`\\log p_\\theta(x \\mid z) - \\mathrm{KL}(q_\\phi(z
        \\mid x)\\,\\|\\,p(z))` with one reparameterised sample :math:`z`; always with
        :math:`\\beta = 1`, so it is an (unbiased estimate of a) lower bound on
        :math:`\\log p_\\theta(x)`."""
        log_px, kl = self._terms(x, y, generator)
        return log_px - kl

    def loss(
        self, batch: Tensor | tuple[Tensor, ...] | list[Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The (beta-)VAE loss of a batch ``x`` or ``(x, y)``, per example (nats):

        .. math:: \\mathcal L = \\frac1B \\sum_b \\Big(-\\log p_\\theta(x_b \\mid z_b)
           + \\beta\\, \\mathrm{KL}\\big(q_\\phi(z \\mid x_b)\\,\\|\\,p(z)\\big)\\Big),
           \\qquad z_b = \\mu_\\phi(x_b) + \\sigma_\\phi(x_b) \\odot \\varepsilon_b,

        the negative ELBO when :math:`\\beta = 1`.  Logs ``recon`` (the mean reconstruction
        NLL :math:`-\\log p_\\theta(x \\mid z)`, positive) and ``kl`` (the mean KL).  An
        unconditional model ignores the labels of an ``(x, y)`` batch.
        """
        if isinstance(batch, (tuple, list)):
            x, y = batch[0], (batch[1] if len(batch) > 1 else None)
        else:
            x, y = batch, None
        log_px, kl = self._terms(x, y)
        recon, kl = -log_px.mean(), kl.mean()
        return recon + self.config.beta * kl, {"recon": recon.detach(), "kl": kl.detach()}

    # -- using a trained model ------------------------------------------------------------------

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        labels: Tensor | int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """``n`` images (n, C, H, W) in [0, 1]: :math:`z \\sim \\mathcal N(0, I)`, then the
        decoder's *mean* :math:`\\mathbb E[x \\mid z]` (for a Bernoulli decoder the pixel
        probabilities, which look far better than a binary draw).  A conditional model needs
        ``labels``: one label for all, or (n,) labels."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        like = next(self.parameters())
        z = _standard_normal((n, self.config.latent_dim), like, generator)
        return self.mean_image(self.decode(z, labels))

    @torch.no_grad()
    def reconstruct(self, x: Tensor, y: Tensor | int | None = None) -> Tensor:
        """Images (B, C, H, W) -> their reconstructions in [0, 1], decoding the posterior mean
        :math:`\\mu_\\phi(x)` (no sampling noise)."""
        mu, _ = self.encode(x, y)
        return self.mean_image(self.decode(mu, y))


# ----------------------------------------------------------------------------------------------
# the importance-weighted bound and the NLL


def iwae_bound(
    model: nn.Module,
    x: Tensor,
    k: int,
    y: Tensor | None = None,
    batch_size: int = 8192,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Per-example importance-weighted lower bound :math:`\\mathcal L_k(x)` (N,) in nats.

    .. math:: \\mathcal L_k(x) = \\log \\frac1k \\sum_{i=1}^k
       \\frac{p_\\theta(x \\mid z_i)\\, p(z_i)}{q_\\phi(z_i \\mid x)}, \\qquad
       z_i \\sim q_\\phi(z \\mid x),

    one draw of the estimator per example, computed as a log-sum-exp of the log-weights.
    ``k = 1`` is a one-sample ELBO.  The model needs only ``encode(x[, y]) -> (mu, logvar)``,
    ``decode(z[, y])`` and ``log_likelihood(x, decoded) -> (B,)`` with a standard-normal prior,
    so any such module works (the tests use a linear-Gaussian model whose ``log p(x)`` is known).

    Args:
        model: e.g. a :class:`VAE`; put in eval mode for the call, then restored.
        x: (N, ...) data, e.g. images (N, C, H, W); moved chunk by chunk to the model's device.
        k: importance samples per example, >= 1.
        y: (N,) labels for a conditional model.
        batch_size: decoder evaluations (examples x samples) per forward pass; memory grows as
            ``batch_size * D``.  The samples of an example are split over chunks when
            ``k > batch_size``, and the log-sum-exp accumulated across them.
        generator: source of the samples, for reproducible estimates.
    """
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if y is not None and len(y) != len(x):
        raise ValueError(f"x has {len(x)} examples but y has {len(y)} labels")
    k = int(k)
    param = next(model.parameters(), None)
    device = param.device if param is not None else x.device
    was_training = model.training
    model.eval()
    bounds = []
    try:
        with torch.no_grad():
            per_chunk = max(1, min(len(x), batch_size // k))  # examples per chunk
            for start in range(0, len(x), per_chunk):
                xb = x[start : start + per_chunk].to(device)
                yb = None if y is None else y[start : start + per_chunk].to(device)
                bounds.append(
                    _iwae_chunk(model, xb, yb, k, max(1, batch_size // len(xb)), generator)
                )
    finally:
        model.train(was_training)
    if not bounds:
        return x.new_zeros(0)
    return torch.cat(bounds)


def _iwae_chunk(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None,
    k: int,
    samples_per_pass: int,
    generator: torch.Generator | None,
) -> Tensor:
    """:math:`\\mathcal L_k` (B,) for one chunk of examples, samples drawn in groups."""
    b = len(x)
    mu, logvar = model.encode(x) if y is None else model.encode(x, y)  # (B, d)
    log_sum = torch.full((b,), float("-inf"), dtype=mu.dtype, device=mu.device)
    for done in range(0, k, samples_per_pass):
        s = min(samples_per_pass, k - done)
        eps = _standard_normal((s, *mu.shape), mu, generator)  # (s, B, d)
        z = mu + torch.exp(0.5 * logvar) * eps
        # sample-major flattening: row j*B + i is sample j of example i
        zf = z.reshape(s * b, -1)
        xs = x.repeat(s, *([1] * (x.ndim - 1)))  # (s*B, ...)
        decoded = model.decode(zf) if y is None else model.decode(zf, y.repeat(s))
        log_px = model.log_likelihood(xs, decoded).reshape(s, b)
        log_w = log_px + log_normal_diag(z, 0.0, 0.0) - log_normal_diag(z, mu, logvar)  # (s, B)
        log_sum = torch.logaddexp(log_sum, torch.logsumexp(log_w, dim=0))
    return log_sum - math.log(k)


def iwae_nll(
    model: nn.Module,
    x: Tensor,
    k: int = 1000,
    y: Tensor | None = None,
    batch_size: int = 8192,
    generator: torch.Generator | None = None,
) -> dict[str, float | int]:
    """Importance-sampled negative log-likelihood of a data set, :math:`-\\frac1N \\sum_n
    \\mathcal L_k(x_n)`, an estimate that errs high (the bound is below :math:`\\log p`).

    Returns ``{"nll_nats": ..., "bits_per_dim": ..., "k": k, "n": N}`` with bits per dimension
    :math:`\\text{nats} / (D \\ln 2)`, D = C*H*W.  For a Bernoulli decoder on grey pixels it is
    a cross-entropy with the floor ``bernoulli_nll_floor`` (papers report binarised digits);
    for a Gaussian decoder it is a density over pixels in
    [0, 1] (add 8 bits/dim to compare with discrete 8-bit models).  Compare like with like.
    """
    if len(x) == 0:
        raise ValueError("x must hold at least one example")
    bound = iwae_bound(model, x, k, y=y, batch_size=batch_size, generator=generator)
    nll = -bound.double().mean().item()
    dims = x[0].numel()
    return {"nll_nats": nll, "bits_per_dim": nll / (dims * math.log(2)), "k": int(k), "n": len(x)}


# ----------------------------------------------------------------------------------------------
# posterior collapse: active units, KL warm-up and free bits


def latent_activity(mu: Tensor) -> Tensor:
    """The activity of each latent unit (Burda et al. 2016): the variance over the data of its
    posterior mean,

    .. math:: A_u = \\mathrm{Cov}_x\\big(\\mathbb E_{q_\\phi(z \\mid x)}[z_u]\\big)
       = \\mathrm{Var}_x\\big(\\mu_{\\phi, u}(x)\\big).

    A unit whose posterior mean does not move with :math:`x` carries no information about the
    image: its posterior is the same for every digit, and since the KL term pulls it onto the
    prior, :math:`q(z_u \\mid x) \\approx \\mathcal N(0, 1)` (a *collapsed* unit).
    mu (N, d) -> (d,).
    """
    if not isinstance(mu, Tensor) or mu.ndim != 2 or len(mu) < 2:
        shape = tuple(mu.shape) if isinstance(mu, Tensor) else type(mu).__name__
        raise ValueError(f"expected posterior means mu of shape (N, d), N >= 2, got {shape}")
    return mu.double().var(0, unbiased=False).to(mu.dtype)


def active_units(mu: Tensor, threshold: float = 1e-2) -> int:
    """How many latent units have :func:`latent_activity` above ``threshold`` (Burda et al.
    count a unit as active above :math:`10^{-2}`). mu (N, d) -> an int in [0, d]."""
    return int((latent_activity(mu) > threshold).sum())


def free_bits_kl(mu: Tensor, logvar: Tensor, free_bits: float) -> Tensor:
    """The KL term with *free bits* (Kingma et al. 2016), one group per latent dim:

    .. math:: \\sum_{j=1}^d \\max\\Big(\\lambda,\\;
       \\frac1B \\sum_b \\mathrm{KL}\\big(q_\\phi(z_j \\mid x_b)\\,\\|\\,p(z_j)\\big)\\Big),

    a scalar (nats per example). Below :math:`\\lambda` nats (``free_bits``), averaged over the
    batch, a dimension's KL costs nothing, so the gradient no longer pushes it onto the prior:
    each unit may carry up to :math:`\\lambda` nats for free. :math:`\\lambda = 0` is the
    ordinary mean KL. With :math:`\\lambda > 0` the objective is no bound on
    :math:`\\log p(x)`; evaluate with the ELBO.  mu, logvar (B, d) -> ().
    """
    if free_bits < 0:
        raise ValueError(f"free_bits must be >= 0 nats, got {free_bits}")
    per_dim = 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).mean(0)  # (d,) batch-mean KL
    return per_dim.clamp(min=free_bits).sum()


@dataclass
class AnnealedVAELoss:
    """A VAE training loss against posterior collapse: KL warm-up and free bits.

    .. math:: \\mathcal L_s = \\frac1B \\sum_b -\\log p_\\theta(x_b \\mid z_b)
       + \\beta\\, w_s \\sum_j \\max\\big(\\lambda, \\overline{\\mathrm{KL}}_j\\big), \\qquad
       w_s = \\min(1, s / S),

    at training step :math:`s`, with :math:`\\beta` the model's ``config.beta`` (1 for the
    ELBO): the KL weight rises linearly from 0 to :math:`\\beta` over
    ``warmup_steps`` = :math:`S` (KL annealing, Bowman et al. 2016; Sønderby et al. 2016
    call it warm-up), so the decoder learns to use the codes before the KL term pulls them
    onto the prior, and each dimension's batch-mean KL :math:`\\overline{\\mathrm{KL}}_j` below
    ``free_bits`` = :math:`\\lambda` nats is not penalised (:func:`free_bits_kl`).
    ``AnnealedVAELoss()`` is the model's own ``loss`` (the negative ELBO for :math:`\\beta = 1`).
    In eval mode (validation) it is always the negative ELBO, so ``val_loss`` stays a bound
    whatever the schedule and :math:`\\beta`.

    It needs the step: pass the same object as ``loss_fn=`` and in ``callbacks=`` of the
    :class:`~genai_course.train.Trainer`, which then tells it the step (also after a resume).
    Logs ``recon``, ``kl`` (the plain mean KL) and ``kl_weight`` (:math:`\\beta\\, w_s`).
    """

    warmup_steps: int = 0
    free_bits: float = 0.0
    step: int = 0

    def __post_init__(self) -> None:
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.free_bits < 0:
            raise ValueError(f"free_bits must be >= 0 nats, got {self.free_bits}")

    def kl_weight(self, step: int | None = None) -> float:
        """:math:`w_s = \\min(1, s / S)`, 1 without warm-up."""
        s = self.step if step is None else step
        return 1.0 if self.warmup_steps == 0 else min(1.0, s / self.warmup_steps)

    def __call__(self, model: VAE, batch: Tensor | tuple[Tensor, ...] | list[Tensor]):
        if isinstance(batch, (tuple, list)):
            x, y = batch[0], (batch[1] if len(batch) > 1 else None)
        else:
            x, y = batch, None
        decoded, mu, logvar = model(x, y)
        recon = -model.log_likelihood(x.float(), decoded.float()).mean()
        mu, logvar = mu.float(), logvar.float()
        kl = gaussian_kl_standard(mu, logvar).mean()
        if model.training:
            weight = model.config.beta * self.kl_weight()
            loss = recon + weight * free_bits_kl(mu, logvar, self.free_bits)
        else:
            weight, loss = 1.0, recon + kl
        logs = {"recon": recon.detach(), "kl": kl.detach(), "kl_weight": torch.tensor(weight)}
        return loss, logs

    # the Trainer's callback hooks: only the step matters here
    def on_train_start(self, trainer) -> None:
        self.step = trainer.step

    def on_step_end(self, trainer) -> None:
        self.step = trainer.step

    def on_eval_end(self, trainer, metrics) -> None: ...
    def on_train_end(self, trainer) -> None: ...
    def on_checkpoint(self, trainer, path) -> None: ...


# ----------------------------------------------------------------------------------------------
# a latent-variable model whose likelihood and posterior are exact: probabilistic PCA


class ProbabilisticPCA(nn.Module):
    """Probabilistic PCA (Tipping and Bishop 1999) with an affine Gaussian encoder: a model on
    which every quantity of this module can be checked against its exact value.

    .. math:: p(z) = \\mathcal N(0, I_d), \\quad p(x \\mid z) = \\mathcal N(Wz + b, s^2 I_D)
       \\;\\Rightarrow\\; p(x) = \\mathcal N(b,\\, WW^\\top + s^2 I_D), \\quad
       p(z \\mid x) = \\mathcal N\\big(M^{-1} W^\\top (x - b),\\, s^2 M^{-1}\\big),

    with :math:`M = W^\\top W + s^2 I_d`, and the encoder
    :math:`q(z \\mid x) = \\mathcal N(A(x - b), \\mathrm{diag}\\, e^{\\texttt{logvar}})`.
    ``encode``, ``decode`` and ``log_likelihood`` are what :func:`iwae_bound` needs;
    :meth:`log_marginal`, :meth:`exact_elbo` and :meth:`posterior_kl` are in closed form, so
    :math:`\\log p(x) = \\mathrm{ELBO}(x) + \\mathrm{KL}(q \\,\\|\\, p(z \\mid x))` can be checked.
    :meth:`exact_encoder` gives the A and logvar of the true posterior (exact when W's columns
    are orthogonal, so that :math:`M` and the posterior covariance are diagonal).

    W (D, d), b (D,), s > 0, A (d, D), logvar (d,); all float64 is best for the checks.
    """

    def __init__(self, W: Tensor, b: Tensor, s: float, A: Tensor, logvar: Tensor):
        super().__init__()
        D, d = W.shape
        if b.shape != (D,) or A.shape != (d, D) or logvar.shape != (d,) or s <= 0:
            raise ValueError(
                f"expected W (D, d), b (D,), A (d, D), logvar (d,) and s > 0; got W "
                f"{tuple(W.shape)}, b {tuple(b.shape)}, A {tuple(A.shape)}, logvar "
                f"{tuple(logvar.shape)}, s {s}"
            )
        self.W, self.b, self.s, self.A = W, b, float(s), A
        self.logvar = nn.Parameter(logvar)  # a parameter, so iwae_bound finds the device

    @staticmethod
    def exact_encoder(W: Tensor, s: float) -> tuple[Tensor, Tensor]:
        """(A, logvar) of the true posterior's mean map and the log of its variances (the
        diagonal of :math:`s^2 M^{-1}`), A (d, D), logvar (d,)."""
        M = W.T @ W + s**2 * torch.eye(W.shape[1], dtype=W.dtype)
        return torch.linalg.solve(M, W.T), torch.log(s**2 * torch.linalg.inv(M).diagonal())

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, D) -> mu, logvar, each (B, d)."""
        mu = (x - self.b) @ self.A.T
        return mu, self.logvar.expand_as(mu)

    def decode(self, z: Tensor) -> Tensor:
        """z (B, d) -> the mean of p(x | z), (B, D)."""
        return z @ self.W.T + self.b

    def log_likelihood(self, x: Tensor, mean: Tensor) -> Tensor:
        """:math:`\\log p(x \\mid z)` (B,) from x and ``decode(z)``, both (B, D)."""
        return gaussian_log_likelihood(mean, x, self.s)

    def log_marginal(self, x: Tensor) -> Tensor:
        """The exact :math:`\\log p(x)` (B,), x (B, D)."""
        cov = self.W @ self.W.T + self.s**2 * torch.eye(len(self.b), dtype=x.dtype)
        return torch.distributions.MultivariateNormal(self.b, covariance_matrix=cov).log_prob(x)

    def exact_elbo(self, x: Tensor) -> Tensor:
        """:math:`\\mathbb E_q[\\log p(x \\mid z)] - \\mathrm{KL}(q \\,\\|\\, p(z))` in closed form
        (B,): the expected squared error adds :math:`\\mathrm{tr}(W \\Sigma_q W^\\top) / 2s^2`."""
        mu, logvar = self.encode(x)
        fit = gaussian_log_likelihood(self.decode(mu), x, self.s)
        spread = (logvar.exp() * self.W.pow(2).sum(0)).sum(-1) / (2 * self.s**2)
        return fit - spread - gaussian_kl_standard(mu, logvar)

    def posterior_kl(self, x: Tensor) -> Tensor:
        """:math:`\\mathrm{KL}(q(z \\mid x) \\,\\|\\, p(z \\mid x))` (B,) in closed form, the
        true posterior with its full covariance."""
        d = self.W.shape[1]
        M = self.W.T @ self.W + self.s**2 * torch.eye(d, dtype=x.dtype)
        post_mean = torch.linalg.solve(M, self.W.T @ (x - self.b).T).T  # (B, d)
        post_cov = self.s**2 * torch.linalg.inv(M)
        mu, logvar = self.encode(x)
        q = torch.distributions.MultivariateNormal(mu, torch.diag_embed(logvar.exp()))
        p = torch.distributions.MultivariateNormal(post_mean, covariance_matrix=post_cov)
        return torch.distributions.kl_divergence(q, p)


__all__ = [
    "ARCHS",
    "AnnealedVAELoss",
    "LIKELIHOODS",
    "ProbabilisticPCA",
    "VAE",
    "VAEConfig",
    "active_units",
    "aggregate_posterior_moments",
    "bernoulli_log_likelihood",
    "bernoulli_nll_floor",
    "free_bits_kl",
    "gaussian_kl_standard",
    "gaussian_log_likelihood",
    "iwae_bound",
    "iwae_nll",
    "latent_activity",
    "log_normal_diag",
]
