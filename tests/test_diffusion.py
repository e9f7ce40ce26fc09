"""Chapters 12-13's diffusion models: the forward process, its posterior and the samplers, checked
where the truth is known (Gaussian data, whose exact noise predictor is a formula)."""

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from genai_course.data import load_digits
from genai_course.models.diffusion import (
    Diffusion,
    DiffusionConfig,
    NoiseSchedule,
    cosine_beta_schedule,
    ddim_sigma,
    ddim_timesteps,
    linear_beta_schedule,
    linear_noise_prediction_mse,
    noise_prediction_loss,
    predict_eps_from_v,
    predict_eps_from_x0,
    predict_x0_from_eps,
    predict_x0_from_v,
    q_posterior,
    q_sample,
    to_image_range,
    to_model_range,
    v_target,
)
from genai_course.train import TrainConfig, Trainer

SCHEDULES = ("linear", "cosine")


class GaussianOracle(nn.Module):
    """The exact noise predictor when every pixel of the data (in the model's range) is an
    independent N(m_y, s^2), m_y = ``means[y]``; the last entry of ``means`` is used for
    y = None or the "no label" index.  With x_t = a x0 + b eps, a^2 = abar_t, b^2 = 1 - abar_t,
    the pair (eps, x_t) is jointly Gaussian and

        E[eps | x_t] = b (x_t - a m) / (a^2 s^2 + b^2),

    which is the minimiser of the noise-prediction loss: a perfectly trained network."""

    def __init__(self, schedule: NoiseSchedule, means, std: float, dtype=torch.float64):
        super().__init__()
        self.alphas_bar = schedule.alphas_bar
        self.means = torch.as_tensor(means, dtype=dtype).reshape(-1)
        self.std = std
        k = len(self.means) - 1
        self.config = SimpleNamespace(num_classes=k, cond_dim=0, channels=1, downsample_factor=1)
        self.anchor = nn.Parameter(torch.zeros((), dtype=dtype))  # sets device and dtype

    def forward(self, x, t, y=None, cond=None):
        ab = self.alphas_bar.to(x.dtype)[t].view(-1, 1, 1, 1)
        k = len(self.means) - 1
        y = torch.full_like(t, k) if y is None else y
        m = self.means.to(x.dtype)[y].view(-1, 1, 1, 1)
        return (1 - ab).sqrt() * (x - ab.sqrt() * m) / (ab * self.std**2 + 1 - ab)


class RecordingNet(nn.Module):
    """Records what the diffusion feeds the network and predicts ``0.5 * x_t``."""

    def __init__(self, num_classes=0, cond_dim=0):
        super().__init__()
        self.config = SimpleNamespace(
            num_classes=num_classes, cond_dim=cond_dim, channels=1, downsample_factor=1
        )
        self.anchor = nn.Parameter(torch.zeros(()))
        self.calls = []

    def forward(self, x, t, y=None, cond=None):
        self.calls.append(SimpleNamespace(x=x, t=t, y=y, cond=cond))
        return 0.5 * x


def _oracle_diffusion(mean=0.2, std=0.2, schedule="linear", clip_x0=False, means=None):
    cfg = DiffusionConfig(schedule=schedule, image_shape=(1, 2, 2), clip_x0=clip_x0)
    s = NoiseSchedule.from_name(schedule, cfg.timesteps)
    return Diffusion(GaussianOracle(s, [mean] if means is None else means, std), cfg)


# ----------------------------------------------------------------------------------------------
# schedules


@pytest.mark.parametrize("name", SCHEDULES)
def test_alphas_bar_decrease_strictly_inside_zero_one(name):
    s = NoiseSchedule.from_name(name, 1000)
    assert s.betas.dtype == torch.float64 and s.T == 1000
    assert ((s.betas > 0) & (s.betas < 1)).all()
    ab = s.alphas_bar
    assert (ab > 0).all() and (ab < 1).all()
    assert (ab[1:] < ab[:-1]).all()
    assert ab[-1] < 1e-4  # the chain ends in (almost) pure noise
    torch.testing.assert_close(s.alphas_bar_prev[1:], ab[:-1])
    assert s.alphas_bar_prev[0] == 1


def test_linear_schedule_runs_from_beta_1_to_beta_T_evenly():
    b = linear_beta_schedule(1000)
    assert b[0] == 1e-4 and math.isclose(b[-1], 0.02)
    torch.testing.assert_close(b.diff(), torch.full((999,), (0.02 - 1e-4) / 999, dtype=b.dtype))


def test_cosine_alphas_bar_follow_the_squared_cosine():
    T, s = 1000, 0.008
    betas = cosine_beta_schedule(T, s)
    ab = NoiseSchedule(betas).alphas_bar
    steps = torch.arange(1, T + 1, dtype=torch.float64)  # index t is step t + 1
    f = torch.cos((steps / T + s) / (1 + s) * math.pi / 2) ** 2
    f0 = math.cos(s / (1 + s) * math.pi / 2) ** 2
    # only the last step, where the formula's beta is 1, is clipped to 0.999
    clipped = betas == 0.999
    assert clipped.tolist() == [False] * (T - 1) + [True]
    torch.testing.assert_close(ab[:-1], f[:-1] / f0, atol=0, rtol=1e-9)
    assert ab[-1] < 1e-8


