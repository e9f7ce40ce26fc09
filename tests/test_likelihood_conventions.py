"""The data conventions behind the likelihood figures: binarised digits, dequantised bytes, and
bits per dimension of 8-bit pixels."""

import math

import pytest
import torch

from genai_course.data import (
    BINARISE_SEED,
    binarise,
    dequantise,
    load_binarised_mnist,
    load_mnist,
)
from genai_course.metrics import bits_per_dim, bits_per_dim_dequantised

# ----------------------------------------------------------------------------------------------
# stochastic binarisation


def test_binarise_draws_each_pixel_with_its_grey_level_as_probability():
    g = torch.Generator().manual_seed(0)
    grey = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0]).repeat(40_000, 1)  # (40000, 5)
    out = binarise(grey, g)
    assert out.dtype == grey.dtype and out.shape == grey.shape
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    assert (out[:, 0] == 0).all() and (out[:, 4] == 1).all()  # 0 and 1 stay as they are
    freq, p = out.mean(0), grey[0]
    se = (p * (1 - p) / len(out)).sqrt()
    assert ((freq - p).abs() <= 4 * se + 1e-12).all(), freq  # E[binarise(x)] = x


def test_binarise_is_reproducible_and_refuses_non_probabilities():
    x, _ = load_mnist("val")
    a, b = (binarise(x, torch.Generator().manual_seed(3)) for _ in range(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, binarise(x, torch.Generator().manual_seed(4)))
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        binarise(torch.tensor([0.5, 1.5]))
    with pytest.raises(ValueError, match="expected a float tensor"):
        binarise(torch.tensor([0, 1]))


def test_binarised_test_digits_are_one_fixed_draw_of_the_grey_ones():
    xb, y = load_binarised_mnist("test")
    x, y_grey = load_mnist("test")
    assert torch.equal(xb, load_binarised_mnist("test")[0]) and torch.equal(y, y_grey)
    assert torch.equal(xb, binarise(x, torch.Generator().manual_seed(BINARISE_SEED)))
    assert xb.shape == (500, 1, 28, 28) and set(xb.unique().tolist()) == {0.0, 1.0}
    # ink where the grey digit is dark, none where it is blank
    assert (xb[x == 0] == 0).all() and (xb[x == 1] == 1).all()
    assert abs(xb.mean().item() - x.mean().item()) < 0.005


# ----------------------------------------------------------------------------------------------
# dequantisation and bits per dimension of 8-bit pixels


def test_dequantise_puts_each_byte_uniformly_in_its_own_interval():
    x, _ = load_mnist("test")
    y = dequantise(x, torch.Generator().manual_seed(0))
    k = torch.round(x * 255)
    assert ((y >= k / 256) & (y < (k + 1) / 256)).all()
    assert torch.equal(torch.floor(y * 256), k)  # the byte is recovered exactly
    u = y * 256 - k  # the offsets: uniform on [0, 1), mean 1/2, variance 1/12
    assert abs(u.mean().item() - 0.5) < 0.005 and abs(u.var().item() - 1 / 12) < 0.005


def test_a_uniform_density_on_the_unit_cube_is_exactly_8_bits_per_dim():
    # log p(y) = 0 everywhere on [0, 1]^D: the NLL of every dequantised image is 0
    assert bits_per_dim_dequantised(0.0, 784) == pytest.approx(8.0, abs=1e-12)
    assert bits_per_dim_dequantised(torch.tensor(0.0), 3) == pytest.approx(8.0, abs=1e-12)
    assert bits_per_dim_dequantised(0.0, 784, levels=2) == pytest.approx(1.0)
    # each nat per image lowers it by 1 / (D ln 2)
    got = bits_per_dim_dequantised(-784 * math.log(2), 784)
    assert got == pytest.approx(7.0)
    with pytest.raises(ValueError, match="dims must be >= 1"):
        bits_per_dim_dequantised(0.0, 0)
    with pytest.raises(ValueError, match="levels must be >= 2"):
        bits_per_dim_dequantised(0.0, 4, levels=1)


def test_a_density_constant_on_each_cube_gives_the_exact_discrete_bits():
    # a categorical P over the 256 bytes, and the density p(y) = 256 P(k) on [k/256, (k+1)/256):
    # the dequantised NLL + D ln 256 is then exactly -log P (no Jensen gap)
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(256, generator=g, dtype=torch.float64), 0)
    k = torch.multinomial(probs, 20_000, replacement=True, generator=g).reshape(-1, 4)  # D = 4
    y = (k + torch.rand(k.shape, generator=g, dtype=torch.float64)) / 256
    density = 256 * probs[torch.floor(y * 256).long()]  # (N, 4)
    nll_y = -density.log().sum(1).mean()
    exact_bits = bits_per_dim(-probs[k].log().sum(1).mean(), 4)
    assert bits_per_dim_dequantised(nll_y, 4) == pytest.approx(exact_bits, rel=1e-12)


