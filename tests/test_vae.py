"""Chapters 03-04's VAE: the bounds it rests on, checked where the truth is known."""

import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal

from genai_course.data import load_digits
from genai_course.models.vae import (
    VAE,
    AnnealedVAELoss,
    ProbabilisticPCA,
    VAEConfig,
    active_units,
    aggregate_posterior_moments,
    bernoulli_log_likelihood,
    bernoulli_nll_floor,
    free_bits_kl,
    gaussian_kl_standard,
    gaussian_log_likelihood,
    iwae_bound,
    iwae_nll,
    latent_activity,
    log_normal_diag,
)
from genai_course.train import TrainConfig, Trainer

# ----------------------------------------------------------------------------------------------
# closed forms


def test_kl_closed_form_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(4, 3, generator=g, dtype=torch.float64)
    logvar = 0.8 * torch.randn(4, 3, generator=g, dtype=torch.float64)
    q = Normal(mu, (0.5 * logvar).exp())
    z = q.sample((200_000,))  # (S, 4, 3)
    log_ratio = (q.log_prob(z) - Normal(0.0, 1.0).log_prob(z)).sum(-1)  # (S, 4)
    mc, se = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(len(z))
    exact = gaussian_kl_standard(mu, logvar)
    assert exact.shape == (4,)
    assert ((mc - exact).abs() < 4 * se).all(), (mc, exact, se)


def test_aggregate_posterior_moments_match_samples_of_the_mixture():
    g = torch.Generator().manual_seed(3)
    mu = 2 * torch.randn(5, 3, generator=g, dtype=torch.float64) + 0.5
    logvar = torch.randn(5, 3, generator=g, dtype=torch.float64)
    which = torch.randint(0, 5, (400_000,), generator=g)  # a draw from q(z) = mean_n q(z | x_n)
    eps = torch.randn(400_000, 3, generator=g, dtype=torch.float64)
    z = mu[which] + (0.5 * logvar[which]).exp() * eps
    mean, std = aggregate_posterior_moments(mu, logvar)
    assert mean.shape == std.shape == (3,)
    torch.testing.assert_close(mean, z.mean(0), atol=0.02, rtol=0)
    torch.testing.assert_close(std, z.std(0), atol=0.02, rtol=0)
    # posteriors that all equal the prior give the prior's moments; point masses their spread
    mean, std = aggregate_posterior_moments(torch.zeros(4, 2), torch.zeros(4, 2))
    assert mean.tolist() == [0.0, 0.0] and std.tolist() == [1.0, 1.0]
    mean, std = aggregate_posterior_moments(mu, torch.full_like(mu, float("-inf")))
    torch.testing.assert_close(std, mu.std(0, correction=0))
    with pytest.raises(ValueError, match="one shape"):
        aggregate_posterior_moments(torch.zeros(4, 2), torch.zeros(4, 3))


def test_bernoulli_nll_floor_is_the_minimum_over_decoders_and_zero_on_binary_pixels():
    g = torch.Generator().manual_seed(4)
    x = torch.rand(3, 1, 4, 4, generator=g, dtype=torch.float64)
    floor = bernoulli_nll_floor(x)
    # reached by the decoder that predicts each pixel's own value ...
    torch.testing.assert_close(floor, -bernoulli_log_likelihood(torch.logit(x), x))
    # ... and no other decoder goes below it
    for _ in range(5):
        logits = 3 * torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)
        assert (-bernoulli_log_likelihood(logits, x) >= floor).all()
    assert bernoulli_nll_floor((x > 0.5).double()).abs().max() == 0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        bernoulli_nll_floor(x + 1)


def test_log_normal_diag_matches_torch_distributions():
    g = torch.Generator().manual_seed(1)
    z, mu = torch.randn(2, 5, 3, generator=g), torch.randn(5, 3, generator=g)
    logvar = torch.randn(5, 3, generator=g)
    ref = Normal(mu, (0.5 * logvar).exp()).log_prob(z).sum(-1)
    torch.testing.assert_close(log_normal_diag(z, mu, logvar), ref)
    torch.testing.assert_close(log_normal_diag(z, 0.0, 0.0), Normal(0.0, 1.0).log_prob(z).sum(-1))


