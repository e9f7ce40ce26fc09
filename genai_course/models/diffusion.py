r"""Denoising diffusion: DDPM, DDIM, classifier-free guidance and text-to-image (chapters 12-13).

A diffusion model learns to undo a fixed process that destroys data.  The *forward process*
adds a little Gaussian noise at each of :math:`T` steps,

.. math:: q(x_t \mid x_{t-1}) = \mathcal N\big(\sqrt{1 - \beta_t}\, x_{t-1},\, \beta_t I\big),
   \qquad t = 1, \dots, T,

with a *noise schedule* :math:`0 < \beta_1 < \dots < \beta_T < 1`.  Writing
:math:`\alpha_t = 1 - \beta_t` and :math:`\bar\alpha_t = \prod_{s \le t} \alpha_s`, Gaussians
compose into a closed form for any step, so training never runs the chain:

.. math:: q(x_t \mid x_0) = \mathcal N\big(\sqrt{\bar\alpha_t}\, x_0,\, (1 - \bar\alpha_t) I\big),
   \qquad x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1 - \bar\alpha_t}\, \varepsilon,
   \quad \varepsilon \sim \mathcal N(0, I).

:math:`\bar\alpha_T \approx 0`, so :math:`x_T` is (almost) pure noise.  A network
:math:`\varepsilon_\theta(x_t, t)` (:class:`~genai_course.models.unet.UNet`) learns to predict
the noise in :math:`x_t`; from it follows an estimate of :math:`x_0`, and from that a step back
through the Gaussian posterior :math:`q(x_{t-1} \mid x_t, x_0)`.  Sampling starts from noise and
steps back :math:`T` times (DDPM, :meth:`Diffusion.ddpm_sample`) or along a short subsequence
of steps (DDIM, :meth:`Diffusion.ddim_sample`).  Classifier-free guidance
(:meth:`Diffusion.eps`) trades diversity for fidelity to a label or a text embedding.

**Timestep convention.**  The equations use the 1-based steps of Ho et al. (2020): :math:`x_0`
is the data and :math:`x_1, \dots, x_T` the noisy latents.  Tensors and arguments use the
0-based *index* ``t`` in ``{0, ..., T-1}`` of the step: index ``t`` is step :math:`t + 1`.  So
``betas[t]`` is :math:`\beta_{t+1}`, ``alphas_bar[t]`` is :math:`\bar\alpha_{t+1}`,
``q_sample(s, x0, t, eps)`` returns :math:`x_{t+1}`, ``t = 0`` is the first noising step (the
latent closest to the data) and ``t = T - 1`` the last; the network sees the index ``t``.
``alphas_bar_prev[0] = 1`` stands for :math:`\bar\alpha_0`, and the posterior at ``t = 0``
is the point mass at the data (variance 0).

**Scaling.**  Images are (N, C, H, W) in [0, 1] at the interface, like every other chapter.
The diffusion itself runs on :math:`2x - 1 \in [-1, 1]`, so that data and noise have similar
scales (:func:`to_model_range`); samplers map back with :func:`to_image_range`.

Shapes: B batch, C channels, H, W image size, K ``num_classes``, D ``cond_dim``.
Schedules are float64; each function computes in the dtype of its image argument.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checks import check_image_batch, check_values
from ..config import Config, check_choice, check_positive, check_range
from .text_encoder import TextConditionedUNet, TextEncoderConfig
from .unet import UNet, UNetConfig

__all__ = [
    "SCHEDULES",
    "VARIANCES",
    "Diffusion",
    "DiffusionConfig",
    "NoiseSchedule",
    "cosine_beta_schedule",
    "ddim_sigma",
    "ddim_timesteps",
    "linear_beta_schedule",
    "linear_noise_prediction_mse",
    "noise_prediction_loss",
    "predict_eps_from_v",
    "predict_eps_from_x0",
    "predict_x0_from_eps",
    "predict_x0_from_v",
    "q_posterior",
    "q_sample",
    "to_image_range",
    "to_model_range",
    "v_target",
]

SCHEDULES = ("linear", "cosine")
VARIANCES = ("beta_tilde", "beta")  # DDPM reverse variances: posterior, or forward step's


# ----------------------------------------------------------------------------------------------
# noise schedules (pure functions)


def linear_beta_schedule(T: int, beta_1: float = 1e-4, beta_T: float = 0.02) -> Tensor:
    r"""The DDPM schedule (Ho et al. 2020): :math:`\beta_t` evenly spaced from ``beta_1`` to
    ``beta_T``.  (T,) float64.  The defaults suit T = 1000; for other T, scale both by 1000/T
    to destroy the data as thoroughly."""
    if int(T) != T or T < 1:
        raise ValueError(f"T must be an int >= 1, got {T!r}")
    if not 0 < beta_1 <= beta_T < 1:
        raise ValueError(f"need 0 < beta_1 <= beta_T < 1, got beta_1={beta_1}, beta_T={beta_T}")
    return torch.linspace(beta_1, beta_T, int(T), dtype=torch.float64)


def cosine_beta_schedule(T: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    r"""The cosine schedule (Nichol & Dhariwal 2021), defined through :math:`\bar\alpha`:

    .. math:: \bar\alpha_t = \frac{f(t)}{f(0)}, \quad
       f(t) = \cos^2\Big(\frac{t/T + s}{1 + s} \cdot \frac\pi2\Big), \qquad
       \beta_t = \min\Big(1 - \frac{\bar\alpha_t}{\bar\alpha_{t-1}},\ \text{max\_beta}\Big).

    :math:`\bar\alpha` falls slowly at both ends instead of reaching almost 0 long before
    :math:`T` as the linear schedule does, so fewer steps are wasted on pure noise; the small
    offset :math:`s` keeps :math:`\beta_1` from being tiny, and the clip keeps the last steps
    from being (nearly) 1.  (T,) float64.
    """
    if int(T) != T or T < 1:
        raise ValueError(f"T must be an int >= 1, got {T!r}")
    if s < 0:
        raise ValueError(f"s must be >= 0, got {s}")
    if not 0 < max_beta < 1:
        raise ValueError(f"max_beta must be in (0, 1), got {max_beta}")
    steps = torch.arange(int(T) + 1, dtype=torch.float64)
    f = torch.cos((steps / T + s) / (1 + s) * math.pi / 2) ** 2  # (T+1,)
    alphas_bar = f / f[0]
    return (1 - alphas_bar[1:] / alphas_bar[:-1]).clamp(max=max_beta)


class NoiseSchedule:
    r"""The schedule's betas and every quantity derived from them, each a (T,) tensor indexed
    by the step index ``t`` (index ``t`` is step :math:`t + 1`, see the module docstring):

    - ``betas`` :math:`\beta`, ``alphas`` :math:`\alpha = 1 - \beta`, ``alphas_bar``
      :math:`\bar\alpha_t = \prod_{s \le t} \alpha_s`, ``alphas_bar_prev`` (:math:`\bar\alpha`
      of the step before, 1 at index 0), ``sqrt_alphas_bar``, ``sqrt_one_minus_alphas_bar``;
    - the posterior :math:`q(x_{t-1} \mid x_t, x_0) = \mathcal N(\tilde\mu_t, \tilde\beta_t I)`,
      :math:`\tilde\mu_t = c^{(0)}_t x_0 + c^{(t)}_t x_t`: ``posterior_variance``
      :math:`\tilde\beta_t`, ``posterior_coef_x0`` :math:`c^{(0)}_t` and
      ``posterior_coef_xt`` :math:`c^{(t)}_t` (see :func:`q_posterior`).

    Built from float64 betas (``NoiseSchedule(betas)`` or :meth:`from_name`); :meth:`to` gives
    a copy on another device or in another dtype.
    """

    FIELDS = (
        "betas",
        "alphas",
        "alphas_bar",
        "alphas_bar_prev",
        "sqrt_alphas_bar",
        "sqrt_one_minus_alphas_bar",
        "posterior_variance",
        "posterior_coef_x0",
        "posterior_coef_xt",
    )

    def __init__(self, betas: Tensor):
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.ndim != 1 or len(betas) == 0:
            raise ValueError(f"betas must be a non-empty 1-D tensor, got {tuple(betas.shape)}")
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError(
                f"betas must lie in (0, 1), got values in [{betas.min():.3g}, {betas.max():.3g}]"
            )
        self.betas = betas
        self.alphas = 1 - betas
        self.alphas_bar = torch.cumprod(self.alphas, 0)
        self.alphas_bar_prev = torch.cat([betas.new_ones(1), self.alphas_bar[:-1]])
        self.sqrt_alphas_bar = self.alphas_bar.sqrt()
        self.sqrt_one_minus_alphas_bar = (1 - self.alphas_bar).sqrt()
        one_minus = 1 - self.alphas_bar
        self.posterior_variance = betas * (1 - self.alphas_bar_prev) / one_minus
        self.posterior_coef_x0 = betas * self.alphas_bar_prev.sqrt() / one_minus
        self.posterior_coef_xt = (1 - self.alphas_bar_prev) * self.alphas.sqrt() / one_minus

    @property
    def T(self) -> int:
        """Number of diffusion steps."""
        return len(self.betas)

    @classmethod
    def from_name(cls, name: str, T: int) -> NoiseSchedule:
        """The ``"linear"`` or ``"cosine"`` schedule of ``T`` steps, with its default settings."""
        if name == "linear":
            return cls(linear_beta_schedule(T))
        if name == "cosine":
            return cls(cosine_beta_schedule(T))
        raise ValueError(f"unknown schedule {name!r}; known: {', '.join(SCHEDULES)}")

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> NoiseSchedule:
        """A copy with every tensor moved to ``device`` and/or cast to ``dtype``."""
        out = copy.copy(self)
        for name in self.FIELDS:
            setattr(out, name, getattr(self, name).to(device=device, dtype=dtype))
        return out

    def __repr__(self) -> str:
        ab = self.alphas_bar
        return (
            f"NoiseSchedule(T={self.T}, beta in [{self.betas.min():.3g}, {self.betas.max():.3g}], "
            f"alphas_bar[-1]={float(ab[-1]):.3g})"
        )


# ----------------------------------------------------------------------------------------------
# the forward process and its posterior (pure functions)


def to_model_range(x: Tensor) -> Tensor:
    """Pixels in [0, 1] -> [-1, 1], the range the diffusion runs in: :math:`2x - 1`."""
    return 2 * x - 1


def to_image_range(x: Tensor) -> Tensor:
    """[-1, 1] -> pixels in [0, 1], clamped: :math:`(x + 1) / 2`."""
    return ((x + 1) / 2).clamp(0, 1)


def _check_timesteps(t: Tensor, n: int, T: int) -> None:
    """Raise unless ``t`` is an integer tensor (n,) of step indices in [0, T)."""
    if not isinstance(t, Tensor) or t.shape != (n,):
        got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
        raise ValueError(f"expected timesteps t of shape ({n},), one per example, got {got}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"timesteps t must be integer step indices, got dtype {t.dtype}")
    if n and check_values() and (t.min() < 0 or t.max() >= T):
        raise ValueError(
            f"timesteps must be indices in [0, {T - 1}] (0: the first noising step), got "
            f"values in [{int(t.min())}, {int(t.max())}]"
        )


def _extract(coef: Tensor, t: Tensor, like: Tensor) -> Tensor:
    """``coef[t]`` (B,) as (B, 1, ..., 1) in ``like``'s dtype and device, to broadcast over it."""
    coef = coef.to(device=like.device, dtype=like.dtype)
    return coef[t.to(like.device)].reshape(-1, *([1] * (like.ndim - 1)))


