"""The GAN models of chapters 06-07: shapes, the two-player training step, bad input."""

import pytest
import torch

from genai_course.models.gan import GAN, GANConfig, interpolate_latents, mode_seeking_ratio
from genai_course.models.gan_losses import discriminator_loss
from genai_course.train import Objective, TrainConfig, Trainer


def _objectives(n_critic: int = 1) -> list[Objective]:
    return [
        Objective("D", GAN.discriminator_loss, module="discriminator", repeats=n_critic),
        Objective("G", GAN.generator_loss, module="generator"),
    ]


def _images(n: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> set[str]:
    return {k for k, v in module.state_dict().items() if not torch.equal(v, before[k])}


@pytest.mark.parametrize("arch", ["mlp", "dcgan"])
@pytest.mark.parametrize("num_classes", [0, 10])
def test_samples_are_images_in_unit_range(arch, num_classes):
    gan = GAN(GANConfig(arch=arch, num_classes=num_classes, hidden=(32, 64), width=8))
    x = gan.sample(12, generator=torch.Generator().manual_seed(0))
    assert x.shape == (12, 1, 28, 28)
    assert x.min() >= 0 and x.max() <= 1
    assert gan.generator.training, "sample() must restore the generator's mode"


def test_vector_gan_outputs_unbounded_vectors():
    gan = GAN(GANConfig(arch="mlp", data_shape=(2,), hidden=(16, 16)))
    x = gan.sample(50, generator=torch.Generator().manual_seed(0))
    assert x.shape == (50, 2)
    assert gan.score(torch.zeros(5, 2)).shape == (5,)
    # An untrained generator's outputs are small (|x| < 0.25 here), so push it with latents 50x
    # too long: without a tanh at the end the vectors leave [-1, 1] (LeakyReLU layers scale
    # with their input), while the image generator's pixels stay in [0, 1] whatever z is.
    with torch.no_grad():
        z = 50 * gan.latents(50, generator=torch.Generator().manual_seed(0))
        far = gan.generate(z)
        assert far.abs().max() > 1 and (far.abs() > 1).float().mean() > 0.5
        image_gan = GAN(GANConfig(arch="mlp", hidden=(16, 16)))
        pixels = image_gan.generate(50 * image_gan.latents(50))
        assert pixels.min() >= 0 and pixels.max() <= 1


def test_sampling_is_reproducible_with_a_seeded_generator():
    gan = GAN(GANConfig(hidden=(32,), width=8))
    a = gan.sample(4, generator=torch.Generator().manual_seed(3))
    b = gan.sample(4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_discriminator_loss_is_the_bce_of_real_and_generated_logits():
    torch.manual_seed(0)
    gan = GAN(GANConfig(arch="mlp", hidden=(32,)))
    x, _ = _images(8)
    torch.manual_seed(1)
    loss, logs = gan.discriminator_loss(x)
    torch.manual_seed(1)
    fake = gan.generator(gan.latents(8))
    expected = discriminator_loss(gan.discriminator(2 * x - 1), gan.discriminator(fake))
    torch.testing.assert_close(loss, expected)
    assert 0 < logs["d_real"] < 1 and 0 < logs["d_fake"] < 1


def test_discriminator_loss_builds_no_graph_into_the_generator():
    gan = GAN(GANConfig(arch="mlp", hidden=(32,)))
    loss, _ = gan.discriminator_loss(_images(8)[0])
    loss.backward()
    assert all(p.grad is None for p in gan.generator.parameters())
    assert all(
        p.grad is not None and p.grad.abs().sum() > 0 for p in gan.discriminator.parameters()
    )


def test_generator_loss_gradient_reaches_the_generator_through_the_discriminator():
    gan = GAN(GANConfig(arch="dcgan", width=8))
    loss, _ = gan.generator_loss(_images(8)[0])
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in gan.generator.parameters())


@pytest.mark.parametrize("loss", ["ns", "minimax", "wgan-gp"])
def test_each_objective_updates_only_its_own_network(loss):
    gan = GAN(GANConfig(arch="dcgan", width=8, loss=loss))
    x, _ = _images(32)
    cfg = TrainConfig(steps=2, batch_size=16, lr=1e-2, progress=False)
    for name, own, other in [
        ("D", "discriminator", "generator"),
        ("G", "generator", "discriminator"),
    ]:
        objective = [o for o in _objectives() if o.name == name]
        before_own = _snapshot(gan.get_submodule(own))
        before_other = _snapshot(gan.get_submodule(other))
        # The generator's batch-norm statistics move in both steps (it runs in train mode);
        # only parameters count as "updated".
        params_other = {n for n, _ in gan.get_submodule(other).named_parameters()}
        Trainer(gan, x, cfg, objectives=objective).fit(max_steps=1)
        assert _changed(before_other, gan.get_submodule(other)) & params_other == set()
        assert _changed(before_own, gan.get_submodule(own)) & {
            n for n, _ in gan.get_submodule(own).named_parameters()
        }


def test_wgan_critic_loss_logs_the_wasserstein_estimate_and_penalty():
    gan = GAN(GANConfig(arch="mlp", hidden=(32,), loss="wgan-gp", drift=0.0))
    loss, logs = gan.discriminator_loss(_images(8)[0])
    assert logs["gp"] >= 0
    torch.testing.assert_close(loss.detach(), -logs["wasserstein"] + 10.0 * logs["gp"])


def test_trainer_with_n_critic_takes_that_many_critic_steps_per_step():
    gan = GAN(GANConfig(arch="mlp", hidden=(16,), loss="wgan-gp"))
    x, _ = _images(64)
    t = Trainer(
        gan, x, TrainConfig(steps=3, batch_size=16, progress=False), objectives=_objectives(5)
    )
    t.fit()
    assert t.optimizers["D"].state[t._params["D"][0]]["step"] == 15
    assert t.optimizers["G"].state[t._params["G"][0]]["step"] == 3


def test_mlp_gan_learns_a_shifted_gaussian():
    """A 1-D sanity check of the whole loop: the generator's mean moves to the data's."""
    torch.manual_seed(0)
    data = 3.0 + 0.5 * torch.randn(2048, 1)
    gan = GAN(GANConfig(arch="mlp", data_shape=(1,), latent_dim=4, hidden=(32, 32)))
    assert abs(gan.sample(1000).mean() - 3.0) > 2
    cfg = TrainConfig(steps=400, batch_size=128, lr=2e-3, betas=(0.5, 0.999), progress=False)
    Trainer(gan, data, cfg, objectives=_objectives()).fit()
    samples = gan.sample(2000, generator=torch.Generator().manual_seed(0))
    assert abs(samples.mean() - 3.0) < 0.3
    assert 0.2 < samples.std() < 1.0


def test_conditional_gan_uses_its_labels():
    gan = GAN(GANConfig(arch="dcgan", width=8, num_classes=10))
    z = gan.latents(4, generator=torch.Generator().manual_seed(0))
    gan.eval()
    a = gan.generate(z, torch.tensor([0, 0, 0, 0]))
    b = gan.generate(z, torch.tensor([1, 1, 1, 1]))
    assert not torch.allclose(a, b)
    x, y = _images(8)
    loss, _ = gan.discriminator_loss((x, y))
    assert torch.isfinite(loss)


def test_with_generator_copies_the_ema_weights_and_leaves_the_original():
    gan = GAN(GANConfig(width=8))
    other = GAN(GANConfig(width=8))
    copy = gan.with_generator(other.generator)
    for a, b in zip(copy.generator.state_dict().values(), other.generator.state_dict().values()):
        assert torch.equal(a, b)
    assert not torch.equal(gan.generator.project[0].weight, copy.generator.project[0].weight)


def test_interpolation_endpoints_and_norms():
    g = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(64, generator=g), torch.randn(64, generator=g)
    path = interpolate_latents(z0, z1, 9)
    assert path.shape == (9, 64)
    torch.testing.assert_close(path[0], z0)
    torch.testing.assert_close(path[-1], z1)
    line = interpolate_latents(z0, z1, 9, spherical=False)
    # the straight line dips towards the origin in the middle; slerp does not
    assert line[4].norm() < 0.8 * min(z0.norm(), z1.norm()) < path[4].norm()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(arch="vit"), "arch must be one of"),
        (dict(loss="hinge"), "loss must be one of"),
        (dict(arch="dcgan", data_shape=(1, 32, 32)), "28, 28"),
        (dict(data_shape=(2, 3)), "data_shape"),
    ],
)
def test_config_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GANConfig(**kwargs)