def test_gaussian_and_bernoulli_log_likelihoods_match_torch_distributions():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(6, 1, 4, 4, generator=g, dtype=torch.float64)
    mean = torch.rand(6, 1, 4, 4, generator=g, dtype=torch.float64)
    ref = Normal(mean, 0.1).log_prob(x).sum((1, 2, 3))
    torch.testing.assert_close(gaussian_log_likelihood(mean, x, 0.1), ref)

    logits = 3 * torch.randn(6, 1, 4, 4, generator=g, dtype=torch.float64)
    binary = (x > 0.5).double()
    ref = Bernoulli(logits=logits).log_prob(binary).sum((1, 2, 3))
    torch.testing.assert_close(bernoulli_log_likelihood(logits, binary), ref)


# ----------------------------------------------------------------------------------------------
# the bounds, on probabilistic PCA where log p(x) is exact


def _ppca(mean_scale: float = 1.0, mean_noise: float = 0.0, logvar_shift: float = 0.0):
    """PPCA with orthogonal columns in W, so the exact posterior is a diagonal Gaussian:
    M = W^T W + s^2 I is diagonal, mean M^{-1} W^T (x - b), covariance s^2 M^{-1}.
    The encoder's mean map is the exact one scaled by ``mean_scale`` plus ``mean_noise``
    times a random matrix; its log-variances are the exact ones plus ``logvar_shift``."""
    g = torch.Generator().manual_seed(0)
    D, d, s = 5, 2, 0.5
    Q, _ = torch.linalg.qr(torch.randn(D, d, generator=g, dtype=torch.float64))
    W = Q * torch.tensor([2.0, 1.0], dtype=torch.float64)  # columns orthogonal, lengths 2 and 1
    b = torch.randn(D, generator=g, dtype=torch.float64)
    A, logvar = ProbabilisticPCA.exact_encoder(W, s)  # (d, D), (d,)
    A = mean_scale * A + mean_noise * torch.randn(d, D, generator=g, dtype=A.dtype)
    model = ProbabilisticPCA(W, b, s, A, logvar + logvar_shift)
    z = torch.randn(8, d, generator=g, dtype=torch.float64)
    x = model.decode(z) + s * torch.randn(8, D, generator=g, dtype=torch.float64)
    return model, x


def _repeated_bound(model, x, k, repeats, seed):
    """(repeats, N) independent draws of the L_k estimator; its mean estimates E[L_k]."""
    g = torch.Generator().manual_seed(seed)
    draws = iwae_bound(model, x.repeat(repeats, 1), k, generator=g)
    return draws.reshape(repeats, len(x))


def test_elbo_below_iwae_below_log_likelihood_and_iwae_rises_with_k():
    # a poor encoder: its means are off and it is over-confident (too narrow)
    model, x = _ppca(mean_scale=1.3, mean_noise=0.3, logvar_shift=-0.7)
    log_px = model.log_marginal(x)  # (N,)
    elbo = model.exact_elbo(x)
    repeats = 200
    means, ses = {}, {}
    for k in (1, 5, 50, 500):
        draws = _repeated_bound(model, x, k, repeats, seed=k)
        means[k] = draws.mean(0)
        ses[k] = draws.std(0) / math.sqrt(repeats)
    # the one-sample estimator is unbiased for the ELBO
    assert ((means[1] - elbo).abs() < 4 * ses[1]).all()
    # the chain ELBO <= L_5 <= L_50 <= L_500 <= log p(x), example by example, beyond MC noise
    chain = [elbo, means[5], means[50], means[500], log_px]
    errors = [torch.zeros_like(elbo), ses[5], ses[50], ses[500], torch.zeros_like(elbo)]
    for lo, hi, e_lo, e_hi in zip(chain, chain[1:], errors, errors[1:]):
        assert (lo <= hi + 4 * (e_lo + e_hi)).all(), (lo, hi)
    # and each step of the chain is a real gain on average (the encoder is far from exact)
    gaps = [(hi - lo).mean().item() for lo, hi in zip(chain, chain[1:])]
    assert min(gaps) > 0.1, gaps
    assert (log_px - elbo).mean() > 0.5  # the posterior KL this encoder leaves open


