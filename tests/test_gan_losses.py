"""GAN objectives of chapters 06 and 07: identities, sign conventions and the gradient penalty."""

import functools
import math

import pytest
import torch

from genai_course.models.gan_losses import (
    discriminator_loss,
    generator_loss_nonsaturating,
    generator_loss_saturating,
    gradient_penalty,
    jensen_shannon,
    optimal_discriminator,
    wasserstein_critic_loss,
    wasserstein_generator_loss,
)

LOG4 = math.log(4.0)


def _gaussian(x, mean, std):
    return torch.exp(-0.5 * ((x - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))


def _grid_densities():
    """Two 1-D Gaussians tabulated on a grid wide and fine enough to integrate to 1.

    Equal widths keep p_g / p_data = exp(2.5 x - 0.625) within float64 on the whole grid, so
    D* never rounds to exactly 0 or 1 where a density is still positive.
    """
    x = torch.linspace(-10.0, 10.0, 20001, dtype=torch.float64)
    dx = (x[1] - x[0]).item()
    return _gaussian(x, -1.0, 1.0), _gaussian(x, 1.5, 1.0), dx


def _value(d, p_data, p_g, dx):
    """V(D, G) = E_data[log D] + E_g[log(1 - D)] by a Riemann sum on the grid."""
    return ((torch.xlogy(p_data, d) + torch.xlogy(p_g, 1 - d)).sum() * dx).item()


# the optimal discriminator


def test_grid_densities_integrate_to_one():
    p_data, p_g, dx = _grid_densities()
    assert (p_data.sum() * dx).item() == pytest.approx(1.0, abs=1e-9)
    assert (p_g.sum() * dx).item() == pytest.approx(1.0, abs=1e-9)


def test_value_at_optimal_discriminator_equals_two_js_minus_log4():
    p_data, p_g, dx = _grid_densities()
    d_star = optimal_discriminator(p_data, p_g)
    js = jensen_shannon(p_data, p_g, dx)
    assert 0.1 < js < math.log(2)  # clearly different distributions, JS below its maximum
    assert _value(d_star, p_data, p_g, dx) == pytest.approx(2 * js - LOG4, abs=1e-8)


def test_value_is_minus_log4_when_generator_matches_data():
    p_data, _, dx = _grid_densities()
    d_star = optimal_discriminator(p_data, p_data)
    assert torch.allclose(d_star, torch.full_like(d_star, 0.5))
    assert jensen_shannon(p_data, p_data, dx) == pytest.approx(0.0, abs=1e-12)
    assert _value(d_star, p_data, p_data, dx) == pytest.approx(-LOG4, abs=1e-8)


def test_optimal_discriminator_maximises_value_pointwise():
    p_data, p_g, dx = _grid_densities()
    d_star = optimal_discriminator(p_data, p_g)
    assert 0 < d_star.min() and d_star.max() < 1
    best = _value(d_star, p_data, p_g, dx)
    g = torch.Generator().manual_seed(0)
    for scale in (0.3, 0.05):
        noise = scale * torch.randn(d_star.shape, generator=g, dtype=torch.float64)
        d = torch.sigmoid(torch.logit(d_star) + noise)
        assert _value(d, p_data, p_g, dx) < best
    # and at every single point: the integrand p log D + q log(1 - D) peaks at D*
    i = int(p_data.argmax())
    pointwise = lambda d: p_data[i] * math.log(d) + p_g[i] * math.log(1 - d)  # noqa: E731
    ds = d_star[i].item()
    assert pointwise(ds) > pointwise(ds - 0.01)
    assert pointwise(ds) > pointwise(ds + 0.01)


def test_optimal_discriminator_is_one_half_where_both_densities_vanish():
    d = optimal_discriminator(torch.tensor([0.0, 2.0, 0.0]), torch.tensor([0.0, 0.0, 1.0]))
    assert d.tolist() == [0.5, 1.0, 0.0]


def test_jensen_shannon_of_disjoint_densities_is_log2():
    p = torch.tensor([1.0, 1.0, 0.0, 0.0])
    q = torch.tensor([0.0, 0.0, 1.0, 1.0])
    assert jensen_shannon(p, q, dx=0.5) == pytest.approx(math.log(2), abs=1e-12)


def test_jensen_shannon_rejects_mismatched_grids():
    with pytest.raises(ValueError, match="same shape"):
        jensen_shannon(torch.ones(3), torch.ones(4), dx=0.1)
    with pytest.raises(ValueError, match="dx must be > 0"):
        jensen_shannon(torch.ones(3), torch.ones(3), dx=0.0)


# sign conventions of the losses


def test_discriminator_loss_is_log4_at_chance_and_zero_for_perfect_discriminator():
    zeros = torch.zeros(8)
    assert discriminator_loss(zeros, zeros).item() == pytest.approx(LOG4, rel=1e-6)
    # D(x) = sigmoid(20) on reals, D(G(z)) = sigmoid(-20) on fakes: loss 2 softplus(-20) = 4e-9
    # (float64: in float32, log(1 + 2e-9) rounds to 0)
    real, fake = torch.full((8,), 20.0, dtype=torch.float64), torch.full((8,), -20.0).double()
    loss = discriminator_loss(real, fake)
    assert loss.item() == pytest.approx(2 * math.log1p(math.exp(-20)), rel=1e-5)
    loss32 = discriminator_loss(real.float(), fake.float())
    assert 0 <= loss32.item() < 1e-8
    # and a discriminator fooled the other way round pays about 2 * 20 nats
    swapped = discriminator_loss(torch.full((8,), -20.0), torch.full((8,), 20.0))
    assert swapped.item() == pytest.approx(40.0, rel=1e-6)


def test_generator_losses_against_perfect_discriminator():
    fake = torch.tensor([-20.0], requires_grad=True)
    saturating = generator_loss_saturating(fake)
    (grad_sat,) = torch.autograd.grad(saturating, fake)
    # E[log(1 - D)] with D = sigmoid(-20): -softplus(-20) = -2.06e-9, slope -sigmoid(-20)
    assert saturating.item() == pytest.approx(-math.log1p(math.exp(-20)), rel=1e-4)
    assert abs(saturating.item()) < 1e-8
    assert abs(grad_sat.item()) < 1e-8

    fake = torch.tensor([-20.0], requires_grad=True)
    nonsaturating = generator_loss_nonsaturating(fake)
    (grad_ns,) = torch.autograd.grad(nonsaturating, fake)
    # -E[log D] = softplus(20) = 20 + 2e-9, slope -(1 - sigmoid(-20)) = -1 + 2e-9
    assert nonsaturating.item() == pytest.approx(20.0, rel=1e-6)
    assert grad_ns.item() == pytest.approx(-1.0, rel=1e-6)


def test_generator_losses_at_chance():
    zeros = torch.zeros(4)
    assert generator_loss_saturating(zeros).item() == pytest.approx(-math.log(2), rel=1e-6)
    assert generator_loss_nonsaturating(zeros).item() == pytest.approx(math.log(2), rel=1e-6)


def test_saturating_gradient_vanishes_where_discriminator_rejects_fakes():
    logits = torch.linspace(-15.0, 5.0, 21, requires_grad=True)
    (g_sat,) = torch.autograd.grad(generator_loss_saturating(logits) * len(logits), logits)
    (g_ns,) = torch.autograd.grad(generator_loss_nonsaturating(logits) * len(logits), logits)
    s = torch.sigmoid(logits.detach())
    assert torch.allclose(g_sat, -s, atol=1e-7)  # d/dl log(1 - sigmoid(l)) = -sigmoid(l)
    assert torch.allclose(g_ns, -(1 - s), atol=1e-7)  # d/dl -log sigmoid(l) = -(1 - sigmoid(l))
    rejected = logits.detach() < -5  # D(G(z)) < 0.007
    assert g_sat[rejected].abs().max() < 7e-3
    assert g_ns[rejected].abs().min() > 0.99
    # both push the fake logit up (towards "real") everywhere
    assert (g_sat < 0).all() and (g_ns < 0).all()


def test_losses_are_stable_for_huge_logits():
    big = torch.tensor([1e4, -1e4])
    for loss in (
        discriminator_loss(big, -big),
        generator_loss_saturating(big),
        generator_loss_nonsaturating(big),
    ):
        assert torch.isfinite(loss)


def test_wasserstein_losses_signs():
    real = torch.tensor([3.0, 5.0])  # mean 4
    fake = torch.tensor([-1.0, 0.0, 1.0])  # mean 0
    # a critic that scores reals higher than fakes has a negative loss (it is doing well)
    assert wasserstein_critic_loss(real, fake).item() == pytest.approx(-4.0)
    assert wasserstein_critic_loss(fake, real).item() == pytest.approx(4.0)
    assert wasserstein_generator_loss(fake).item() == pytest.approx(0.0)
    assert wasserstein_generator_loss(real).item() == pytest.approx(-4.0)


def test_wasserstein_generator_gradient_raises_critic_score():
    fake = torch.tensor([0.5, -0.5], requires_grad=True)
    (grad,) = torch.autograd.grad(wasserstein_generator_loss(fake), fake)
    assert torch.allclose(grad, torch.full((2,), -0.5))


# gradient penalty


def test_gradient_penalty_of_linear_critic_is_exact():
    w = torch.tensor([0.6, -1.2, 2.0, 0.3])
    critic = torch.nn.Linear(4, 1)
    with torch.no_grad():
        critic.weight.copy_(w[None])
    real, fake = torch.randn(16, 4), torch.randn(16, 4)
    gp = gradient_penalty(critic, real, fake)
    assert gp.item() == pytest.approx((w.norm().item() - 1) ** 2, rel=1e-6)
    # the penalty is differentiable in the critic's parameters: d/dw (|w| - 1)^2
    gp.backward()
    expected = 2 * (w.norm() - 1) * w / w.norm()
    assert torch.allclose(critic.weight.grad[0], expected, atol=1e-5)


def test_gradient_penalty_is_zero_for_unit_gradient_critic_on_images():
    w = torch.randn(1, 28, 28)
    w = w / w.norm()
    critic = lambda x: (x * w).flatten(1).sum(1)  # noqa: E731
    real, fake = torch.rand(5, 1, 28, 28), torch.rand(5, 1, 28, 28)
    assert gradient_penalty(critic, real, fake).item() == pytest.approx(0.0, abs=1e-10)


def test_gradient_penalty_of_quadratic_critic_matches_hand_derivation():
    # f(x) = a |x|^2 has gradient 2 a x, so GP = mean_n (2 a |x_hat_n| - 1)^2
    a = 0.7
    critic = lambda x: a * x.pow(2).sum(dim=(1, 2))  # noqa: E731
    real, fake = (
        torch.randn(6, 3, 2, dtype=torch.float64),
        torch.randn(6, 3, 2, dtype=torch.float64),
    )
    gp = gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(123))
    eps = torch.rand(6, generator=torch.Generator().manual_seed(123)).double()[:, None, None]
    x_hat = eps * real + (1 - eps) * fake
    expected = (2 * a * x_hat.flatten(1).norm(dim=1) - 1).pow(2).mean()
    assert gp.item() == pytest.approx(expected.item(), rel=1e-12)