def test_unknown_schedules_and_invalid_betas_are_rejected_clearly():
    with pytest.raises(ValueError, match="known: linear, cosine"):
        NoiseSchedule.from_name("quadratic", 10)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        NoiseSchedule(torch.tensor([0.1, 1.0]))
    with pytest.raises(ValueError, match="schedule must be one of 'linear', 'cosine'"):
        DiffusionConfig(schedule="sigmoid")


# ----------------------------------------------------------------------------------------------
# the forward process and its posterior


@pytest.mark.parametrize("name", SCHEDULES)
def test_closed_form_marginal_matches_iterated_chain(name):
    s = NoiseSchedule.from_name(name, 1000)
    g = torch.Generator().manual_seed(0)
    x0 = torch.tensor([-0.9, 0.1, 0.7], dtype=torch.float64).expand(20_000, 3)
    checkpoints = {0, 3, 50, 400, 999}
    x = x0.clone()
    for t in range(1000):  # x_{t+1} = sqrt(1 - beta) x_t + sqrt(beta) eps, one step at a time
        eps = torch.randn(x.shape, generator=g, dtype=x.dtype)
        x = (1 - s.betas[t]).sqrt() * x + s.betas[t].sqrt() * eps
        if t not in checkpoints:
            continue
        tt = torch.full((len(x0),), t)
        closed = q_sample(s, x0, tt, torch.randn(x.shape, generator=g, dtype=x.dtype))
        mean, var = s.sqrt_alphas_bar[t] * x0[0], 1 - s.alphas_bar[t]
        for draws in (x, closed):  # both are N(sqrt(abar) x0, 1 - abar)
            se_mean, se_var = (var / len(x)).sqrt(), var * math.sqrt(2 / len(x))
            assert ((draws.mean(0) - mean).abs() < 5 * se_mean).all(), (t, draws.mean(0), mean)
            assert ((draws.var(0) - var).abs() < 5 * se_var).all(), (t, draws.var(0), var)


@pytest.mark.parametrize("name", SCHEDULES)
def test_posterior_mean_and_variance_match_their_formulas(name):
    s = NoiseSchedule.from_name(name, 1000)
    t = torch.arange(1000)
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(1000, 1, 2, 2, generator=g, dtype=torch.float64)
    xt = torch.randn(1000, 1, 2, 2, generator=g, dtype=torch.float64)
    mean, var = q_posterior(s, x0, xt, t)
    b, a, ab = s.betas, s.alphas, s.alphas_bar
    ab_prev = torch.cat([torch.ones(1, dtype=ab.dtype), ab[:-1]])
    c0 = (ab_prev.sqrt() * b / (1 - ab)).view(-1, 1, 1, 1)
    ct = (a.sqrt() * (1 - ab_prev) / (1 - ab)).view(-1, 1, 1, 1)
    torch.testing.assert_close(mean, c0 * x0 + ct * xt)
    torch.testing.assert_close(var.view(-1), (1 - ab_prev) / (1 - ab) * b)
    # at index 0 (step 1) the posterior is the data itself
    torch.testing.assert_close(mean[0], x0[0])
    assert var[0].item() == 0.0


@pytest.mark.parametrize("name", SCHEDULES)
def test_posterior_is_the_gaussian_conditional_of_the_joint(name):
    """q(x_{t-1}, x_t | x0) is jointly Gaussian: Var x_{t-1} = 1 - abar_{t-1},
    Var x_t = 1 - abar_t, Cov = sqrt(alpha_t) (1 - abar_{t-1}); conditioning on x_t must give
    q_posterior, exactly and in a Monte Carlo regression of simulated pairs."""
    s = NoiseSchedule.from_name(name, 1000)
    x0 = torch.full((1000,), 0.6, dtype=torch.float64)
    xt = torch.linspace(-2, 2, 1000, dtype=torch.float64)
    t = torch.arange(1000)
    ab, ab_prev, a = s.alphas_bar, s.alphas_bar_prev, s.alphas
    v_prev, v_t, cov = 1 - ab_prev, 1 - ab, a.sqrt() * (1 - ab_prev)
    exact_mean = ab_prev.sqrt() * x0 + cov / v_t * (xt - ab.sqrt() * x0)
    exact_var = v_prev - cov**2 / v_t
    mean, var = q_posterior(s, x0, xt, t)
    torch.testing.assert_close(mean, exact_mean)
    torch.testing.assert_close(var, exact_var, atol=1e-12, rtol=1e-9)

    g = torch.Generator().manual_seed(2)
    n = 400_000
    for k in (1, 30, 500, 999):
        x0k = torch.full((n,), 0.6, dtype=torch.float64)
        prev = q_sample(s, x0k, torch.full((n,), k - 1), torch.randn(n, generator=g).double())
        now = a[k].sqrt() * prev + s.betas[k].sqrt() * torch.randn(n, generator=g).double()
        # least-squares regression of x_{t-1} on x_t: slope, intercept and residual variance
        slope = ((prev - prev.mean()) * (now - now.mean())).mean() / now.var()
        intercept = prev.mean() - slope * now.mean()
        resid = (prev - intercept - slope * now).var()
        ref_mean, ref_var = q_posterior(
            s, x0k[:2], torch.tensor([0.0, 1.0], dtype=torch.float64), torch.tensor([k, k])
        )
        torch.testing.assert_close(intercept, ref_mean[0], atol=0.004, rtol=0)
        torch.testing.assert_close(intercept + slope, ref_mean[1], atol=0.006, rtol=0)
        torch.testing.assert_close(resid, ref_var[0], atol=0, rtol=0.01)


