"""Chapter 01's Gaussian mixture (genai_course.models.gmm) and its closed-form Gaussian KL."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from genai_course.models import GaussianMixture, gaussian_kl
from genai_course.models.gmm import GMMConfig


def _gmm(k=3, d=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    model = GaussianMixture(GMMConfig(components=k, dim=d), generator=g)
    with torch.no_grad():
        model.logits.copy_(torch.randn(k, generator=g))
        model.raw_scale.add_(0.3 * torch.randn(k, d, d, generator=g))
    return model


def test_gmm_log_prob_matches_scipy():
    model = _gmm(k=3, d=3).double()
    x = torch.randn(50, 3, dtype=torch.float64)
    w, mu, cov = model.weights.detach(), model.means.detach(), model.covariances.detach()
    ref = np.log(
        sum(
            w[k].item() * multivariate_normal(mu[k].numpy(), cov[k].numpy()).pdf(x.numpy())
            for k in range(3)
        )
    )
    np.testing.assert_allclose(model.log_prob(x).detach().numpy(), ref, rtol=1e-10)


def test_gmm_density_integrates_to_one():
    model = _gmm()
    xs = torch.linspace(-8, 8, 801)
    gx, gy = torch.meshgrid(xs, xs, indexing="xy")
    grid = torch.stack([gx.flatten(), gy.flatten()], 1)
    cell = (xs[1] - xs[0]) ** 2
    with torch.no_grad():
        total = (model.log_prob(grid).exp().sum() * cell).item()
    assert total == pytest.approx(1.0, abs=1e-3)


def test_gmm_samples_have_the_mixture_moments():
    model = _gmm()
    x, k = model.sample_with_components(200_000, generator=torch.Generator().manual_seed(1))
    w, mu, cov = model.weights.detach(), model.means.detach(), model.covariances.detach()
    mean = (w[:, None] * mu).sum(0)
    second = (w[:, None, None] * (cov + mu[:, :, None] * mu[:, None, :])).sum(0)
    torch.testing.assert_close(x.mean(0), mean, atol=0.02, rtol=0)
    torch.testing.assert_close(x.T @ x / len(x), second, atol=0.05, rtol=0)
    torch.testing.assert_close(
        torch.bincount(k, minlength=3).float() / len(k), w, atol=0.01, rtol=0
    )


def test_gaussian_kl_closed_form_matches_monte_carlo():
    mu_p, var_p = torch.tensor([0.3, -1.0]), torch.tensor([0.5, 2.0])
    mu_q, var_q = torch.tensor([0.0, 0.5]), torch.tensor([1.0, 0.7])
    p = torch.distributions.Normal(mu_p, var_p.sqrt())
    q = torch.distributions.Normal(mu_q, var_q.sqrt())
    x = p.sample((500_000,))
    mc = (p.log_prob(x) - q.log_prob(x)).sum(-1).mean()
    closed = gaussian_kl(mu_p, var_p, mu_q, var_q)
    assert closed.item() == pytest.approx(mc.item(), abs=0.01)
    assert gaussian_kl(mu_p, var_p, mu_p, var_p).item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="positive"):
        gaussian_kl(mu_p, -var_p, mu_q, var_q)


def test_gmm_rejects_points_of_the_wrong_dimension():
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        _gmm().log_prob(torch.zeros(4, 3))


def test_gmm_nll_is_minimised_by_gradient_descent():
    from genai_course.data import make_ring
    from genai_course.train import TrainConfig, Trainer

    x, _ = make_ring(2000, seed=0)
    model = GaussianMixture(GMMConfig(components=8), generator=torch.Generator().manual_seed(0))
    t = Trainer(
        model, x, TrainConfig(steps=300, batch_size=256, lr=0.05, progress=False), val_data=x
    )
    before = t.evaluate()["val_loss"]
    t.fit()
    assert t.history.last("val_loss") < before - 1.0
    assert math.isfinite(t.history.last("val_loss"))