def test_gradient_penalty_is_reproducible_with_a_seeded_generator():
    critic = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    real, fake = torch.randn(10, 2), torch.randn(10, 2)
    gp1 = gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(1))
    gp2 = gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(1))
    assert gp1.item() == gp2.item()


def test_gradient_penalty_accepts_conditional_critic_through_partial():
    w = torch.tensor([[3.0, 0.0], [0.0, 0.5]])  # one weight row per label

    def critic(x, labels):
        return (x * w[labels]).sum(1)

    labels = torch.tensor([0, 1, 1, 0])
    gp = gradient_penalty(
        functools.partial(critic, labels=labels), torch.randn(4, 2), torch.randn(4, 2)
    )
    # norms 3 and 0.5: ((3 - 1)^2 + (0.5 - 1)^2) / 2
    assert gp.item() == pytest.approx((4 + 0.25) / 2)


def test_gradient_penalty_does_not_backpropagate_into_the_samples():
    fake = torch.randn(3, 2, requires_grad=True)
    critic = torch.nn.Linear(2, 1)
    gradient_penalty(critic, torch.randn(3, 2), fake * 2).backward()
    assert fake.grad is None


def test_gradient_penalty_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        gradient_penalty(torch.nn.Linear(2, 1), torch.randn(3, 2), torch.randn(4, 2))