def test_x0_and_eps_predictions_invert_q_sample():
    s = NoiseSchedule.from_name("cosine", 1000)
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(6, 1, 4, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(6, 1, 4, 4, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 1, 10, 200, 700, 998])
    xt = q_sample(s, x0, t, eps)
    torch.testing.assert_close(predict_x0_from_eps(s, xt, t, eps), x0)
    torch.testing.assert_close(predict_eps_from_x0(s, xt, t, x0), eps)


def test_v_is_the_rate_of_change_of_xt_along_the_circle_and_inverts_to_x0_and_eps():
    # x_t = cos(phi) x0 + sin(phi) eps with cos(phi) = sqrt(abar): v = dx_t/dphi (Salimans & Ho)
    s = NoiseSchedule.from_name("linear", 1000)
    g = torch.Generator().manual_seed(4)
    x0 = torch.randn(5, 1, 3, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(5, 1, 3, 3, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 9, 99, 499, 999])
    phi = torch.arccos(s.sqrt_alphas_bar[t]).requires_grad_(True)
    xt_phi = torch.cos(phi).view(-1, 1, 1, 1) * x0 + torch.sin(phi).view(-1, 1, 1, 1) * eps
    (dx_dphi,) = torch.autograd.grad(xt_phi, phi, grad_outputs=torch.ones_like(xt_phi))
    v = v_target(s, x0, t, eps)
    torch.testing.assert_close(v.flatten(1).sum(1), dx_dphi)
    xt = q_sample(s, x0, t, eps)
    torch.testing.assert_close(xt, xt_phi.detach())
    torch.testing.assert_close(predict_x0_from_v(s, xt, t, v), x0)
    torch.testing.assert_close(predict_eps_from_v(s, xt, t, v), eps)


def test_errors_of_the_three_parameterisations_are_one_error_scaled_by_the_snr():
    # for any noise guess: x0-error^2 = eps-error^2 / SNR and v-error^2 = (1 + SNR) x0-error^2,
    # SNR = abar / (1 - abar), pointwise
    s = NoiseSchedule.from_name("cosine", 1000)
    g = torch.Generator().manual_seed(5)
    x0, eps, guess = (torch.randn(4, 1, 3, 3, generator=g, dtype=torch.float64) for _ in range(3))
    t = torch.tensor([0, 50, 500, 990])
    xt = q_sample(s, x0, t, eps)
    x0_hat = predict_x0_from_eps(s, xt, t, guess)
    v_hat = v_target(s, x0_hat, t, guess)
    snr = (s.alphas_bar / (1 - s.alphas_bar))[t].view(-1, 1, 1, 1)
    err_eps, err_x0 = (guess - eps) ** 2, (x0_hat - x0) ** 2
    torch.testing.assert_close(err_x0, err_eps / snr)
    torch.testing.assert_close((v_hat - v_target(s, x0, t, eps)) ** 2, (1 + snr) * err_x0)
    torch.testing.assert_close(predict_eps_from_v(s, xt, t, v_hat), guess)
    with pytest.raises(ValueError, match="xt's shape"):
        predict_x0_from_v(s, xt, t, v_hat[:, :, :2])


@pytest.mark.parametrize(
    "t, match",
    [
        (torch.tensor([0, 1000]), r"\[0, 999\]"),
        (torch.tensor([-1, 5]), r"\[0, 999\]"),
        (torch.tensor([0.0, 5.0]), "integer"),
        (torch.tensor([3]), r"shape \(2,\)"),
    ],
)
def test_timesteps_out_of_range_or_of_the_wrong_type_are_rejected(t, match):
    s = NoiseSchedule.from_name("linear", 1000)
    x0 = torch.zeros(2, 1, 2, 2)
    with pytest.raises(ValueError, match=match):
        q_sample(s, x0, t, torch.zeros_like(x0))
    with pytest.raises(ValueError, match=match):
        q_posterior(s, x0, x0, t)


def test_noise_prediction_loss_is_the_mean_squared_error_in_float32():
    a, b = torch.randn(3, 1, 2, 2).bfloat16(), torch.randn(3, 1, 2, 2)
    loss = noise_prediction_loss(a, b)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, (a.float() - b).pow(2).mean())


