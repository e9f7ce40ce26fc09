"""Generative adversarial networks (chapters 06 and 07).

One :class:`GAN` module holds a ``generator`` and a ``discriminator`` (a *critic* for WGAN-GP)
and exposes the two losses as methods, so the shared Trainer trains it with two objectives,
each updating only its own network::

    gan = GAN(GANConfig(arch="dcgan", loss="ns"))
    trainer = Trainer(gan, x_train, config, objectives=[
        Objective("D", GAN.discriminator_loss, module="discriminator"),
        Objective("G", GAN.generator_loss, module="generator"),
    ])

The losses themselves, with their equations, are the pure functions of
:mod:`genai_course.models.gan_losses`; this module only builds the networks and feeds them.

Conventions:

- Images are (N, C, 28, 28) in [0, 1] at the interface, like every other chapter. Inside, the
  generator ends in ``tanh`` and real images are mapped to [-1, 1] (:math:`2x - 1`), so both
  players see the same range; :meth:`GAN.sample` maps back.
- Vector data (the 2-D ring) is used as it is, with a linear generator output.
- A conditional GAN (``num_classes > 0``) feeds a label embedding to the generator next to
  :math:`z` and uses a *projection* discriminator (Miyato & Koyama, 2018):
  :math:`\\ell(x, y) = w^\\top h(x) + b + e_y^\\top h(x)`, the unconditional score plus the
  inner product of the features with the label's embedding.
- No batch norm in a discriminator, a departure from Radford et al. (2016), who used it in
  both networks (all layers but the generator's output and the discriminator's input): a
  gradient penalty needs each score to depend on its own example only, and mixing the
  statistics of real and fake batches is a classic source of trouble. The DCGAN generator
  keeps its batch norm.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..checks import check_values
from ..config import Config, check_choice, check_positive
from .diff_augment import POLICIES, diff_augment
from .gan_losses import (
    discriminator_loss,
    generator_loss_nonsaturating,
    generator_loss_saturating,
    gradient_penalty,
    wasserstein_critic_loss,
    wasserstein_generator_loss,
)

__all__ = ["GAN", "GANConfig", "interpolate_latents", "mode_seeking_ratio"]

ARCHS = ("mlp", "dcgan")
LOSSES = ("ns", "minimax", "wgan-gp")
UPSAMPLES = ("transposed", "nearest")


@dataclass
class GANConfig(Config):
    arch: str = "dcgan"  # mlp | dcgan (28x28 images only)
    data_shape: tuple[int, ...] = (1, 28, 28)  # (C, 28, 28) images in [0, 1], or (D,) vectors
    latent_dim: int = 64  # z ~ N(0, I); 64 is plenty for 10 digit classes
    hidden: tuple[int, ...] = (256, 512)  # mlp widths (the discriminator uses them reversed)
    width: int = 64  # dcgan channels at 14x14; 2*width at 7x7
    upsample: str = "transposed"  # dcgan generator: transposed convs, or nearest + 3x3 conv
    num_classes: int = 0  # > 0: class-conditional generator and projection discriminator
    loss: str = "ns"  # ns (non-saturating) | minimax (saturating) | wgan-gp
    gp_weight: float = 10.0  # lambda of the gradient penalty (wgan-gp)
    drift: float = 1e-3  # wgan-gp: + drift * E[f(x)^2] keeps critic scores from drifting
    mode_seeking: float = 0.0  # weight of the mode-seeking term of the generator loss (MSGAN)
    # DiffAugment policy (Zhao et al., 2020): the discriminator sees augmented real and fake
    # images in both losses (images only); "none" | "translation" | "cutout" | "translation,cutout"
    augment: str = "none"

    def validate(self) -> None:
        check_choice(self, "arch", ARCHS)
        check_choice(self, "loss", LOSSES)
        check_choice(self, "upsample", UPSAMPLES)
        check_choice(self, "augment", POLICIES)
        if self.augment != "none" and len(self.data_shape) != 3:
            raise ValueError(f"augment {self.augment!r} needs images (C, H, W), got {self.data_shape}")
        if len(self.data_shape) not in (1, 3) or min(self.data_shape) < 1:
            raise ValueError(
                f"data_shape must be (C, H, W) for images or (D,) for vectors, got {self.data_shape}"
            )
        if self.arch == "dcgan" and (len(self.data_shape) != 3 or self.data_shape[1:] != (28, 28)):
            raise ValueError(f"arch 'dcgan' needs (C, 28, 28) images, got {self.data_shape}")
        check_positive(self, "latent_dim", "width")
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"GANConfig.hidden must be one or more widths >= 1, got {self.hidden}")
        check_positive(self, "num_classes", minimum=0)

    @property
    def is_image(self) -> bool:
        return len(self.data_shape) == 3


# building blocks


class _LabelInput(nn.Module):
    """z, or [z, embedding(y)] for a conditional generator."""

    def __init__(self, c: GANConfig):
        super().__init__()
        self.embed = nn.Embedding(c.num_classes, c.latent_dim) if c.num_classes else None
        self.out_dim = c.latent_dim * (2 if c.num_classes else 1)

    def forward(self, z: Tensor, y: Tensor | None) -> Tensor:
        return z if self.embed is None else torch.cat([z, self.embed(y)], dim=1)


class MLPGenerator(nn.Module):
    """z (N, latent) -> data: Linear-LeakyReLU stacks, then a linear layer (tanh for images)."""

    def __init__(self, c: GANConfig):
        super().__init__()
        self.config = c
        self.input = _LabelInput(c)
        layers, d = [], self.input.out_dim
        for h in c.hidden:
            layers += [nn.Linear(d, h), nn.LeakyReLU(0.2)]
            d = h
        layers.append(nn.Linear(d, math.prod(c.data_shape)))
        if c.is_image:
            layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return self.net(self.input(z, y)).view(len(z), *self.config.data_shape)


class DCGenerator(nn.Module):
    """DCGAN generator (Radford et al., 2016) for 28x28: project z to 7x7, then two
    stride-2 transposed convolutions, batch norm and ReLU between them, tanh at the end."""

    def __init__(self, c: GANConfig):
        super().__init__()
        self.config = c
        self.input = _LabelInput(c)
        w = c.width
        self.project = nn.Sequential(
            nn.Linear(self.input.out_dim, 2 * w * 7 * 7, bias=False),
            nn.BatchNorm1d(2 * w * 7 * 7),
            nn.ReLU(),
        )
        out = c.data_shape[0]
        if c.upsample == "transposed":
            up1 = nn.ConvTranspose2d(2 * w, w, 4, stride=2, padding=1, bias=False)
            up2 = nn.ConvTranspose2d(w, out, 4, stride=2, padding=1)
        else:  # no checkerboard artefacts (Odena et al., 2016): every output pixel sees alike
            up1 = nn.Sequential(
                nn.Upsample(scale_factor=2), nn.Conv2d(2 * w, w, 3, padding=1, bias=False)
            )
            up2 = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(w, out, 3, padding=1))
        self.net = nn.Sequential(
            up1,  # (N, w, 14, 14)
            nn.BatchNorm2d(w),
            nn.ReLU(),
            up2,  # (N, C, 28, 28)
            nn.Tanh(),
        )

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        h = self.project(self.input(z, y)).view(len(z), 2 * self.config.width, 7, 7)
        return self.net(h)


class _ProjectionHead(nn.Module):
    """Features h (N, F) -> score (N,): w^T h + b, plus e_y^T h when conditional."""

    def __init__(self, features: int, num_classes: int):
        super().__init__()
        self.linear = nn.Linear(features, 1)
        self.embed = nn.Embedding(num_classes, features) if num_classes else None

    def forward(self, h: Tensor, y: Tensor | None) -> Tensor:
        score = self.linear(h).squeeze(1)
        if self.embed is not None:
            score = score + (self.embed(y) * h).sum(1)
        return score


class MLPDiscriminator(nn.Module):
    """data -> (N,) logits: Linear-LeakyReLU stacks (widths of the generator reversed)."""

    def __init__(self, c: GANConfig):
        super().__init__()
        layers, d = [nn.Flatten()], math.prod(c.data_shape)
        for h in reversed(c.hidden):
            layers += [nn.Linear(d, h), nn.LeakyReLU(0.2)]
            d = h
        self.body = nn.Sequential(*layers)
        self.head = _ProjectionHead(d, c.num_classes)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.head(self.body(x), y)


class DCDiscriminator(nn.Module):
    """DCGAN discriminator for 28x28: two stride-2 convolutions with LeakyReLU (no batch
    norm, see the module docstring), then a linear (projection) head."""

    def __init__(self, c: GANConfig):
        super().__init__()
        w = c.width
        self.body = nn.Sequential(
            nn.Conv2d(c.data_shape[0], w, 4, stride=2, padding=1),  # (N, w, 14, 14)
            nn.LeakyReLU(0.2),
            nn.Conv2d(w, 2 * w, 4, stride=2, padding=1),  # (N, 2w, 7, 7)
            nn.LeakyReLU(0.2),
            nn.Flatten(),  # (N, 2w*49)
        )
        self.head = _ProjectionHead(2 * w * 7 * 7, c.num_classes)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.head(self.body(x), y)


# model


class GAN(nn.Module):
    """A generator and a discriminator (critic), with the losses of ``config.loss``.

    ``discriminator_loss(batch)`` and ``generator_loss(batch)`` take a training batch: real
    data ``(N, *data_shape)``, or ``(x, y)`` with labels (required when conditional; the generator
    step then draws its labels from the batch, i.e. from the data's label distribution).
    Each returns ``(loss, logs)`` as the Trainer expects.
    """

    def __init__(self, config: GANConfig | None = None):
        super().__init__()
        self.config = c = config or GANConfig()
        if c.arch == "mlp":
            self.generator: nn.Module = MLPGenerator(c)
            self.discriminator: nn.Module = MLPDiscriminator(c)
        else:
            self.generator = DCGenerator(c)
            self.discriminator = DCDiscriminator(c)

    # -- data in and out --------------------------------------------------------------------

    def _unpack(self, batch: Tensor | tuple | list) -> tuple[Tensor, Tensor | None]:
        c = self.config
        if isinstance(batch, (tuple, list)):
            x, y = batch[0], (batch[1] if len(batch) > 1 else None)
        else:
            x, y = batch, None
        if tuple(x.shape[1:]) != c.data_shape:
            raise ValueError(
                f"expected real data of shape (N, {', '.join(map(str, c.data_shape))}), "
                f"got {tuple(x.shape)}"
            )
        if c.num_classes and y is None:
            raise ValueError("a conditional GAN needs (x, y) batches with integer labels y")
        if y is not None and not c.num_classes:
            y = None  # labels of an unconditional GAN's data are ignored
        if c.is_image:
            x = 2 * x - 1  # [0, 1] -> the generator's tanh range
        return x, y

    def _check_labels(self, labels: Tensor | None, n: int) -> Tensor | None:
        k = self.config.num_classes
        if not k:
            if labels is not None:
                raise ValueError("this GAN is unconditional (num_classes=0); pass no labels")
            return None
        if labels is None:
            raise ValueError(f"a conditional GAN needs labels: (N,) ints in [0, {k})")
        if labels.shape != (n,) or labels.dtype != torch.long:
            raise ValueError(
                f"labels must be int64 of shape ({n},), got {labels.dtype} {tuple(labels.shape)}"
            )
        if n and check_values() and (labels.min() < 0 or labels.max() >= k):
            raise ValueError(f"labels must lie in [0, {k}), got values outside")
        return labels

    def latents(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, latent_dim) draws of :math:`z \\sim \\mathcal N(0, I)` on the model's device."""
        device = next(self.parameters()).device
        if generator is None:
            return torch.randn(n, self.config.latent_dim, device=device)
        return torch.randn(
            n, self.config.latent_dim, generator=generator, device=generator.device
        ).to(device)

    def generate(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """G(z) in data space: images in [0, 1] (N, C, 28, 28), vectors as they are.
        Uses the generator's current mode (call ``eval()`` for sampling)."""
        if z.ndim != 2 or z.shape[1] != self.config.latent_dim:
            raise ValueError(
                f"z must have shape (N, {self.config.latent_dim}), got {tuple(z.shape)}"
            )
        labels = self._check_labels(labels, len(z))
        out = self.generator(z, labels)
        return (out + 1) / 2 if self.config.is_image else out

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """n samples, with the generator in eval mode (batch norm uses its running statistics).
        A conditional GAN given no labels cycles through the classes: 0, 1, ..., 9, 0, ..."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if self.config.num_classes and labels is None:
            labels = torch.arange(n) % self.config.num_classes
        device = next(self.parameters()).device
        labels = labels.to(device) if labels is not None else None
        was_training = self.generator.training
        self.generator.eval()
        try:
            return self.generate(self.latents(n, generator), labels)
        finally:
            self.generator.train(was_training)

    def score(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """The discriminator's logits (critic scores for WGAN-GP), (N,), of data ``x`` given
        in data space (images in [0, 1])."""
        x, _ = self._unpack(x)
        return self.discriminator(x, self._check_labels(labels, len(x)))

    # -- the two losses -----------------------------------------------------------------------

    def _judge(self, x: Tensor, y: Tensor | None) -> Tensor:
        """The discriminator's scores as the losses use them: of DiffAugment-ed images when
        ``config.augment`` is set (a fresh draw per call, real and fake alike), else of ``x``."""
        return self.discriminator(diff_augment(x, self.config.augment), y)

    def discriminator_loss(self, batch: Tensor | tuple) -> tuple[Tensor, dict[str, Tensor]]:
        """The discriminator's (critic's) loss on a batch of real data and as many fakes.

        The fakes are generated without a graph (``torch.no_grad``): this step must not
        touch the generator, and building its graph would only cost time.
        """
        c = self.config
        real, y = self._unpack(batch)
        with torch.no_grad():
            fake = self.generator(self.latents(len(real)).to(real.dtype), y)
        real_out = self._judge(real, y)
        fake_out = self._judge(fake, y)
        if c.loss == "wgan-gp":
            critic = wasserstein_critic_loss(real_out, fake_out)
            gp = gradient_penalty(lambda x: self._judge(x, y), real, fake)
            loss = critic + c.gp_weight * gp + c.drift * real_out.pow(2).mean()
            return loss, {"wasserstein": -critic.detach(), "gp": gp.detach()}
        loss = discriminator_loss(real_out, fake_out)
        return loss, {
            "d_real": torch.sigmoid(real_out).mean().detach(),
            "d_fake": torch.sigmoid(fake_out).mean().detach(),
        }

    def generator_loss(self, batch: Tensor | tuple) -> tuple[Tensor, dict[str, Tensor]]:
        """The generator's loss: fakes go through the discriminator *with* a graph, so the
        gradient reaches the generator through it (the Trainer keeps the discriminator's
        own parameters out of this step)."""
        c = self.config
        real, y = self._unpack(batch)
        z = self.latents(len(real)).to(real.dtype)
        fake = self.generator(z, y)
        out = self._judge(fake, y)
        if c.loss == "wgan-gp":
            loss = wasserstein_generator_loss(out)
        elif c.loss == "minimax":
            loss = generator_loss_saturating(out)
        else:
            loss = generator_loss_nonsaturating(out)
        if not c.mode_seeking:
            return loss, {}
        ratio = mode_seeking_ratio(self.generator, z, fake, y)
        return loss + c.mode_seeking / (ratio + 1e-5), {"mode_seeking_ratio": ratio.detach()}

    def with_generator(self, generator: nn.Module) -> GAN:
        """A copy of this GAN whose generator has the weights (and buffers) of ``generator``,
        e.g. the Trainer's EMA average: ``gan.with_generator(trainer.ema_model.module)``."""
        out = copy.deepcopy(self)
        out.generator.load_state_dict(generator.state_dict())
        return out


def mode_seeking_ratio(
    generator: nn.Module, z: Tensor, fake: Tensor, labels: Tensor | None
) -> Tensor:
    r"""How far the generator's outputs move per unit of latent, for the mode-seeking
    regulariser of Mao et al. (2019):

    .. math:: r = \mathbb E\left[\frac{\lVert G(z_1, y) - G(z_2, y)\rVert_1 / D_x}
              {\lVert z_1 - z_2\rVert_1 / D_z}\right],

    with :math:`z_1` the batch's latents, :math:`z_2` fresh ones and the same labels. A
    generator that ignores :math:`z` (collapse within a class) has :math:`r \approx 0`; adding
    :math:`\lambda / (r + \epsilon)` to its loss pushes it to use the latent.
    """
    z2 = torch.randn_like(z)
    fake2 = generator(z2, labels)
    image_gap = (fake - fake2).abs().flatten(1).mean(1)
    latent_gap = (z - z2).abs().mean(1)
    return (image_gap / latent_gap).mean()


def interpolate_latents(z0: Tensor, z1: Tensor, steps: int, spherical: bool = True) -> Tensor:
    """``steps`` latents from ``z0`` to ``z1`` (each (D,)), shape (steps, D).

    Spherical interpolation (slerp) keeps the norm near :math:`\\sqrt D`, where Gaussian
    latents live; the straight line between two such points passes closer to the origin,
    where the generator saw few latents in training.

    .. math:: \\mathrm{slerp}(t) = \\frac{\\sin((1-t)\\Omega)}{\\sin\\Omega} z_0
              + \\frac{\\sin(t\\Omega)}{\\sin\\Omega} z_1,
              \\qquad \\cos\\Omega = \\frac{z_0 \\cdot z_1}{\\lVert z_0\\rVert \\lVert z_1\\rVert}.
    """
    if z0.ndim != 1 or z0.shape != z1.shape:
        raise ValueError(
            f"z0 and z1 must be vectors (D,) of the same size, got {tuple(z0.shape)} and "
            f"{tuple(z1.shape)}"
        )
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    t = torch.linspace(0, 1, steps, dtype=z0.dtype, device=z0.device)[:, None]
    if not spherical:
        return (1 - t) * z0 + t * z1
    cos = torch.dot(z0, z1) / (z0.norm() * z1.norm())
    omega = torch.arccos(cos.clamp(-1 + 1e-7, 1 - 1e-7))
    if omega.abs() < 1e-4:  # (almost) parallel: slerp is the straight line
        return (1 - t) * z0 + t * z1
    return (torch.sin((1 - t) * omega) * z0 + torch.sin(t * omega) * z1) / torch.sin(omega)