def test_iwae_recovers_the_ppca_marginal_with_the_exact_posterior():
    model, x = _ppca()
    log_px = model.log_marginal(x)
    g = torch.Generator().manual_seed(0)
    # with q(z|x) = p(z|x) every weight p(x, z)/q(z|x) equals p(x): one sample is exact
    torch.testing.assert_close(iwae_bound(model, x, 1, generator=g), log_px, rtol=0, atol=1e-9)
    torch.testing.assert_close(model.exact_elbo(x), log_px, rtol=0, atol=1e-9)

    # slightly wrong: means shrunk towards the prior's, variances a third too wide (a proposal
    # wider than the posterior keeps the importance weights light-tailed)
    model, x = _ppca(mean_scale=0.9, logvar_shift=0.3)
    log_px = model.log_marginal(x)
    gap_elbo = log_px - model.exact_elbo(x)
    # batch_size < k: every example's samples are spread over two passes
    bound = iwae_bound(model, x, 5000, batch_size=3000, generator=g)
    assert (gap_elbo > 0.05).all()  # the ELBO alone misses the target ...
    assert ((log_px - bound).abs() < 0.05).all()  # ... which many samples reach


def test_log_marginal_is_elbo_plus_posterior_kl_on_ppca():
    # the identity log p(x) = ELBO(x) + KL(q(z|x) || p(z|x)), each side in closed form, for an
    # encoder far from the posterior (chapter 03 shows it); the exact encoder closes the gap
    model, x = _ppca(mean_scale=1.3, mean_noise=0.3, logvar_shift=-0.7)
    gap = model.posterior_kl(x)
    torch.testing.assert_close(model.exact_elbo(x) + gap, model.log_marginal(x))
    assert (gap > 0.1).all()
    exact, x = _ppca()
    torch.testing.assert_close(exact.posterior_kl(x), torch.zeros(len(x), dtype=x.dtype))


def test_ppca_rejects_mismatched_shapes():
    W, b = torch.ones(5, 2), torch.zeros(5)
    with pytest.raises(ValueError, match=r"expected W \(D, d\), b \(D,\)"):
        ProbabilisticPCA(W, b, 0.5, torch.ones(2, 4), torch.zeros(2))


def test_iwae_nll_reports_nats_and_bits_per_dim_of_a_vae():
    model = VAE(VAEConfig(image_size=8, latent_dim=3, hidden=32))
    x, _ = load_digits("val")
    x = x[:20]
    out = iwae_nll(model, x, k=10, generator=torch.Generator().manual_seed(0))
    bound = iwae_bound(model, x, 10, generator=torch.Generator().manual_seed(0))
    assert out["k"] == 10 and out["n"] == 20
    assert out["nll_nats"] == pytest.approx(-bound.mean().item(), rel=1e-6)
    assert out["bits_per_dim"] == pytest.approx(out["nll_nats"] / (64 * math.log(2)))
    assert 0 < out["nll_nats"] < 64 * math.log(2) + 5  # about a coin flip per pixel, untrained
    assert model.training  # iwae_bound evaluates in eval mode, then restores the mode


# ----------------------------------------------------------------------------------------------
# the model: shapes, sampling, errors


@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("size", [28, 8])
@pytest.mark.parametrize("num_classes", [0, 10])
def test_shapes_for_each_arch_size_and_conditioning(arch, size, num_classes):
    cfg = VAEConfig(
        arch=arch,
        image_size=size,
        latent_dim=4,
        hidden=32,
        conv_channels=(4, 8),
        num_classes=num_classes,
    )
    model = VAE(cfg)
    x = torch.rand(3, 1, size, size)
    y = torch.tensor([0, 3, 9]) if num_classes else None
    mu, logvar = model.encode(x, y)
    assert mu.shape == logvar.shape == (3, 4)
    assert model.decode(mu, y).shape == (3, 1, size, size)
    assert model.elbo(x, y).shape == (3,)
    loss, logs = model.loss((x, torch.tensor([0, 3, 9])))
    assert loss.ndim == 0 and set(logs) == {"recon", "kl"}
    recon = model.reconstruct(x, y)
    assert recon.shape == x.shape and 0 <= recon.min() and recon.max() <= 1
    samples = model.sample(5, labels=7 if num_classes else None, generator=torch.Generator())
    assert samples.shape == (5, 1, size, size)
    assert 0 <= samples.min() and samples.max() <= 1


def test_conditional_bound_and_decoder_use_the_label():
    model = VAE(VAEConfig(image_size=8, latent_dim=2, hidden=16, num_classes=10))
    x, y = load_digits("val")
    bound = iwae_bound(model, x[:6], 20, y=y[:6], batch_size=50)  # 3 examples per pass
    assert bound.shape == (6,) and torch.isfinite(bound).all()
    z = torch.randn(1, 2).expand(10, 2)  # one style, ten digits
    images = model.decode(z, torch.arange(10))
    assert (images[1:] - images[0]).abs().amax((1, 2, 3)).min() > 0