@pytest.mark.parametrize("variance", ["beta_tilde", "beta"])
def test_each_elbo_step_is_a_weighted_noise_error_plus_a_constant(variance):
    """KL(q(x_{t-1} | x_t, x0) || N(mu_theta, sigma^2 I)) with mu_theta built from eps_theta as
    the samplers build it equals beta^2 / (2 sigma^2 alpha (1 - abar)) ||eps - eps_theta||^2 plus
    a term free of theta, zero exactly when sigma^2 = beta_tilde."""
    s = NoiseSchedule.from_name("linear", 1000)
    g = torch.Generator().manual_seed(0)
    t = torch.tensor([1, 10, 100, 500, 999])  # index 0 is L_0, where beta_tilde = 0
    shape = (len(t), 1, 4, 4)
    x0, eps, eps_theta = (torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(3))
    xt = q_sample(s, x0, t, eps)
    mu, var_q = q_posterior(s, x0, xt, t)
    mu_theta, _ = q_posterior(s, predict_x0_from_eps(s, xt, t, eps_theta), xt, t)
    b, a, ab = s.betas[t], s.alphas[t], s.alphas_bar[t]
    # the mean in terms of the noise: mu_theta = (x_t - beta / sqrt(1 - abar) eps_theta) / sqrt(a)
    view = (-1, 1, 1, 1)
    direct = (xt - (b / (1 - ab).sqrt()).view(view) * eps_theta) / a.sqrt().view(view)
    torch.testing.assert_close(mu_theta, direct)
    var_p = var_q.view(-1) if variance == "beta_tilde" else b
    d = x0[0].numel()
    kl = 0.5 * (
        d * (var_q.view(-1) / var_p - 1 + (var_p / var_q.view(-1)).log())
        + ((mu - mu_theta) ** 2).flatten(1).sum(1) / var_p
    )
    weight = b**2 / (2 * var_p * a * (1 - ab))
    ratio = var_q.view(-1) / var_p
    constant = 0.5 * d * (ratio - 1 - ratio.log())
    torch.testing.assert_close(kl, weight * ((eps - eps_theta) ** 2).flatten(1).sum(1) + constant)
    assert (constant == 0).all() if variance == "beta_tilde" else (constant > 0).all()


def test_linear_noise_baseline_matches_a_least_squares_fit_on_noised_digits():
    x, y = load_digits("train")
    x0 = to_model_range(x).double().flatten(1).repeat(8, 1)  # (N, 64), fresh noise per copy
    labels = y.repeat(8)
    s = NoiseSchedule.from_name("linear", 1000)
    g = torch.Generator().manual_seed(0)
    closed = {
        (pp, lab is not None): linear_noise_prediction_mse(s, x0, lab, per_pixel=pp)
        for pp, lab in ((True, None), (False, None), (True, labels))
    }
    for t in (5, 100, 400):
        eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
        xt = s.sqrt_alphas_bar[t] * x0 + s.sqrt_one_minus_alphas_bar[t] * eps
        for use_labels in (False, True):
            groups = [labels == k for k in range(10)] if use_labels else [slice(None)]
            sq_pp = sq_full = 0.0
            for k in groups:
                xk, ek = xt[k], eps[k]
                xc, ec = xk - xk.mean(0), ek - ek.mean(0)
                slope = (xc * ec).sum(0) / (xc * xc).sum(0).clamp(min=1e-300)
                sq_pp += ((ec - slope * xc) ** 2).sum()  # one affine fit per pixel
                if not use_labels:  # one affine fit over all pixels (65 numbers per pixel)
                    coef = torch.linalg.lstsq(xc, ec).solution
                    sq_full += ((ec - xc @ coef) ** 2).sum()
            for pp, sq in ((True, sq_pp), (False, sq_full))[: 1 if use_labels else 2]:
                fitted = (sq / eps.numel()).item()
                expected = closed[(pp, use_labels)][t].item()
                assert abs(fitted - expected) < 0.03 * expected + 2e-3, (t, pp, use_labels)


def test_linear_noise_baseline_orders_its_variants_and_spans_zero_to_one():
    x, y = load_digits("train")
    x0 = to_model_range(x)
    s = NoiseSchedule.from_name("linear", 1000)
    pixel = linear_noise_prediction_mse(s, x0)
    full = linear_noise_prediction_mse(s, x0, per_pixel=False)
    told = linear_noise_prediction_mse(s, x0, y)
    assert pixel.shape == (1000,) and pixel.dtype == torch.float64
    assert (full <= pixel + 1e-12).all() and (told <= pixel + 1e-12).all()  # more information
    assert (pixel[1:] < pixel[:-1]).all()  # the more noise, the more x_t is the noise itself
    assert 0.5 < pixel[0] < 1 and pixel[-1] < 1e-3


def test_linear_noise_baseline_rejects_bad_inputs_clearly():
    s = NoiseSchedule.from_name("linear", 10)
    with pytest.raises(ValueError, match="N >= 2"):
        linear_noise_prediction_mse(s, torch.zeros(1, 1, 2, 2))
    with pytest.raises(ValueError, match="labels must be"):
        linear_noise_prediction_mse(s, torch.zeros(4, 1, 2, 2), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="at least 2"):
        linear_noise_prediction_mse(s, torch.randn(4, 1, 2, 2), torch.tensor([0, 0, 0, 1]))


# ----------------------------------------------------------------------------------------------
# DDIM's ingredients


def test_ddim_timesteps_are_evenly_spaced_from_the_noisiest_step_to_the_first():
    taus = ddim_timesteps(1000, 50)
    assert taus[0] == 0 and taus[-1] == 999 and len(taus) == 50
    gaps = taus.diff()
    assert (gaps > 0).all() and gaps.max() - gaps.min() <= 1
    assert torch.equal(ddim_timesteps(1000, 1000), torch.arange(1000))
    assert torch.equal(ddim_timesteps(1000, 1), torch.tensor([999]))
    with pytest.raises(ValueError, match=r"\[1, T=1000\]"):
        ddim_timesteps(1000, 1001)


