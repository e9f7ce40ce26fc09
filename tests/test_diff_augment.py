"""DiffAugment (Zhao et al., 2020): the transformations and their place in the GAN losses."""

import pytest
import torch

from genai_course.models import GAN, GANConfig
from genai_course.models.diff_augment import diff_augment, random_cutout, random_translation


def _digit_like(n=6, seed=0):
    # a bright square well inside a black (-1) background: shifts of up to 4 pixels keep it whole
    x = torch.full((n, 1, 28, 28), -1.0)
    x[:, :, 10:18, 10:18] = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    return x


def test_translation_moves_the_image_by_at_most_an_eighth_and_keeps_its_content():
    x = _digit_like()
    y = random_translation(x, generator=torch.Generator().manual_seed(1))
    assert y.shape == x.shape
    # the square stays whole (same pixel values, in another place), the rest is background
    assert torch.allclose(y.flatten(1).sort(1).values, x.flatten(1).sort(1).values)
    for xi, yi in zip(x, y):
        found = [
            (dy, dx)
            for dy in range(-4, 5)
            for dx in range(-4, 5)
            if torch.equal(torch.roll(xi, (dy, dx), (1, 2)), yi)
        ]
        assert found and max(abs(found[0][0]), abs(found[0][1])) <= round(0.125 * 28)


def test_translation_fills_uncovered_pixels_with_the_background():
    x = torch.ones(50, 1, 28, 28)
    y = random_translation(x, generator=torch.Generator().manual_seed(0))
    assert set(y.unique().tolist()) <= {-1.0, 1.0}
    assert (y == -1).any()  # some image moved, and its uncovered border is black


def test_cutout_erases_one_square_of_half_the_side():
    x = torch.ones(200, 1, 28, 28)
    y = random_cutout(x, generator=torch.Generator().manual_seed(0))
    erased = (y == -1).flatten(1).sum(1)
    assert erased.max() == 14 * 14  # a square fully inside the image
    assert erased.min() > 0  # every image loses something, the square may hang over the edge


def test_gradients_flow_through_the_augmentations():
    x = torch.rand(4, 1, 28, 28, requires_grad=True)
    diff_augment(x * 2 - 1, "translation,cutout", torch.Generator().manual_seed(0)).sum().backward()
    assert x.grad is not None and (x.grad != 0).any() and (x.grad == 0).any()


def test_policy_none_is_the_identity_and_unknown_policies_are_named():
    x = torch.rand(2, 1, 28, 28)
    assert diff_augment(x, "none") is x
    with pytest.raises(ValueError, match="unknown DiffAugment policy 'color'"):
        diff_augment(x, "color")
    with pytest.raises(ValueError, match="augment"):
        GANConfig(augment="flip")
    with pytest.raises(ValueError, match="needs images"):
        GANConfig(arch="mlp", data_shape=(2,), augment="translation")


def test_both_losses_judge_augmented_images(monkeypatch):
    import genai_course.models.gan as gan_module

    seen = []

    def spy(x, policy, generator=None):
        seen.append(policy)
        return x

    monkeypatch.setattr(gan_module, "diff_augment", spy)
    torch.manual_seed(0)
    gan = GAN(GANConfig(width=8, augment="translation,cutout"))
    batch = torch.rand(4, 1, 28, 28)
    gan.discriminator_loss(batch)
    assert seen == ["translation,cutout"] * 2  # real and fake
    gan.generator_loss(batch)
    assert len(seen) == 3
    seen.clear()
    gan.score(batch)  # judging data outside training is not augmented
    assert seen == []