def test_a_smooth_density_bounds_the_discrete_bits_from_above():
    # p(y) = 2y on [0, 1]: byte k has probability ((k+1)^2 - k^2) / 256^2 = (2k + 1) / 65536
    g = torch.Generator().manual_seed(0)
    k = torch.arange(256, dtype=torch.float64)
    probs = (2 * k + 1) / 65536
    draws = torch.multinomial(probs, 200_000, replacement=True, generator=g).double()
    exact_bits = bits_per_dim(-probs[draws.long()].log().mean(), 1)
    y = (draws + torch.rand(draws.shape, generator=g, dtype=torch.float64)) / 256
    bound = bits_per_dim_dequantised(-torch.log(2 * y).mean(), 1)
    assert bound >= exact_bits  # Jensen: E_u[-log p(y)] + ln 256 >= -log P(k)
    assert bound - exact_bits < 0.01  # and tight for a density this smooth


# ----------------------------------------------------------------------------------------------
# the grey-level figure: cross-entropy above the pixel-entropy floor


def test_grey_vae_nll_is_reported_above_the_pixel_entropy_floor():
    from genai_course import generators as G
    from genai_course.models.vae import bernoulli_nll_floor

    x, _ = load_mnist("test")
    x = x[:16]
    result = G.heldout_nll("vae-mnist", k=4, images=x)
    floor = bernoulli_nll_floor(x).double().mean().item()
    assert result["floor_nats"] == pytest.approx(floor)
    assert result["nll_above_floor_nats"] == pytest.approx(result["nll_nats"] - floor)
    # no Bernoulli decoder goes below the floor; the shipped VAE lies well above it, and a
    # decoder that put every pixel at 1/2 would pay 784 ln 2 minus the floor
    assert 0 < result["nll_above_floor_nats"] < 784 * math.log(2) - floor


# ----------------------------------------------------------------------------------------------
# the binarised-MNIST recipe resumes exactly: its batches are drawn from the global generator


class _Interrupt(Exception):
    pass


class _StopAt:
    """A callback that interrupts training after step ``n`` (a crash, as far as the run knows)."""

    def __init__(self, n):
        self.n = n

    def on_train_start(self, trainer): ...
    def on_eval_end(self, trainer, metrics): ...
    def on_train_end(self, trainer): ...
    def on_checkpoint(self, trainer, path): ...

    def on_step_end(self, trainer):
        if trainer.step == self.n:
            raise _Interrupt


def test_binarised_vae_recipe_stopped_and_resumed_equals_an_unbroken_run(tmp_path):
    from genai_course.pretrained import read_manifest
    from genai_course.recipes import RECIPES, RunOptions

    train = RECIPES["vae-binary"].train
    unbroken = train(RunOptions(profile="smoke", out=tmp_path / "a", progress=False))
    ckpt = str(tmp_path / "ckpt")
    first = RunOptions(
        profile="smoke", progress=False, checkpoint_dir=ckpt, checkpoint_every=1,
        callbacks=[_StopAt(2)],
    )  # fmt: skip
    with pytest.raises(_Interrupt):
        train(first)
    resumed = train(
        RunOptions(profile="smoke", out=tmp_path / "b", progress=False, checkpoint_dir=ckpt,
                   resume=True)
    )  # fmt: skip
    assert resumed["steps"] == unbroken["steps"] == 4
    for key in ("test_nll_nats", "best_val_neg_elbo"):
        assert resumed[key] == unbroken[key], key
    a, b = read_manifest(tmp_path / "a"), read_manifest(tmp_path / "b")
    assert a["vae-binary-mnist"]["sha256"] == b["vae-binary-mnist"]["sha256"]