@pytest.mark.parametrize("name", SCHEDULES)
def test_ddim_sigma_with_eta_one_and_all_steps_is_the_ddpm_posterior_variance(name):
    s = NoiseSchedule.from_name(name, 1000)
    t = torch.arange(1000)
    torch.testing.assert_close(ddim_sigma(s, t, t - 1, eta=1.0) ** 2, s.posterior_variance)
    assert (ddim_sigma(s, t, t - 1, eta=0.0) == 0).all()
    with pytest.raises(ValueError, match="t_prev < t"):
        ddim_sigma(s, t, t, eta=1.0)


def test_ddim_with_eta_one_and_all_steps_reproduces_ddpm_sampling():
    d = _oracle_diffusion(clip_x0=True)  # clipping included: both clip the same x0 estimate
    ddpm = d.ddpm_sample(16, generator=torch.Generator().manual_seed(4))
    ddim = d.ddim_sample(16, steps=1000, eta=1.0, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(ddim, ddpm, atol=1e-9, rtol=0)


def test_ddim_with_eta_zero_is_deterministic_given_the_initial_noise(tiny_unet):
    d = Diffusion(tiny_unet(), DiffusionConfig(timesteps=50, image_shape=(1, 8, 8)))
    x_T = torch.randn(3, 1, 8, 8)
    a = d.ddim_sample(3, steps=10, x_T=x_T, generator=torch.Generator().manual_seed(0))
    b = d.ddim_sample(3, steps=10, x_T=x_T, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    c = d.ddim_sample(3, steps=10, eta=1.0, x_T=x_T, generator=torch.Generator().manual_seed(1))
    assert (a - c).abs().max() > 1e-4  # with eta > 0 the generator matters


# ----------------------------------------------------------------------------------------------
# the samplers with a perfect noise predictor


def _moments_ddpm(s: NoiseSchedule, m: float, sd: float, variance: str):
    """Mean and variance of DDPM's output for N(m, sd^2) data and the exact predictor: every
    step is linear-Gaussian, x <- k x + c + sigma z, so the moments follow a recursion."""
    mu, v = 0.0, 1.0
    for t in range(s.T - 1, -1, -1):
        ab = s.alphas_bar[t].item()
        gain = math.sqrt(ab) * sd**2 / (ab * sd**2 + 1 - ab)  # x0_hat = gain x + (m - gain a m)
        c0, ct = s.posterior_coef_x0[t].item(), s.posterior_coef_xt[t].item()
        k = c0 * gain + ct
        mu = k * mu + c0 * (m - gain * math.sqrt(ab) * m)
        var_t = s.posterior_variance[t] if variance == "beta_tilde" else s.betas[t]
        v = k**2 * v + (var_t.item() if t > 0 else 0.0)
    return mu, v


def _moments_ddim(s: NoiseSchedule, m: float, sd: float, steps: int):
    """The same recursion for DDIM with eta = 0."""
    mu, v = 0.0, 1.0
    taus = ddim_timesteps(s.T, steps).tolist()[::-1]
    for t, prev in zip(taus, taus[1:] + [-1]):
        ab = s.alphas_bar[t].item()
        ab_prev = s.alphas_bar[prev].item() if prev >= 0 else 1.0
        a, b = math.sqrt(ab), math.sqrt(1 - ab)
        gain = a * sd**2 / (ab * sd**2 + 1 - ab)
        # x_prev = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev) eps_hat, eps_hat = (x - a x0_hat)/b
        k = math.sqrt(ab_prev) * gain + math.sqrt(1 - ab_prev) * (1 - a * gain) / b
        offset = (m - gain * a * m) * (math.sqrt(ab_prev) - math.sqrt(1 - ab_prev) * a / b)
        mu, v = k * mu + offset, k**2 * v
    return mu, v


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize(
    "sampler",
    ["ddpm", "ddpm-beta", "ddim-all-steps", "ddim-50-steps"],
)
def test_samplers_with_the_exact_noise_predictor_draw_the_data_distribution(name, sampler):
    m, sd, n = 0.2, 0.2, 4000  # per pixel, in the model's range [-1, 1]
    d = _oracle_diffusion(m, sd, name)
    g = torch.Generator().manual_seed(5)
    s = d.schedule
    if sampler == "ddpm":
        x, (mu, v) = d.ddpm_sample(n, generator=g), _moments_ddpm(s, m, sd, "beta_tilde")
    elif sampler == "ddpm-beta":
        x = d.ddpm_sample(n, generator=g, variance="beta")
        mu, v = _moments_ddpm(s, m, sd, "beta")
    elif sampler == "ddim-all-steps":
        x, (mu, v) = d.ddim_sample(n, steps=1000, generator=g), _moments_ddim(s, m, sd, 1000)
    else:
        x, (mu, v) = d.ddim_sample(n, steps=50, generator=g), _moments_ddim(s, m, sd, 50)
    z = to_model_range(x).flatten()  # 4 independent pixels per image
    assert x.shape == (n, 1, 2, 2)
    # the sampler does what its equations say: moments match the exact recursion ...
    assert abs(z.mean().item() - mu) < 5 * math.sqrt(v / len(z))
    assert abs(z.var().item() - v) < 5 * v * math.sqrt(2 / len(z))
    # ... and with fine steps that is the data distribution; 50 deterministic DDIM steps
    # shrink the spread (each step's denoising is linear in x_t and loses some variance)
    assert abs(mu - m) < 0.01
    assert abs(math.sqrt(v) / sd - 1) < (0.15 if sampler == "ddim-50-steps" else 0.03)


def test_single_point_data_is_recovered_exactly_by_every_sampler():
    d = _oracle_diffusion(mean=-0.3, std=0.0, clip_x0=True)
    g = torch.Generator().manual_seed(6)
    expected = torch.full((8, 1, 2, 2), 0.35, dtype=torch.float64)  # (-0.3 + 1) / 2
    torch.testing.assert_close(d.ddpm_sample(8, generator=g), expected)
    torch.testing.assert_close(d.ddim_sample(8, steps=7, generator=g), expected)
    torch.testing.assert_close(d.ddim_sample(8, steps=20, eta=0.5, generator=g), expected)


def test_class_conditional_sampling_with_guidance_one_draws_each_class():
    # class 0: mean -0.5, class 1: mean 0.5; the "no label" model: mean 0
    d = _oracle_diffusion(std=0.1, means=[-0.5, 0.5, 0.0])
    g = torch.Generator().manual_seed(7)
    y = torch.tensor([0, 1]).repeat(200)
    z = to_model_range(d.ddim_sample(400, steps=100, labels=y, guidance=1.0, generator=g))
    per_pixel = z.flatten(1)
    assert abs(per_pixel[y == 0].mean() + 0.5) < 0.02
    assert abs(per_pixel[y == 1].mean() - 0.5) < 0.02
    uncond = to_model_range(d.ddim_sample(400, steps=100, labels=y, guidance=0.0, generator=g))
    assert abs(uncond.mean()) < 0.02  # w = 0 ignores the labels
    strong = to_model_range(d.ddim_sample(400, steps=100, labels=y, guidance=2.0, generator=g))
    assert strong.flatten(1)[y == 1].mean() > 0.55  # w > 1 pushes past the class mean


# ----------------------------------------------------------------------------------------------
# classifier-free guidance


def test_guidance_zero_is_the_unconditional_eps_and_one_the_conditional(tiny_unet):
    d = Diffusion(
        tiny_unet(num_classes=3, cond_dim=5), DiffusionConfig(image_shape=(1, 8, 8))
    ).eval()
    g = torch.Generator().manual_seed(8)
    x = torch.randn(4, 1, 8, 8, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    y, cond = torch.tensor([0, 1, 2, 1]), torch.randn(4, 5, generator=g)
    with torch.no_grad():
        uncond, conditional = d.eps(x, t), d.eps(x, t, y, cond)
        assert (uncond - conditional).abs().max() > 1e-3
        torch.testing.assert_close(d.eps(x, t, y, cond, guidance=0.0), uncond)
        torch.testing.assert_close(d.eps(x, t, y, cond, guidance=1.0), conditional)
        w3 = d.eps(x, t, y, cond, guidance=3.0)
        torch.testing.assert_close(w3, uncond + 3 * (conditional - uncond), atol=1e-5, rtol=1e-5)
        # text-to-image: a vector alone is a condition too
        torch.testing.assert_close(d.eps(x, t, cond=cond, guidance=1.0), d.eps(x, t, cond=cond))


def test_guidance_runs_both_predictions_in_one_batch():
    net = RecordingNet(num_classes=3)
    d = Diffusion(net, DiffusionConfig(image_shape=(1, 2, 2)))
    x, t, y = torch.randn(5, 1, 2, 2), torch.arange(5), torch.tensor([0, 1, 2, 0, 1])
    d.eps(x, t, y, guidance=2.0)
    assert len(net.calls) == 1
    call = net.calls[0]
    assert call.x.shape == (10, 1, 2, 2)
    assert torch.equal(call.y, torch.tensor([0, 1, 2, 0, 1, 3, 3, 3, 3, 3]))


@pytest.mark.parametrize("guidance, expected_y", [(1.0, [0, 1, 2]), (0.0, [3, 3, 3])])
def test_guidance_one_and_zero_take_one_pass_of_the_prediction_they_equal(guidance, expected_y):
    net = RecordingNet(num_classes=3, cond_dim=2)
    d = Diffusion(net, DiffusionConfig(image_shape=(1, 2, 2)))
    x, t, y, cond = (
        torch.randn(3, 1, 2, 2),
        torch.arange(3),
        torch.tensor([0, 1, 2]),
        torch.ones(3, 2),
    )
    d.eps(x, t, y, cond, guidance=guidance)
    assert len(net.calls) == 1 and net.calls[0].x.shape == (3, 1, 2, 2)
    assert net.calls[0].y.tolist() == expected_y
    assert torch.equal(net.calls[0].cond, cond * guidance)  # zeros: the null condition


def test_guidance_needs_a_conditional_model_and_a_condition(tiny_unet):
    plain = Diffusion(tiny_unet(), DiffusionConfig(timesteps=10, image_shape=(1, 8, 8)))
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([1, 2])
    with pytest.raises(ValueError, match="conditional network"):
        plain.eps(x, t, guidance=2.0)
    with pytest.raises(ValueError, match="conditional network"):
        plain.ddim_sample(2, steps=2, guidance=2.0)
    conditional = Diffusion(
        tiny_unet(num_classes=3), DiffusionConfig(timesteps=10, image_shape=(1, 8, 8))
    )
    with pytest.raises(ValueError, match="needs a condition"):
        conditional.ddpm_sample(2, guidance=2.0)
    with pytest.raises(ValueError, match="not class-conditional"):
        plain.ddpm_sample(2, labels=1)


# ----------------------------------------------------------------------------------------------
# the training loss


def test_loss_regresses_the_noise_of_images_scaled_to_minus_one_one():
    net = RecordingNet()
    d = Diffusion(net, DiffusionConfig(image_shape=(1, 2, 2)))
    x = torch.rand(4000, 1, 2, 2, generator=torch.Generator().manual_seed(9))
    loss, logs = d.loss(x)
    call = net.calls[0]
    assert call.t.dtype == torch.long and call.t.min() >= 0 and call.t.max() <= 999
    assert abs(call.t.double().mean().item() - 499.5) < 15  # uniform over the indices
    s = d.schedule
    ab = s.alphas_bar[call.t].float().view(-1, 1, 1, 1)
    eps = (call.x - ab.sqrt() * (2 * x - 1)) / (1 - ab).sqrt()  # what must have been drawn
    assert abs(eps.mean()) < 0.02 and abs(eps.std() - 1) < 0.02
    torch.testing.assert_close(loss, (0.5 * call.x - eps).pow(2).mean(), atol=1e-4, rtol=1e-4)
    assert torch.equal(logs["mse"], loss.detach())


def test_label_dropout_nulls_labels_and_vectors_together_at_rate_p_uncond():
    net = RecordingNet(num_classes=3, cond_dim=2)
    d = Diffusion(net, DiffusionConfig(image_shape=(1, 2, 2), p_uncond=0.3))
    x = torch.rand(4000, 1, 2, 2)
    y = torch.randint(0, 3, (4000,))
    cond = torch.randn(4000, 2)
    d.loss((x, y, cond), generator=torch.Generator().manual_seed(10))
    call = net.calls[0]
    dropped = call.y == 3
    assert abs(dropped.float().mean() - 0.3) < 0.03
    assert torch.equal(call.y[~dropped], y[~dropped])
    assert (call.cond[dropped] == 0).all() and torch.equal(call.cond[~dropped], cond[~dropped])

    no_drop = Diffusion(net, DiffusionConfig(image_shape=(1, 2, 2), p_uncond=0.0))
    no_drop.loss((x, y, cond))
    assert torch.equal(net.calls[-1].y, y)


def test_a_vector_only_model_takes_x_cond_batches_and_ignores_what_it_does_not_use():
    net = RecordingNet(cond_dim=2)
    d = Diffusion(net, DiffusionConfig(image_shape=(1, 2, 2), p_uncond=0.0))
    x, cond = torch.rand(3, 1, 2, 2), torch.randn(3, 2)
    d.loss((x, cond))
    assert net.calls[-1].y is None and torch.equal(net.calls[-1].cond, cond)
    plain = Diffusion(RecordingNet(), DiffusionConfig(image_shape=(1, 2, 2)))
    plain.loss((x, torch.tensor([0, 1, 2]), cond))  # labels and vectors of the data: ignored
    assert plain.unet.calls[-1].y is None and plain.unet.calls[-1].cond is None


def test_loss_is_reproducible_given_a_generator(tiny_unet):
    d = Diffusion(tiny_unet(), DiffusionConfig(image_shape=(1, 8, 8)))
    x = torch.rand(4, 1, 8, 8)
    a, _ = d.loss(x, generator=torch.Generator().manual_seed(11))
    b, _ = d.loss(x, generator=torch.Generator().manual_seed(11))
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "batch, match",
    [
        (torch.rand(2, 1, 28, 28), r"\(N, 1, 8, 8\)"),
        (torch.rand(2, 1, 8, 8) * 2 - 1, r"pixels in \[0, 1\]"),
        (torch.rand(2, 1, 8, 8), r"needs \(x, y\) batches"),
        ((torch.rand(2, 1, 8, 8), torch.tensor([0, 3])), r"labels must be in \[0, 3\)"),
    ],
)
def test_bad_training_batches_are_rejected_with_clear_errors(batch, match, tiny_unet):
    d = Diffusion(tiny_unet(num_classes=3), DiffusionConfig(image_shape=(1, 8, 8)))
    with pytest.raises(ValueError, match=match):
        d.loss(batch)


def test_diffusion_rejects_an_image_shape_its_network_cannot_take(tiny_unet):
    with pytest.raises(ValueError, match="divisible by 2"):
        Diffusion(tiny_unet(), DiffusionConfig(image_shape=(1, 7, 8)))
    with pytest.raises(ValueError, match="1-channel"):
        Diffusion(tiny_unet(), DiffusionConfig(image_shape=(3, 8, 8)))
    with pytest.raises(ValueError, match="p_uncond"):
        DiffusionConfig(p_uncond=1.0)


def test_training_a_tiny_unet_lowers_the_loss(tiny_unet):
    torch.manual_seed(0)
    x, y = load_digits("train")
    x, y = x[:32], y[:32]
    d = Diffusion(tiny_unet(num_classes=10), DiffusionConfig(image_shape=(1, 8, 8)))

    def held_out_loss():  # the same timesteps and noise before and after
        with torch.no_grad():
            batch = (x.repeat(8, 1, 1, 1), y.repeat(8))
            return d.loss(batch, generator=torch.Generator().manual_seed(12))[0].item()

    before = held_out_loss()
    opt = torch.optim.Adam(d.parameters(), lr=3e-3)
    for _ in range(40):
        loss, _ = d.loss((x, y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = held_out_loss()
    assert after < 0.6 * before, (before, after)


def test_trainer_trains_diffusion_through_its_loss_with_an_ema(tiny_unet):
    x, y = load_digits("train")
    d = Diffusion(tiny_unet(num_classes=10), DiffusionConfig(image_shape=(1, 8, 8)))
    cfg = TrainConfig(steps=20, batch_size=16, lr=3e-3, ema_decay=0.9, progress=False, device="cpu")
    trainer = Trainer(d, (x[:64], y[:64]), cfg)

    def fixed_loss(model):
        with torch.no_grad():
            return model.loss((x[:64], y[:64]), torch.Generator().manual_seed(15))[0].item()

    before = fixed_loss(d)
    history = trainer.fit()
    assert "mse" in history.keys() and math.isfinite(history.last("mse"))
    assert fixed_loss(d) < 0.8 * before
    ema = trainer.ema_model.module
    assert not torch.equal(ema.unet.conv_in.weight, d.unet.conv_in.weight)  # an average
    images = ema.ddim_sample(4, steps=3, labels=torch.arange(4), guidance=2.0)
    assert images.shape == (4, 1, 8, 8) and images.min() >= 0 and images.max() <= 1


# ----------------------------------------------------------------------------------------------
# sampling mechanics


def test_sampling_is_reproducible_and_returns_images_and_trajectories_in_unit_range(tiny_unet):
    d = Diffusion(tiny_unet(), DiffusionConfig(timesteps=20, image_shape=(1, 8, 8)))
    a = d.ddpm_sample(3, generator=torch.Generator().manual_seed(13))
    b = d.ddpm_sample(3, generator=torch.Generator().manual_seed(13))
    assert torch.equal(a, b) and a.shape == (3, 1, 8, 8)
    assert a.min() >= 0 and a.max() <= 1
    images, frames = d.ddpm_sample(
        3, generator=torch.Generator().manual_seed(13), trajectory_every=5
    )
    assert frames.shape == (5, 3, 1, 8, 8)  # the noise, then after steps 5, 10, 15 and 20
    assert torch.equal(frames[-1], images) and torch.equal(images, a)
    _, frames = d.ddim_sample(3, steps=7, trajectory_every=3)
    assert frames.shape == (4, 3, 1, 8, 8)  # the noise, then after steps 3, 6 and 7


def test_sampling_runs_in_eval_mode_and_restores_training_mode(tiny_unet):
    d = Diffusion(tiny_unet(dropout=0.5), DiffusionConfig(timesteps=10, image_shape=(1, 8, 8)))
    d.train()
    a = d.ddim_sample(2, steps=4, generator=torch.Generator().manual_seed(14))
    b = d.ddim_sample(2, steps=4, generator=torch.Generator().manual_seed(14))
    assert torch.equal(a, b)  # dropout off while sampling
    assert d.unet.training


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda d: d.ddpm_sample(0), "n must be"),
        (lambda d: d.ddpm_sample(2, variance="sigma"), "known: beta_tilde, beta"),
        (lambda d: d.ddpm_sample(2, x_T=torch.randn(2, 1, 4, 4)), r"\(2, 1, 8, 8\)"),
        (lambda d: d.ddim_sample(2, steps=11), r"\[1, T=10\]"),
        (lambda d: d.ddim_sample(2, eta=1.5), r"eta must be in \[0, 1\]"),
        (lambda d: d.ddim_sample(2, steps=2, trajectory_every=0), "trajectory_every"),
    ],
)
def test_bad_sampling_arguments_are_rejected_with_clear_errors(call, match, tiny_unet):
    d = Diffusion(tiny_unet(), DiffusionConfig(timesteps=10, image_shape=(1, 8, 8)))
    with pytest.raises(ValueError, match=match):
        call(d)


def test_range_maps_are_inverse_on_unit_pixels():
    x = torch.rand(2, 1, 3, 3)
    torch.testing.assert_close(to_image_range(to_model_range(x)), x)
    assert to_model_range(torch.tensor(0.0)) == -1 and to_model_range(torch.tensor(1.0)) == 1


def test_a_unet_diffusion_round_trips_through_the_pretrained_folder(tmp_path, tiny_unet):
    from genai_course.pretrained import load_pretrained, save_pretrained

    net = tiny_unet(num_classes=3)
    model = Diffusion(net, DiffusionConfig(timesteps=20, image_shape=(1, 8, 8)))
    assert model.config.unet == net.config  # recorded for the checkpoint
    save_pretrained(model, "tiny-diffusion", tmp_path, command="test", metrics={})
    loaded = load_pretrained("tiny-diffusion", folder=tmp_path)
    assert loaded.config == model.config and loaded.T == 20
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    a = model.ddim_sample(4, steps=5, labels=torch.tensor([0, 1, 2, 0]), generator=g1)
    b = loaded.ddim_sample(4, steps=5, labels=torch.tensor([0, 1, 2, 0]), generator=g2)
    torch.testing.assert_close(a, b)


def test_from_config_needs_the_networks_config():
    with pytest.raises(ValueError, match="config.unet is None"):
        Diffusion.from_config(DiffusionConfig())