def test_bad_input_gets_clear_errors():
    gan = GAN(GANConfig(width=8))
    with pytest.raises(ValueError, match=r"shape \(N, 1, 28, 28\)"):
        gan.discriminator_loss(torch.rand(4, 28, 28))
    with pytest.raises(ValueError, match="unconditional"):
        gan.generate(gan.latents(2), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="z must have shape"):
        gan.generate(torch.randn(2, 3))
    cgan = GAN(GANConfig(width=8, num_classes=10))
    with pytest.raises(ValueError, match=r"\(x, y\) batches"):
        cgan.discriminator_loss(torch.rand(4, 1, 28, 28))
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        cgan.sample(2, labels=torch.tensor([3, 10]))
    with pytest.raises(ValueError, match="int64"):
        cgan.sample(2, labels=torch.tensor([1.0, 2.0]))


def test_mode_seeking_ratio_is_zero_for_a_generator_that_ignores_z():
    class LabelOnly(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.table = torch.nn.Embedding(10, 4)

        def forward(self, z, y):
            return self.table(y)

    g, y = LabelOnly(), torch.arange(8) % 10
    z = torch.randn(8, 3)
    assert mode_seeking_ratio(g, z, g(z, y), y).item() == 0.0


def test_mode_seeking_ratio_of_a_linear_map_is_its_mean_output_gap_per_latent_gap():
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        lin.weight.copy_(2 * torch.eye(3))  # G(z) = 2 z: every output gap is twice the latent gap

    def g(z, y):
        return lin(z)

    z = torch.randn(16, 3)
    torch.testing.assert_close(mode_seeking_ratio(g, z, g(z, None), None), torch.tensor(2.0))


def test_mode_seeking_term_is_added_to_the_generator_loss():
    x, y = _images(8)
    plain = GAN(GANConfig(width=8, num_classes=10))
    seeking = GAN(GANConfig(width=8, num_classes=10, mode_seeking=1.0))
    seeking.load_state_dict(plain.state_dict())
    torch.manual_seed(0)
    base, _ = plain.generator_loss((x, y))
    torch.manual_seed(0)
    loss, logs = seeking.generator_loss((x, y))
    torch.testing.assert_close(loss, base + 1.0 / (logs["mode_seeking_ratio"] + 1e-5))


def test_dcgan_uses_batch_norm_in_the_generator_only_and_scores_each_image_on_its_own():
    gan = GAN(GANConfig(width=8))
    norms = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)
    assert any(isinstance(m, norms) for m in gan.generator.modules())
    assert not any(isinstance(m, norms) for m in gan.discriminator.modules())
    # Radford et al.'s exception: no batch norm on the generator's output layer (tanh follows it)
    layers = list(gan.generator.net)
    assert isinstance(layers[-1], torch.nn.Tanh) and not isinstance(layers[-2], norms)
    x = torch.rand(6, 1, 28, 28)
    gan.train()  # in training mode a batch-norm layer would mix the batch's statistics
    torch.testing.assert_close(gan.score(x[:2]), gan.score(x)[:2])