def test_a_saved_vae_is_rebuilt_by_load_pretrained(tmp_path):
    from genai_course.pretrained import load_pretrained, save_pretrained

    cfg = VAEConfig(arch="conv", image_size=8, latent_dim=3, conv_channels=(4, 8), num_classes=10)
    model = VAE(cfg)
    save_pretrained(model, "vae-test", tmp_path, command="(test)", metrics={})
    again = load_pretrained("vae-test", folder=tmp_path)
    assert again.config == cfg
    z, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 3])
    torch.testing.assert_close(again.decode(z, y), model.decode(z, y))


def test_gaussian_likelihood_decodes_a_mean_in_unit_range():
    model = VAE(VAEConfig(image_size=8, latent_dim=2, hidden=16, likelihood="gaussian"))
    x = torch.rand(4, 1, 8, 8)
    mean = model.decode(torch.randn(4, 2) * 10)
    assert 0 <= mean.min() and mean.max() <= 1
    ref = Normal(mean, model.config.gaussian_std).log_prob(x).sum((1, 2, 3))
    torch.testing.assert_close(model.log_likelihood(x, mean), ref)


def test_config_round_trips_through_json_and_rejects_bad_values():
    import json

    cfg = VAEConfig(arch="conv", image_size=8, num_classes=10, conv_channels=(4, 8))
    again = json.loads(json.dumps(cfg.to_dict()))
    assert VAEConfig.from_dict(again) == cfg  # the JSON list is a tuple again
    with pytest.raises(
        ValueError, match="VAEConfig.arch must be one of 'mlp', 'conv'; got 'resnet'"
    ):
        VAEConfig(arch="resnet")
    with pytest.raises(ValueError, match="likelihood must be one of 'bernoulli', 'gaussian'"):
        VAEConfig(likelihood="poisson")
    with pytest.raises(ValueError, match="latent_dim must be >= 1"):
        VAEConfig(latent_dim=0)
    with pytest.raises(ValueError, match="image_size must be divisible by 4"):
        VAEConfig(arch="conv", image_size=10)


def test_bad_inputs_raise_errors_that_say_what_was_expected():
    model = VAE(VAEConfig(image_size=8, latent_dim=2, hidden=16))
    with pytest.raises(
        ValueError, match=r"expected images of shape \(N, C, H, W\) = \(N, 1, 8, 8\)"
    ):
        model.loss(torch.rand(4, 64))
    with pytest.raises(ValueError, match=r"a Bernoulli decoder needs pixels in \[0, 1\]"):
        model.loss(torch.full((2, 1, 8, 8), 1.5))
    conditional = VAE(VAEConfig(image_size=8, latent_dim=2, hidden=16, num_classes=10))
    with pytest.raises(ValueError, match="class-conditional .* pass labels y"):
        conditional.loss(torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError, match="class-conditional"):
        conditional.sample(3)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 10\)"):
        conditional.encode(torch.rand(2, 1, 8, 8), torch.tensor([1, 10]))


# ----------------------------------------------------------------------------------------------
# the objective and its gradients


def test_reparameterisation_gives_gradients_to_the_encoder():
    model = VAE(VAEConfig(image_size=8, latent_dim=2, hidden=16))
    x, _ = load_digits("train")
    loss, _ = model.loss(x[:16])
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # the reconstruction term alone reaches the encoder only through z = mu + sigma * eps
    model.zero_grad()
    decoded, _, _ = model(x[:16])
    (-model.log_likelihood(x[:16], decoded).mean()).backward()
    assert all(p.grad.abs().sum() > 0 for p in model.enc_head.parameters())


def test_beta_weights_the_kl_term():
    x, _ = load_digits("train")
    x = x[:32]
    losses = {}
    for beta in (0.0, 2.0):
        torch.manual_seed(0)
        model = VAE(VAEConfig(image_size=8, latent_dim=2, hidden=16, beta=beta))
        torch.manual_seed(1)  # the same weights and the same eps for every beta
        losses[beta] = model.loss(x)
    (l0, logs0), (l2, logs2) = losses[0.0], losses[2.0]
    torch.testing.assert_close(logs0["recon"], logs2["recon"])
    torch.testing.assert_close(l0, logs0["recon"])
    torch.testing.assert_close(l2, logs2["recon"] + 2 * logs2["kl"])
    assert logs2["kl"] > 0