def _diffuse(s: NoiseSchedule, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    return _extract(s.sqrt_alphas_bar, t, x0) * x0 + _extract(
        s.sqrt_one_minus_alphas_bar, t, x0
    ) * noise.to(x0.dtype)


def q_sample(schedule: NoiseSchedule, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    r"""A draw of the noisy latent at step index ``t`` given the data, in closed form:

    .. math:: x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1 - \bar\alpha_t}\, \varepsilon,

    with ``alphas_bar[t]`` as :math:`\bar\alpha_t` (the latent after ``t + 1`` noising steps).
    x0, noise (B, ...) in the model's range; t (B,) integer indices in [0, T) -> (B, ...).
    """
    if noise.shape != x0.shape:
        raise ValueError(f"noise {tuple(noise.shape)} must have x0's shape {tuple(x0.shape)}")
    _check_timesteps(t, len(x0), schedule.T)
    return _diffuse(schedule, x0, t, noise)


def q_posterior(
    schedule: NoiseSchedule, x0: Tensor, xt: Tensor, t: Tensor
) -> tuple[Tensor, Tensor]:
    r"""Mean and variance of the forward process's posterior, one step back from ``xt``:

    .. math:: q(x_{t-1} \mid x_t, x_0) = \mathcal N\big(\tilde\mu_t(x_t, x_0),
       \tilde\beta_t I\big), \qquad
       \tilde\mu_t = \frac{\sqrt{\bar\alpha_{t-1}}\, \beta_t}{1 - \bar\alpha_t}\, x_0
       + \frac{\sqrt{\alpha_t}\, (1 - \bar\alpha_{t-1})}{1 - \bar\alpha_t}\, x_t, \qquad
       \tilde\beta_t = \frac{1 - \bar\alpha_{t-1}}{1 - \bar\alpha_t}\, \beta_t.

    It follows from Bayes' rule, :math:`q(x_{t-1} \mid x_t, x_0) \propto q(x_t \mid x_{t-1})\,
    q(x_{t-1} \mid x_0)`, a product of two Gaussians in :math:`x_{t-1}`.  At index ``t = 0``
    (step 1) it is the point mass at ``x0``: mean ``x0``, variance 0.

    x0, xt (B, ...); t (B,) integer indices in [0, T) -> mean (B, ...), variance
    (B, 1, ..., 1) (broadcastable to the mean).
    """
    if xt.shape != x0.shape:
        raise ValueError(f"xt {tuple(xt.shape)} must have x0's shape {tuple(x0.shape)}")
    _check_timesteps(t, len(x0), schedule.T)
    return _posterior(schedule, x0, xt, t)


def _posterior(s: NoiseSchedule, x0: Tensor, xt: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    mean = _extract(s.posterior_coef_x0, t, xt) * x0 + _extract(s.posterior_coef_xt, t, xt) * xt
    return mean, _extract(s.posterior_variance, t, xt)


def predict_x0_from_eps(schedule: NoiseSchedule, xt: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    r"""The data that :math:`x_t` and its noise imply, :func:`q_sample` solved for :math:`x_0`:

    .. math:: \hat x_0 = \frac{x_t - \sqrt{1 - \bar\alpha_t}\, \varepsilon}{\sqrt{\bar\alpha_t}}.

    xt, eps (B, ...); t (B,) integer indices in [0, T) -> (B, ...).
    """
    _check_timesteps(t, len(xt), schedule.T)
    return _x0_from_eps(schedule, xt, t, eps)


def _x0_from_eps(s: NoiseSchedule, xt: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    return (xt - _extract(s.sqrt_one_minus_alphas_bar, t, xt) * eps) / _extract(
        s.sqrt_alphas_bar, t, xt
    )


def predict_eps_from_x0(schedule: NoiseSchedule, xt: Tensor, t: Tensor, x0: Tensor) -> Tensor:
    r"""The noise that takes ``x0`` to ``xt``, :func:`q_sample` solved for :math:`\varepsilon`:
    :math:`\varepsilon = (x_t - \sqrt{\bar\alpha_t}\, x_0) / \sqrt{1 - \bar\alpha_t}`.

    xt, x0 (B, ...); t (B,) integer indices in [0, T) -> (B, ...).
    """
    _check_timesteps(t, len(xt), schedule.T)
    return _eps_from_x0(schedule, xt, t, x0)


def _eps_from_x0(s: NoiseSchedule, xt: Tensor, t: Tensor, x0: Tensor) -> Tensor:
    return (xt - _extract(s.sqrt_alphas_bar, t, xt) * x0) / _extract(
        s.sqrt_one_minus_alphas_bar, t, xt
    )


def v_target(schedule: NoiseSchedule, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    r"""The "velocity" of Salimans & Ho (2022), the regression target of v-prediction:

    .. math:: v = \sqrt{\bar\alpha_t}\, \varepsilon - \sqrt{1 - \bar\alpha_t}\, x_0 .

    With :math:`\sqrt{\bar\alpha_t} = \cos\phi_t` and :math:`\sqrt{1 - \bar\alpha_t} =
    \sin\phi_t`, :math:`x_t = \cos\phi_t\, x_0 + \sin\phi_t\, \varepsilon` and :math:`v =
    dx_t / d\phi_t`: the rate of change of the latent along the quarter circle from data to
    noise.  (Salimans & Ho write :math:`\alpha_t` for this module's :math:`\sqrt{\bar\alpha_t}`
    and :math:`\sigma_t` for :math:`\sqrt{1 - \bar\alpha_t}`.)  Given :math:`x_t`, each of
    :math:`\varepsilon`, :math:`x_0` and :math:`v` determines the other two linearly
    (:func:`predict_x0_from_eps`, :func:`predict_x0_from_v`, :func:`predict_eps_from_v`).

    x0, noise (B, ...) in the model's range; t (B,) integer indices in [0, T) -> (B, ...).
    """
    if noise.shape != x0.shape:
        raise ValueError(f"noise {tuple(noise.shape)} must have x0's shape {tuple(x0.shape)}")
    _check_timesteps(t, len(x0), schedule.T)
    return (
        _extract(schedule.sqrt_alphas_bar, t, x0) * noise.to(x0.dtype)
        - _extract(schedule.sqrt_one_minus_alphas_bar, t, x0) * x0
    )


def predict_x0_from_v(schedule: NoiseSchedule, xt: Tensor, t: Tensor, v: Tensor) -> Tensor:
    r"""The data that :math:`x_t` and a velocity :math:`v` imply (see :func:`v_target`):

    .. math:: \hat x_0 = \sqrt{\bar\alpha_t}\, x_t - \sqrt{1 - \bar\alpha_t}\, v,

    since :math:`\sqrt{\bar\alpha_t}\, x_t - \sqrt{1 - \bar\alpha_t}\, v = (\bar\alpha_t + 1 -
    \bar\alpha_t)\, x_0` (the :math:`\varepsilon` terms cancel).  A rotation back by
    :math:`\phi_t`, so no division: unlike :func:`predict_x0_from_eps`, it stays bounded as
    :math:`\bar\alpha_t \to 0`.

    xt, v (B, ...); t (B,) integer indices in [0, T) -> (B, ...).
    """
    if v.shape != xt.shape:
        raise ValueError(f"v {tuple(v.shape)} must have xt's shape {tuple(xt.shape)}")
    _check_timesteps(t, len(xt), schedule.T)
    return _extract(schedule.sqrt_alphas_bar, t, xt) * xt - _extract(
        schedule.sqrt_one_minus_alphas_bar, t, xt
    ) * v.to(xt.dtype)


def predict_eps_from_v(schedule: NoiseSchedule, xt: Tensor, t: Tensor, v: Tensor) -> Tensor:
    r"""The noise that :math:`x_t` and a velocity :math:`v` imply (see :func:`v_target`):
    :math:`\hat\varepsilon = \sqrt{1 - \bar\alpha_t}\, x_t + \sqrt{\bar\alpha_t}\, v`.

    xt, v (B, ...); t (B,) integer indices in [0, T) -> (B, ...).
    """
    if v.shape != xt.shape:
        raise ValueError(f"v {tuple(v.shape)} must have xt's shape {tuple(xt.shape)}")
    _check_timesteps(t, len(xt), schedule.T)
    return _extract(schedule.sqrt_one_minus_alphas_bar, t, xt) * xt + _extract(
        schedule.sqrt_alphas_bar, t, xt
    ) * v.to(xt.dtype)


def noise_prediction_loss(eps_pred: Tensor, eps: Tensor) -> Tensor:
    r"""The "simple" loss of DDPM: mean squared error between the true and predicted noise.

    It comes from the ELBO.  With the reverse model
    :math:`p_\theta(x_{t-1} \mid x_t) = \mathcal N(\mu_\theta(x_t, t), \sigma_t^2 I)`,

    .. math:: -\log p_\theta(x_0) \le \mathbb E_q\Big[
       \underbrace{\mathrm{KL}\big(q(x_T \mid x_0)\,\|\,p(x_T)\big)}_{L_T}
       + \sum_{t=2}^T \underbrace{\mathrm{KL}\big(q(x_{t-1} \mid x_t, x_0)\,\|\,
       p_\theta(x_{t-1} \mid x_t)\big)}_{L_{t-1}}
       \underbrace{- \log p_\theta(x_0 \mid x_1)}_{L_0}\Big].

    :math:`L_T` has no parameters (and is nearly 0: :math:`\bar\alpha_T \approx 0`).  Each
    :math:`L_{t-1}`, :math:`t \ge 2`, is a KL between :math:`\mathcal N(\tilde\mu_t,
    \tilde\beta_t I)` and :math:`\mathcal N(\mu_\theta, \sigma_t^2 I)` in :math:`D` dimensions,

    .. math:: L_{t-1} = \frac{1}{2\sigma_t^2} \lVert \tilde\mu_t(x_t, x_0) - \mu_\theta(x_t, t)
       \rVert^2 + \frac D2 \Big(\frac{\tilde\beta_t}{\sigma_t^2} - 1
       - \log \frac{\tilde\beta_t}{\sigma_t^2}\Big),

    whose second term has no parameters: it is 0 when :math:`\sigma_t^2 = \tilde\beta_t` (the
    samplers' ``variance="beta_tilde"``) and a positive constant for :math:`\sigma_t^2 =
    \beta_t` (``"beta"``).  Substituting :math:`x_0 = (x_t - \sqrt{1 - \bar\alpha_t}
    \varepsilon)/\sqrt{\bar\alpha_t}` into :math:`\tilde\mu_t` (:func:`q_posterior`) gives
    :math:`\tilde\mu_t = \frac{1}{\sqrt{\alpha_t}} \big(x_t - \frac{\beta_t}{\sqrt{1 -
    \bar\alpha_t}} \varepsilon\big)`, so parameterising the mean the same way with a noise
    predictor, :math:`\mu_\theta = \frac{1}{\sqrt{\alpha_t}} \big(x_t - \frac{\beta_t}{\sqrt{1
    - \bar\alpha_t}} \varepsilon_\theta(x_t, t)\big)` (what the samplers compute through
    :math:`\hat x_0`), turns every term into a weighted noise regression:

    .. math:: L_{t-1} = \frac{\beta_t^2}{2 \sigma_t^2 \alpha_t (1 - \bar\alpha_t)}\,
       \mathbb E_{x_0, \varepsilon} \big\lVert \varepsilon - \varepsilon_\theta\big(
       \sqrt{\bar\alpha_t} x_0 + \sqrt{1 - \bar\alpha_t} \varepsilon, t\big) \big\rVert^2 + C_t.

    :math:`L_0` is the decoder's likelihood of the data given :math:`x_1`; Ho et al. make it a
    Gaussian discretised to the pixel levels, and the :math:`t = 1` term below stands in for
    it (its density times the bin width, up to :math:`\sigma_1` and the edge bins).

    Ho et al. drop the weights, which are largest at the first steps, where little noise is
    left to remove, and sample :math:`t` uniformly, giving

    .. math:: L_\text{simple} = \mathbb E_{t \sim U\{1..T\},\, x_0,\, \varepsilon}
       \big\lVert \varepsilon - \varepsilon_\theta(x_t, t) \big\rVert^2,

    computed here as a mean over every pixel of the batch, not a sum (a constant factor).
    eps_pred, eps (B, ...) -> scalar, in float32 (float64 for float64 inputs), so that a
    half-precision prediction under autocast loses no digits in the sum.
    """
    if eps_pred.shape != eps.shape:
        raise ValueError(
            f"predicted noise {tuple(eps_pred.shape)} must have the noise's shape "
            f"{tuple(eps.shape)}"
        )
    dtype = torch.promote_types(torch.promote_types(eps_pred.dtype, eps.dtype), torch.float32)
    return F.mse_loss(eps_pred.to(dtype), eps.to(dtype))


def linear_noise_prediction_mse(
    schedule: NoiseSchedule,
    x0: Tensor,
    labels: Tensor | None = None,
    *,
    per_pixel: bool = True,
) -> Tensor:
    r"""The noise-prediction loss at every step index of the best *linear* noise predictor: a
    baseline with no network, which knows only the mean and covariance of the data.

    For :math:`x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1 - \bar\alpha_t}\, \varepsilon` with
    :math:`\varepsilon \sim \mathcal N(0, I)` independent of :math:`x_0` (mean :math:`m`,
    covariance :math:`C`), the affine estimate of :math:`\varepsilon` from :math:`x_t` with the
    least squared error (the Wiener filter) and its error per pixel are

    .. math:: \hat\varepsilon = \sqrt{1 - \bar\alpha_t}\, \Sigma_t^{-1}
       (x_t - \sqrt{\bar\alpha_t}\, m), \quad \Sigma_t = \bar\alpha_t C + (1 - \bar\alpha_t) I,
       \qquad \frac1D\, \mathbb E \lVert \varepsilon - \hat\varepsilon \rVert^2
       = \frac1D \sum_{i=1}^D \frac{\bar\alpha_t \lambda_i}{\bar\alpha_t \lambda_i
       + 1 - \bar\alpha_t},

    with :math:`\lambda_i` the eigenvalues of :math:`C`.  ``per_pixel=True`` estimates each
    pixel's noise from that pixel alone (:math:`C` replaced by its diagonal, so the
    :math:`\lambda_i` are the pixel variances); ``per_pixel=False`` uses every pixel, which is
    the exact noise predictor if the data were Gaussian.  With ``labels`` the moments are those
    of each class (a predictor told the label), and the error is averaged over the examples.
    Pixels that never vary (a digit's border) make the baseline strong: there :math:`x_t`
    reveals the noise exactly.  The moments are those of ``x0`` itself (the predictor fitted
    on it).

    x0: (N, ...) data in the model's range, N >= 2 (per class); labels: (N,) integers or None
    -> (T,) float64, the mean squared error per pixel at each step index.
    """
    if x0.ndim < 2 or len(x0) < 2:
        raise ValueError(f"x0 must be a batch (N, ...) of N >= 2 examples, got {tuple(x0.shape)}")
    x = x0.detach().flatten(1).to(device="cpu", dtype=torch.float64)  # (N, D)
    groups = [x]
    if labels is not None:
        labels = torch.as_tensor(labels).cpu()
        if labels.shape != (len(x),) or labels.is_floating_point():
            raise ValueError(f"labels must be ({len(x)},) integers, got {tuple(labels.shape)}")
        groups = [x[labels == k] for k in labels.unique()]
        if min(len(g) for g in groups) < 2:
            raise ValueError("every class in labels needs at least 2 examples")
    ab = schedule.alphas_bar.to("cpu", torch.float64)[:, None]  # (T, 1)
    mse = torch.zeros(len(ab), dtype=torch.float64)
    for g in groups:
        if per_pixel:
            lam = g.var(0, correction=0)  # (D,)
        else:
            lam = torch.linalg.eigvalsh(torch.cov(g.T, correction=0)).clamp(min=0)
        mse += len(g) / len(x) * (ab * lam / (ab * lam + 1 - ab)).mean(1)
    return mse


# ----------------------------------------------------------------------------------------------
# DDIM (pure functions)


def ddim_timesteps(T: int, steps: int) -> Tensor:
    """``steps`` step indices evenly spaced over [0, T-1], increasing, always including T-1
    (sampling starts from the noisiest latent) and, when ``steps >= 2``, 0 (it ends at the
    data).  ``steps = T`` gives every index.  (steps,) int64."""
    if int(steps) != steps or not 1 <= steps <= T:
        raise ValueError(f"steps must be an int in [1, T={T}], got {steps!r}")
    # count down from T-1 so that a single step starts from the noisiest latent
    down = T - 1 - torch.linspace(0, T - 1, int(steps), dtype=torch.float64).round()
    return down.long().flip(0)


def ddim_sigma(schedule: NoiseSchedule, t: Tensor, t_prev: Tensor, eta: float) -> Tensor:
    r"""The noise scale of a DDIM step (Song et al. 2021) from index ``t`` to an earlier
    ``t_prev`` (``-1``: the data itself, :math:`\bar\alpha = 1`):

    .. math:: \sigma = \eta \sqrt{\frac{1 - \bar\alpha_{\text{prev}}}{1 - \bar\alpha_t}}
       \sqrt{1 - \frac{\bar\alpha_t}{\bar\alpha_{\text{prev}}}}.

    ``eta = 0`` makes the sampler deterministic; ``eta = 1`` with ``t_prev = t - 1`` gives
    :math:`\sigma^2 = \tilde\beta_t`, DDPM's posterior variance.  t, t_prev integer tensors of
    one shape -> sigma of that shape, in the schedule's dtype.
    """
    ab = schedule.alphas_bar
    t, t_prev = torch.as_tensor(t, device=ab.device), torch.as_tensor(t_prev, device=ab.device)
    if t.shape != t_prev.shape or bool((t_prev >= t).any()) or bool((t_prev < -1).any()):
        raise ValueError("need t_prev < t, elementwise, with t_prev >= -1 (-1: the data)")
    if bool((t >= schedule.T).any()) or bool((t < 0).any()):
        raise ValueError(f"t must be an index in [0, {schedule.T - 1}]")
    ab_t = ab[t]
    ab_prev = torch.where(t_prev >= 0, ab[t_prev.clamp(min=0)], ab.new_ones(()))
    return eta * ((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)).sqrt()


# ----------------------------------------------------------------------------------------------
# the model


@dataclass
class DiffusionConfig(Config):
    """How a :class:`Diffusion` noises and samples; JSON-serialisable."""

    schedule: str = "linear"  # linear | cosine
    timesteps: int = 1000  # T; DDPM's choice, so each step removes little noise
    p_uncond: float = 0.1  # label dropout: probability of training without the condition
    image_shape: tuple[int, int, int] = (1, 28, 28)  # (C, H, W) of the images
    clip_x0: bool = True  # clamp each step's estimate of x0 to [-1, 1], the data's range
    unet: UNetConfig | None = None  # the network's config, so a checkpoint can rebuild it;
    # Diffusion fills it in when its network is a UNet or a TextConditionedUNet
    text: TextEncoderConfig | None = None  # the text encoder's config of a TextConditionedUNet

    def validate(self) -> None:
        if self.unet is not None and not isinstance(self.unet, UNetConfig):
            raise ValueError(
                f"unet must be a UNetConfig, a dict of one, or None; got {self.unet!r}"
            )
        if self.text is not None and not isinstance(self.text, TextEncoderConfig):
            raise ValueError(
                f"text must be a TextEncoderConfig, a dict of one, or None; got {self.text!r}"
            )
        check_choice(self, "schedule", SCHEDULES)
        if int(self.timesteps) != self.timesteps:
            raise ValueError(f"DiffusionConfig.timesteps must be an int, got {self.timesteps!r}")
        check_positive(self, "timesteps", minimum=2)
        check_range(self, "p_uncond", 0.0, 1.0)
        if len(self.image_shape) != 3 or min(self.image_shape) < 1:
            raise ValueError(f"image_shape must be (C, H, W), got {self.image_shape}")


def _randn(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    """N(0, I) noise with ``like``'s dtype and device, drawn from ``generator`` wherever it
    lives (a CPU generator gives the same numbers for a CUDA model)."""
    device = like.device if generator is None else generator.device
    return torch.randn(shape, generator=generator, dtype=like.dtype, device=device).to(like.device)


def _rand(n: int, like: Tensor, generator: torch.Generator | None) -> Tensor:
    device = like.device if generator is None else generator.device
    return torch.rand(n, generator=generator, device=device).to(like.device)


class Diffusion(nn.Module):
    r"""A noise predictor and the diffusion process around it.

    ``Diffusion(unet, config)`` wraps any module called as ``unet(x, t, y=None, cond=None)``
    that returns a tensor of ``x``'s shape, usually a
    :class:`~genai_course.models.unet.UNet`; whether it takes labels and vectors is read from
    ``unet.config.num_classes`` and ``unet.config.cond_dim`` (both 0 without a config) into
    the attributes ``num_classes`` and ``cond_dim``; ``schedule`` is the float64
    :class:`NoiseSchedule` of ``config``.

    - ``loss(batch)`` is what :class:`genai_course.train.Trainer` minimises;
    - ``eps(x_t, t, ...)`` is the network's noise prediction, with classifier-free guidance;
    - ``ddpm_sample`` and ``ddim_sample`` draw images in [0, 1].

    Sampling runs under ``torch.no_grad()`` with the network in eval mode, on the device and in
    the dtype of the network's parameters, and is deterministic given a ``torch.Generator``.
    For the Trainer's EMA weights, sample from ``trainer.ema_model.module``.
    """

    def __init__(self, unet: nn.Module, config: DiffusionConfig | None = None):
        super().__init__()
        self.unet = unet
        c = config or DiffusionConfig()
        if isinstance(unet, UNet):
            if c.unet is not None and c.unet != unet.config:
                raise ValueError("config.unet differs from the config of the UNet given")
            c = replace(c, unet=unet.config)
        elif isinstance(unet, TextConditionedUNet):
            if (c.unet, c.text) != (None, None) and (c.unet, c.text) != (
                unet.unet.config,
                unet.encoder.config,
            ):
                raise ValueError("config.unet/config.text differ from the configs of the network")
            c = replace(c, unet=unet.unet.config, text=unet.encoder.config)
        self.config = c
        self.schedule = NoiseSchedule.from_name(c.schedule, c.timesteps)
        net = getattr(unet, "config", None)
        self.num_classes = int(getattr(net, "num_classes", 0))
        self.cond_dim = int(getattr(net, "cond_dim", 0))
        channels = getattr(net, "channels", None)
        if channels is not None and channels != c.image_shape[0]:
            raise ValueError(
                f"the network takes {channels}-channel images but image_shape is {c.image_shape}"
            )
        factor = getattr(net, "downsample_factor", 1)
        if c.image_shape[1] % factor or c.image_shape[2] % factor:
            raise ValueError(
                f"image_shape {c.image_shape}: the network needs H and W divisible by {factor}"
            )
        self._device_schedule: NoiseSchedule | None = None

    @classmethod
    def from_config(cls, config: DiffusionConfig) -> Diffusion:
        """A new model with a fresh :class:`UNet` built from ``config.unet`` (with
        ``config.text``: a :class:`TextConditionedUNet`), as
        :func:`~genai_course.pretrained.load_pretrained` rebuilds a checkpoint."""
        if config.unet is None:
            raise ValueError("config.unet is None: give the UNetConfig of the network to build")
        if config.text is not None:
            return cls(TextConditionedUNet.build(config.unet, config.text), config)
        return cls(UNet(config.unet), config)

    @property
    def T(self) -> int:
        """Number of diffusion steps; step indices run over [0, T)."""
        return self.schedule.T

    @property
    def is_conditional(self) -> bool:
        """Whether the network takes labels or a condition vector (guidance needs one)."""
        return bool(self.num_classes or self.cond_dim)

    def _schedule_like(self, x: Tensor) -> NoiseSchedule:
        """The schedule on ``x``'s device and in its dtype, cached."""
        s = self._device_schedule
        if s is None or s.betas.device != x.device or s.betas.dtype != x.dtype:
            s = self._device_schedule = self.schedule.to(x.device, x.dtype)
        return s

    # -- inputs -------------------------------------------------------------------------------

    def _unpack(self, batch: Tensor | tuple | list) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """``x``, ``(x, y)``, ``(x, cond)`` (for a model with a vector but no labels) or
        ``(x, y, cond)`` -> (x in [0, 1], y or None, cond or None).  Labels and vectors the
        network does not take are ignored."""
        parts = list(batch) if isinstance(batch, (tuple, list)) else [batch]
        if not 1 <= len(parts) <= 3:
            raise ValueError(f"expected a batch x, (x, y) or (x, y, cond), got {len(parts)} parts")
        x, rest = parts[0], parts[1:]
        check_image_batch(x, self.config.image_shape, unit_range=True)
        if not self.num_classes and self.cond_dim and len(rest) == 1:
            y, cond = None, rest[0]
        else:
            y = rest[0] if rest else None
            cond = rest[1] if len(rest) > 1 else None
        y = y if self.num_classes else None
        cond = cond if self.cond_dim else None
        k = self.num_classes
        if k and y is None:
            raise ValueError(f"a class-conditional model (num_classes={k}) needs (x, y) batches")
        if self.cond_dim and cond is None:
            raise ValueError(
                f"a model with cond_dim={self.cond_dim} needs (x, y, cond) or (x, cond) batches"
            )
        if y is not None and len(y) and check_values() and (y.min() < 0 or y.max() >= k):
            raise ValueError(
                f"labels must be in [0, {k}), got values in [{int(y.min())}, {int(y.max())}]"
            )
        return x, y, cond

    def _labels(self, y: Tensor | int | None, n: int, device: torch.device) -> Tensor | None:
        """Sampling labels: None, one int for all or (n,) ints (the network checks them)."""
        if y is None:
            return None
        if not self.num_classes:
            raise ValueError("this model is not class-conditional (num_classes=0); pass no y")
        y = torch.as_tensor(y, device=device)
        return y.expand(n) if y.ndim == 0 else y

    def _cond(self, cond: Tensor | None, n: int, like: Tensor) -> Tensor | None:
        """Sampling vectors: None, one (D,) for all or (n, D), in ``like``'s dtype (integer
        token ids keep their dtype)."""
        if cond is None:
            return None
        if not self.cond_dim:
            raise ValueError("this model takes no condition vector (cond_dim=0); pass no cond")
        cond = torch.as_tensor(cond, device=like.device)
        cond = cond.to(like.dtype) if cond.is_floating_point() else cond
        return cond.expand(n, -1) if cond.ndim == 1 else cond

    # -- training -----------------------------------------------------------------------------

    def loss(
        self, batch: Tensor | tuple | list, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        r""":func:`noise_prediction_loss` on a batch ``x``, ``(x, y)`` or ``(x, y, cond)``:

        .. math:: \mathcal L = \frac{1}{B\,D} \sum_b \big\lVert \varepsilon_b -
           \varepsilon_\theta(\sqrt{\bar\alpha_{t_b}} x_b + \sqrt{1 - \bar\alpha_{t_b}}
           \varepsilon_b,\ t_b,\ y_b,\ c_b) \big\rVert^2,

        with images x (B, C, H, W) in [0, 1] mapped to :math:`x_b \in [-1, 1]`, one index
        :math:`t_b` uniform in [0, T) and one :math:`\varepsilon_b \sim \mathcal N(0, I)` per
        image.  *Label dropout*: with probability ``p_uncond`` an example's label becomes the
        "no label" index and its vector zeros (both at once), so the network also learns the
        unconditional model guidance needs.  Returns ``(loss, {"mse": loss})``.
        """
        x, y, cond = self._unpack(batch)
        x0 = to_model_range(x)  # (B, C, H, W) in [-1, 1]
        b = len(x0)
        s = self._schedule_like(x0)
        t_device = x0.device if generator is None else generator.device
        t = torch.randint(0, self.T, (b,), generator=generator, device=t_device).to(x0.device)
        noise = _randn(tuple(x0.shape), x0, generator)
        xt = _diffuse(s, x0, t, noise)
        p = self.config.p_uncond
        if p > 0 and (y is not None or cond is not None):
            drop = _rand(b, x0, generator) < p  # (B,)
            if y is not None:
                y = torch.where(drop, torch.full_like(y, self.num_classes), y)
            if cond is not None:
                cond = cond * (~drop).to(cond.dtype)[:, None]
        mse = noise_prediction_loss(self.unet(xt, t, y, cond), noise)
        return mse, {"mse": mse.detach()}

    # -- the noise prediction, with guidance --------------------------------------------------

    def eps(
        self,
        x_t: Tensor,
        t: Tensor,
        y: Tensor | None = None,
        cond: Tensor | None = None,
        guidance: float | None = None,
    ) -> Tensor:
        r"""The network's noise prediction :math:`\varepsilon_\theta(x_t, t, y, c)`
        (B, C, H, W), for latents x_t (B, C, H, W) in the model's range and indices t (B,).

        With ``guidance = w``, classifier-free guidance (Ho & Salimans 2022):

        .. math:: \tilde\varepsilon = \varepsilon_\theta(x_t, t, \varnothing)
           + w\,\big(\varepsilon_\theta(x_t, t, y, c) - \varepsilon_\theta(x_t, t,
           \varnothing)\big),

        where :math:`\varnothing` is the "no label" index and a zero vector.  ``w = 0`` is the
        unconditional model, ``w = 1`` the conditional one, and ``w > 1`` extrapolates away
        from the unconditional prediction: samples follow the condition more closely and vary
        less.  Ho & Salimans write the same combination as :math:`(1 + w')\,\varepsilon_\theta(
        x_t, t, y, c) - w'\,\varepsilon_\theta(x_t, t, \varnothing)`: their :math:`w'` is this
        ``w - 1`` (their 0 is the conditional model).  The two predictions come from one batch
        of 2B, except at ``w = 1`` and ``w = 0``, where the combination is one of them and one
        pass of B gives it.  ``guidance=None`` is a single pass with the given ``y``/``cond``
        (``None`` meaning no condition).
        """
        if guidance is None:
            return self.unet(x_t, t, y, cond)
        if not self.is_conditional:
            raise ValueError(
                "guidance needs a conditional network (num_classes > 0 or cond_dim > 0)"
            )
        if y is None and cond is None:
            raise ValueError("guidance needs a condition: pass labels y and/or a vector cond")
        y_null = None if y is None else torch.full_like(y, self.num_classes)
        cond_null = None if cond is None else torch.zeros_like(cond)
        if guidance == 1:  # the conditional prediction itself: half the work
            return self.unet(x_t, t, y, cond)
        if guidance == 0:  # the unconditional one
            return self.unet(x_t, t, y_null, cond_null)
        y2 = None if y is None else torch.cat([y, y_null])
        cond2 = None if cond is None else torch.cat([cond, cond_null])
        both = self.unet(torch.cat([x_t, x_t]), torch.cat([t, t]), y2, cond2)  # (2B, C, H, W)
        eps_cond, eps_uncond = both.chunk(2)
        return eps_uncond + guidance * (eps_cond - eps_uncond)

    # -- sampling -----------------------------------------------------------------------------

    def _start(
        self,
        n: int,
        y: Tensor | int | None,
        cond: Tensor | None,
        guidance: float | None,
        generator: torch.Generator | None,
        x_T: Tensor | None,
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """The initial latents (n, C, H, W) and the labels and vectors, checked and expanded."""
        if int(n) != n or n < 1:
            raise ValueError(f"n must be an int >= 1, got {n!r}")
        like = next(self.unet.parameters())
        if guidance is not None and not self.is_conditional:
            raise ValueError(
                "guidance needs a conditional network (num_classes > 0 or cond_dim > 0)"
            )
        y = self._labels(y, n, like.device)
        cond = self._cond(cond, n, like)
        shape = (int(n), *self.config.image_shape)
        if x_T is None:
            return _randn(shape, like, generator), y, cond
        if tuple(x_T.shape) != shape:
            raise ValueError(f"x_T must have shape {shape}, got {tuple(x_T.shape)}")
        return x_T.to(device=like.device, dtype=like.dtype), y, cond

    def _x0_estimate(
        self, s: NoiseSchedule, x: Tensor, t: Tensor, y, cond, guidance
    ) -> tuple[Tensor, Tensor]:
        """(x0 estimate, the noise consistent with it) at latents x and indices t; with
        ``clip_x0`` the estimate is clamped to [-1, 1] and the noise recomputed from it."""
        eps = self.eps(x, t, y, cond, guidance).to(x.dtype)
        x0 = _x0_from_eps(s, x, t, eps)
        if self.config.clip_x0:
            x0 = x0.clamp(-1, 1)
            eps = _eps_from_x0(s, x, t, x0)
        return x0, eps

    def _run(self, order, n, y, cond, guidance, generator, x_T, trajectory_every, step_fn):
        """Shared loop of the samplers: ``x = step_fn(x, i, y, cond)`` for the i-th index of
        ``order``, in eval mode, recording frames when asked."""
        if trajectory_every is not None and (
            int(trajectory_every) != trajectory_every or trajectory_every < 1
        ):
            raise ValueError(f"trajectory_every must be an int >= 1, got {trajectory_every!r}")
        was_training = self.unet.training
        self.unet.eval()
        try:
            x, y, cond = self._start(n, y, cond, guidance, generator, x_T)
            frames = [to_image_range(x)] if trajectory_every else None
            for i in range(len(order)):
                x = step_fn(x, i, y, cond)
                if frames is not None and ((i + 1) % trajectory_every == 0 or i == len(order) - 1):
                    frames.append(to_image_range(x))
        finally:
            self.unet.train(was_training)
        images = to_image_range(x)
        return images if frames is None else (images, torch.stack(frames))

    @torch.no_grad()
    def ddpm_sample(
        self,
        n: int,
        *,
        labels: Tensor | int | None = None,
        cond: Tensor | None = None,
        guidance: float | None = None,
        generator: torch.Generator | None = None,
        variance: str = "beta_tilde",
        x_T: Tensor | None = None,
        trajectory_every: int | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        r"""``n`` images (n, C, H, W) in [0, 1] by ancestral sampling (Ho et al. 2020).

        From :math:`x_T \sim \mathcal N(0, I)`, for index ``t`` = T-1 down to 0:

        .. math:: \hat x_0 = \frac{x_t - \sqrt{1 - \bar\alpha_t}\, \tilde\varepsilon}
           {\sqrt{\bar\alpha_t}}, \qquad
           x_{t-1} = \tilde\mu_t(x_t, \hat x_0) + \sigma_t z, \quad z \sim \mathcal N(0, I),

        with :math:`\tilde\varepsilon` the (guided) prediction of :meth:`eps`, :math:`\hat x_0`
        clamped to [-1, 1] when ``config.clip_x0``, :math:`\tilde\mu_t` the posterior mean of
        :func:`q_posterior`, and no noise at the last step.  ``variance`` picks
        :math:`\sigma_t^2`: ``"beta_tilde"``, the posterior's :math:`\tilde\beta_t` (exact when
        the data is a single point), or ``"beta"``, :math:`\beta_t` (exact for data
        :math:`\mathcal N(0, I)`).  They are Ho et al.'s two extremes; for real data the first
        gives slightly too little spread and the second slightly too much, both fine for
        large T.

        Args:
            n: number of images.
            labels: one int for all or (n,) ints in [0, K] (K: "no label"); None: none.
            cond: condition vectors (n, D), or one (D,) for all; None: none (zeros).
            guidance: classifier-free guidance scale ``w`` (see :meth:`eps`); None: off.
            generator: source of all randomness; the same seed gives the same images.
            variance: ``"beta_tilde"`` or ``"beta"``.
            x_T: the initial latents (n, C, H, W), standard normal noise in the model's
                range, instead of drawing them.
            trajectory_every: also return the latents (as images in [0, 1]) every this many
                steps: a tensor (F, n, C, H, W) whose frame 0 is the initial noise and whose
                last frame is the returned images.
        """
        if variance not in VARIANCES:
            raise ValueError(f"unknown variance {variance!r}; known: {', '.join(VARIANCES)}")
        like = next(self.unet.parameters())
        s = self._schedule_like(like)
        order = torch.arange(self.T - 1, -1, -1)
        var_table = s.posterior_variance if variance == "beta_tilde" else s.betas

        def step(x: Tensor, i: int, y, cond) -> Tensor:
            t_int = int(order[i])
            t = torch.full((len(x),), t_int, dtype=torch.long, device=x.device)
            x0, _ = self._x0_estimate(s, x, t, y, cond, guidance)
            mean, _ = _posterior(s, x0, x, t)
            if t_int == 0:
                return mean
            return mean + var_table[t_int].sqrt() * _randn(tuple(x.shape), x, generator)

        return self._run(order, n, labels, cond, guidance, generator, x_T, trajectory_every, step)

    @torch.no_grad()
    def ddim_sample(
        self,
        n: int,
        *,
        steps: int = 50,
        eta: float = 0.0,
        labels: Tensor | int | None = None,
        cond: Tensor | None = None,
        guidance: float | None = None,
        generator: torch.Generator | None = None,
        x_T: Tensor | None = None,
        trajectory_every: int | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        r"""``n`` images (n, C, H, W) in [0, 1] with DDIM (Song et al. 2021), visiting only
        ``steps`` indices :math:`\tau_S > \dots > \tau_1` of :func:`ddim_timesteps`.

        From :math:`x_{\tau_S} \sim \mathcal N(0, I)`, each step to the previous index
        (:math:`\bar\alpha_\text{prev} = 1` after :math:`\tau_1`, the data) is

        .. math:: x_\text{prev} = \sqrt{\bar\alpha_\text{prev}}\, \hat x_0
           + \sqrt{1 - \bar\alpha_\text{prev} - \sigma^2}\, \tilde\varepsilon + \sigma z,

        with :math:`\hat x_0` and :math:`\tilde\varepsilon` as in :meth:`ddpm_sample` and
        :math:`\sigma` from :func:`ddim_sigma`.  The model is the one DDPM trains: DDIM only
        chooses a different (non-Markovian) forward process with the same marginals.  ``eta =
        0`` is deterministic given ``x_T`` (so latents can be interpolated and images
        encoded); ``eta = 1`` with ``steps = T`` is exactly DDPM with ``"beta_tilde"``.  The
        other arguments are those of :meth:`ddpm_sample`.
        """
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {eta}")
        like = next(self.unet.parameters())
        s = self._schedule_like(like)
        order = ddim_timesteps(self.T, steps).flip(0)  # tau_S, ..., tau_1
        prev = torch.cat([order[1:], order.new_tensor([-1])])
        sigmas = ddim_sigma(s, order, prev, eta)
        one = s.alphas_bar.new_ones(())

        def step(x: Tensor, i: int, y, cond) -> Tensor:
            t_int, p_int = int(order[i]), int(prev[i])
            t = torch.full((len(x),), t_int, dtype=torch.long, device=x.device)
            x0, eps = self._x0_estimate(s, x, t, y, cond, guidance)
            ab_prev = s.alphas_bar[p_int] if p_int >= 0 else one
            sigma = sigmas[i]
            out = ab_prev.sqrt() * x0 + (1 - ab_prev - sigma**2).clamp(min=0).sqrt() * eps
            if eta > 0 and p_int >= 0:
                out = out + sigma * _randn(tuple(x.shape), x, generator)
            return out

        return self._run(order, n, labels, cond, guidance, generator, x_T, trajectory_every, step)

    SAMPLERS = ("ddim", "ddpm")

    def sample(
        self,
        n: int,
        *,
        labels: Tensor | int | None = None,
        generator: torch.Generator | None = None,
        sampler: str = "ddim",
        steps: int = 50,
        guidance: float | None = None,
        prompts: str | Sequence[str] | None = None,
        **options: Any,
    ) -> Tensor:
        """``n`` images (n, C, H, W) in [0, 1]: the sampling protocol of every generator.

        ``sampler="ddim"`` (:meth:`ddim_sample`, ``steps`` steps) or ``"ddpm"``
        (:meth:`ddpm_sample`, all T steps; ``steps`` is ignored). A text-conditioned network
        takes ``prompts`` (one string for all, or n strings) instead of ``labels``; ``options``
        go to the sampler (``eta``, ``variance``, ``x_T``, ``cond``).
        """
        check_choice("Diffusion.sample", "sampler", self.SAMPLERS, value=sampler)
        if prompts is not None:
            if not hasattr(self.unet, "tokenize"):
                raise ValueError("this model is not text-conditioned: pass labels, not prompts")
            if labels is not None:
                raise ValueError("pass prompts or labels, not both")
            prompts = [prompts] * n if isinstance(prompts, str) else list(prompts)
            if len(prompts) != n:
                raise ValueError(f"expected one prompt or {n}, got {len(prompts)}")
            options["cond"] = self.unet.tokenize(prompts)
        elif hasattr(self.unet, "tokenize") and labels is not None:
            raise ValueError("a text-conditioned model takes prompts=..., not labels")
        common = dict(labels=labels, guidance=guidance, generator=generator, **options)
        if sampler == "ddpm":
            return self.ddpm_sample(n, **common)
        return self.ddim_sample(n, steps=steps, **common)