def test_loss_is_the_negative_elbo_with_beta_one():
    model = VAE(VAEConfig(image_size=8, latent_dim=2, hidden=16))
    x, _ = load_digits("train")
    torch.manual_seed(3)
    loss, _ = model.loss(x[:32])
    torch.manual_seed(3)
    torch.testing.assert_close(loss, -model.elbo(x[:32]).mean())


def test_training_with_the_trainer_lowers_the_negative_elbo_on_digits():
    x, y = load_digits("train")
    xv, yv = load_digits("val")
    model = VAE(VAEConfig(image_size=8, latent_dim=4, hidden=64))
    cfg = TrainConfig(steps=150, batch_size=64, lr=3e-3, progress=False, device="cpu", log_every=50)
    trainer = Trainer(model, (x, y), cfg, val_data=(xv, yv))
    before = trainer.evaluate()["val_loss"]
    after = trainer.fit().last("val_loss")
    assert after < before - 8.0, (before, after)  # nats per 8x8 digit


# ----------------------------------------------------------------------------------------------
# posterior collapse: active units, free bits, KL warm-up


def test_active_units_count_the_dims_whose_posterior_mean_moves_with_x():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(1000, 4, generator=g) * torch.tensor([1.0, 0.5, 0.05, 0.0])
    activity = latent_activity(mu)
    assert activity.shape == (4,)
    torch.testing.assert_close(activity, torch.tensor([1.0, 0.25, 0.0025, 0.0]), atol=0.1, rtol=0.1)
    assert active_units(mu) == 2  # Burda et al.'s threshold 1e-2
    assert active_units(mu, threshold=1e-3) == 3
    with pytest.raises(ValueError, match=r"shape \(N, d\), N >= 2"):
        latent_activity(torch.zeros(1, 4))


def test_free_bits_floors_each_dims_batch_mean_kl():
    mu = torch.tensor([[0.0, 2.0], [0.0, 2.0]])  # dim 0 on the prior (KL 0), dim 1 KL 2 nats
    logvar = torch.zeros(2, 2)
    assert free_bits_kl(mu, logvar, 0.0).item() == pytest.approx(2.0)
    assert free_bits_kl(mu, logvar, 0.5).item() == pytest.approx(2.5)  # max(0.5, 0) + 2
    assert free_bits_kl(mu, logvar, 3.0).item() == pytest.approx(6.0)
    # below the floor the KL of a dimension has no gradient: nothing pulls it to the prior
    mu = mu.clone().requires_grad_()
    free_bits_kl(mu, logvar, 3.0).backward()
    assert mu.grad.abs().sum() == 0
    with pytest.raises(ValueError, match="free_bits must be >= 0"):
        free_bits_kl(mu, logvar, -1.0)


def test_annealed_loss_is_the_elbo_without_schedule_and_in_eval_mode():
    torch.manual_seed(0)
    model = VAE(VAEConfig(image_size=8, latent_dim=3, hidden=16))
    x = load_digits("val")[0][:16]
    plain, annealed = AnnealedVAELoss(), AnnealedVAELoss(warmup_steps=10, free_bits=1.0)
    assert annealed.kl_weight(0) == 0.0 and annealed.kl_weight(5) == 0.5
    assert annealed.kl_weight(20) == 1.0 and plain.kl_weight(0) == 1.0
    model.eval()  # one draw of z per call: fix the noise to compare the two losses
    torch.manual_seed(1)
    loss_plain, logs = plain(model, x)
    torch.manual_seed(1)
    loss_eval, _ = annealed(model, x)
    torch.manual_seed(1)
    ref, ref_logs = model.loss(x)
    torch.testing.assert_close(loss_plain, ref)
    torch.testing.assert_close(loss_eval, ref)  # eval mode: the negative ELBO, schedule aside
    torch.testing.assert_close(logs["kl"], ref_logs["kl"])
    model.train()
    torch.manual_seed(1)
    loss_start, logs = annealed(model, x)  # step 0: no KL weight at all
    torch.testing.assert_close(loss_start, logs["recon"])


def test_annealed_loss_follows_the_trainers_step():
    torch.manual_seed(0)
    model = VAE(VAEConfig(image_size=8, latent_dim=3, hidden=16))
    x = load_digits("train")[0]
    loss = AnnealedVAELoss(warmup_steps=4)
    config = TrainConfig(steps=6, batch_size=32, log_every=1, progress=False)
    trainer = Trainer(model, x, config, loss_fn=loss, callbacks=[loss])
    trainer.fit()
    weights = [r["kl_weight"] for r in trainer.history.records if "kl_weight" in r]
    assert weights == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0, 1.0])
