"""Few-shot classification with generated samples (chapter 19): the split, the classical
augmentation, the classifier, the paired experiment and its statistics."""

import math

import numpy as np
import pytest
import torch

from genai_course.augmentation import (
    AugmentationResults,
    Condition,
    PairedDifference,
    augmentation_experiment,
    few_shot_split,
    generate_labelled,
    random_affine,
    standard_error,
    train_few_shot_classifier,
    train_few_shot_cvae,
)
from genai_course.data import load_mnist
from genai_course.models.classifier import DigitClassifier
from genai_course.models.vae import VAE, VAEConfig


@pytest.fixture(scope="module")
def mnist():
    x, y = load_mnist("train")
    xt, yt = load_mnist("test")
    return x, y, xt, yt


def blob(n=4, size=28):
    """(n, 1, size, size) images of a centred Gaussian blob in [0, 1]."""
    r = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    img = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 3.0**2))
    return img.expand(n, 1, size, size).clone()


# the split


def test_few_shot_split_has_k_of_every_class_and_is_deterministic(mnist):
    x, y, _, _ = mnist
    xf, yf = few_shot_split(x, y, per_class=3, seed=7)
    assert xf.shape == (30, 1, 28, 28) and yf.shape == (30,)
    assert yf.tolist() == [c for c in range(10) for _ in range(3)]
    # every chosen image is a training image with that label
    index = [int(((x == img).flatten(1).all(1)).nonzero()[0]) for img in xf]
    assert torch.equal(y[index], yf)
    xf2, yf2 = few_shot_split(x, y, per_class=3, seed=7)
    assert torch.equal(xf, xf2) and torch.equal(yf, yf2)
    assert not torch.equal(few_shot_split(x, y, per_class=3, seed=8)[0], xf)


def test_few_shot_splits_of_one_seed_are_nested(mnist):
    x, y, _, _ = mnist
    small, _ = few_shot_split(x, y, per_class=2, seed=1)
    large, _ = few_shot_split(x, y, per_class=5, seed=1)
    for c in range(10):
        assert torch.equal(small[2 * c : 2 * c + 2], large[5 * c : 5 * c + 2])


def test_few_shot_split_rejects_bad_inputs():
    x, y = torch.rand(6, 1, 28, 28), torch.tensor([0, 0, 1, 1, 1, 1])
    with pytest.raises(ValueError, match="per_class"):
        few_shot_split(x, y, per_class=0)
    with pytest.raises(ValueError, match="per_class"):
        few_shot_split(x, y, per_class=True)
    with pytest.raises(ValueError, match="class 0 has 2 images"):
        few_shot_split(x, y, per_class=3)
    with pytest.raises(ValueError, match="6 images but 5 labels"):
        few_shot_split(x, y[:5], per_class=1)
    with pytest.raises(ValueError, match="int64"):
        few_shot_split(x, y.float(), per_class=1)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        few_shot_split(x[:, 0], y, per_class=1)


# classical augmentation


def test_random_affine_is_the_identity_at_zero_strength():
    x = torch.rand(5, 1, 28, 28)
    out = random_affine(x, degrees=0, translate=0, scale=0, shear=0)
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_random_affine_keeps_shape_and_range_and_changes_images():
    x = torch.rand(16, 1, 28, 28)
    out = random_affine(x, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0 and out.max() <= 1
    assert (out - x).abs().flatten(1).mean(1).min() > 0.01  # every image moved


def test_random_affine_shift_moves_the_centre_of_mass_by_at_most_translate():
    x = blob(64)
    out = random_affine(x, degrees=0, scale=0, shear=0, translate=0.1)
    r = torch.arange(28, dtype=torch.float32)

    def centre(img):  # (N, 1, H, W) -> (N, 2) centre of mass in pixels (row, column)
        m = img[:, 0]
        return (
            torch.stack([(m.sum(2) * r).sum(1), (m.sum(1) * r).sum(1)], 1) / m.sum((1, 2))[:, None]
        )

    shift = centre(out) - centre(x)
    assert shift.abs().max() <= 0.1 * 28 + 0.05
    assert shift.abs().max() > 1.0  # the shifts use their range
    torch.testing.assert_close(out.sum((1, 2, 3)), x.sum((1, 2, 3)), rtol=1e-3, atol=0)


def test_random_affine_is_reproducible_with_a_generator():
    x = torch.rand(4, 1, 28, 28)
    a = random_affine(x, generator=torch.Generator().manual_seed(3))
    b = random_affine(x, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_random_affine_rejects_bad_inputs():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        random_affine(torch.rand(1, 28, 28))
    with pytest.raises(ValueError, match="float"):
        random_affine(torch.zeros(1, 1, 28, 28, dtype=torch.uint8))
    with pytest.raises(ValueError, match="degrees"):
        random_affine(torch.rand(1, 1, 28, 28), degrees=-1)
    with pytest.raises(ValueError, match="scale"):
        random_affine(torch.rand(1, 1, 28, 28), scale=1.0)


# generated samples


def test_generate_labelled_asks_each_class_for_per_class_samples():
    model = VAE(VAEConfig(latent_dim=2, hidden=16, num_classes=10))
    x, y = generate_labelled(model, per_class=3, seed=0)
    assert x.shape == (30, 1, 28, 28) and y.tolist() == [c for c in range(10) for _ in range(3)]
    assert x.min() >= 0 and x.max() <= 1
    assert torch.equal(generate_labelled(model, per_class=3, seed=0)[0], x)
    assert model.training  # the mode is restored
    with pytest.raises(ValueError, match="cannot sample digits from a Linear"):
        generate_labelled(torch.nn.Linear(2, 2), per_class=1)
    with pytest.raises(ValueError, match="unconditional"):
        generate_labelled(VAE(VAEConfig(latent_dim=2, hidden=16)), per_class=1)
    with pytest.raises(ValueError, match="per_class"):
        generate_labelled(model, per_class=0)


def test_few_shot_cvae_fits_its_few_images(mnist):
    x, y, _, _ = mnist
    xf, yf = few_shot_split(x, y, per_class=2, seed=0)
    untrained = VAE(VAEConfig(latent_dim=8, hidden=64, num_classes=10)).loss((xf, yf))[0]
    model = train_few_shot_cvae(xf, yf, steps=60, hidden=64)
    assert model.config.num_classes == 10 and not model.training
    assert model.loss((xf, yf))[0] < 0.7 * untrained
    samples, labels = generate_labelled(model, per_class=2)
    assert samples.shape == (20, 1, 28, 28)


# the classifier


def test_few_shot_classifier_learns_above_chance(mnist):
    x, y, xt, yt = mnist
    xf, yf = few_shot_split(x, y, per_class=5, seed=0)
    model = train_few_shot_classifier(xf, yf, steps=80, seed=0)
    assert not model.training
    assert model.accuracy(xt, yt) > 0.3  # chance is 0.1


def test_same_seed_gives_the_same_classifier_so_conditions_are_paired():
    x, y = torch.rand(20, 1, 28, 28), torch.arange(20) % 10
    a = train_few_shot_classifier(x, y, steps=3, seed=5, augment=random_affine)
    b = train_few_shot_classifier(x, y, steps=3, seed=5, augment=random_affine)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_conditions_see_the_same_real_images_and_distortions_step_by_step(monkeypatch):
    # image i is filled with the value i / 20, so a batch tells which real images it holds
    x = (torch.arange(20, dtype=torch.float32) / 20).view(20, 1, 1, 1).expand(20, 1, 28, 28)
    y = torch.arange(20) % 10
    pool = (torch.ones(30, 1, 28, 28), torch.arange(30) % 10)
    batches, states = [], []
    loss = DigitClassifier.loss

    def spy(model, batch):
        batches[-1].append(batch[0][:, 0, 14, 14].clone())
        return loss(model, batch)

    def still(batch, generator):  # draws its parameters like random_affine, moves nothing
        states[-1].append(generator.get_state())
        return random_affine(batch, degrees=0, translate=0, scale=0, shear=0, generator=generator)

    monkeypatch.setattr(DigitClassifier, "loss", spy)
    for kwargs in ({}, {"augment": still}, {"augment": still, "synthetic": pool}):
        batches.append([])
        states.append([])
        train_few_shot_classifier(x, y, steps=4, batch_size=8, seed=3, **kwargs)
    alone, augmented, mixed = (torch.stack(b) for b in batches)  # (steps, batch) each
    assert len({tuple(b.tolist()) for b in alone}) == 4  # the batches do vary
    torch.testing.assert_close(augmented, alone, atol=1e-5, rtol=0)  # drawing T shifts nothing
    torch.testing.assert_close(mixed[:, :4], alone[:, :4], atol=1e-5, rtol=0)  # real first
    assert (mixed[:, 4:] > 0.999).all()  # then the synthetic images
    for a, b in zip(*states):  # and both augmented conditions draw the same distortions
        assert torch.equal(a, b)


def test_synthetic_fraction_one_never_reads_the_real_images():
    x, y = torch.rand(20, 1, 28, 28), torch.arange(20) % 10
    pool = (torch.rand(30, 1, 28, 28), torch.arange(30) % 10)
    a = train_few_shot_classifier(x, y, synthetic=pool, synthetic_fraction=1.0, steps=3)
    b = train_few_shot_classifier(
        x.flip(0), (y + 1) % 10, synthetic=pool, synthetic_fraction=1.0, steps=3
    )
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_train_few_shot_classifier_rejects_bad_inputs():
    x, y = torch.rand(20, 1, 28, 28), torch.arange(20) % 10
    with pytest.raises(ValueError, match="synthetic_fraction"):
        train_few_shot_classifier(x, y, synthetic_fraction=1.5, steps=1)
    with pytest.raises(ValueError, match="synthetic images have shape"):
        train_few_shot_classifier(x, y, synthetic=(torch.rand(4, 1, 14, 14), y[:4]), steps=1)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        train_few_shot_classifier(torch.rand(20, 1, 14, 14), y, steps=1)
    with pytest.raises(ValueError, match="steps"):
        train_few_shot_classifier(x, y, steps=0)


# the experiment and its statistics


def test_standard_error_is_sample_std_over_root_n():
    v = [0.5, 0.7, 0.6, 0.9]
    assert standard_error(v) == pytest.approx(np.std(v, ddof=1) / 2)
    assert math.isnan(standard_error([0.5]))


def test_paired_difference_verdicts():
    helps = PairedDifference("a", "b", np.array([0.05, 0.06, 0.04, 0.05]))
    assert helps.verdict() == "helps" and helps.wins == 4
    assert helps.mean == pytest.approx(0.05)
    hurts = PairedDifference("a", "b", -np.array([0.05, 0.06, 0.04, 0.05]))
    assert hurts.verdict() == "hurts" and hurts.wins == 0
    noisy = PairedDifference("a", "b", np.array([0.05, -0.06, 0.04, -0.02]))
    assert noisy.verdict() == "no clear difference"
    assert PairedDifference("a", "b", np.array([0.3])).verdict() == "no clear difference"


def test_tiny_experiment_returns_accuracies_per_condition_and_seed(mnist):
    x, y, xt, yt = mnist
    calls = []

    def factory(xf, yf, seed):
        calls.append(seed)
        return xf.flip(-1), yf  # mirrored digits: a "generator" that costs nothing

    pool = (torch.rand(10, 1, 28, 28), torch.arange(10))
    conditions = {
        "real only": Condition(),
        "affine": Condition(augment=random_affine),
        "pool": Condition(synthetic=pool, synthetic_fraction=0.25),
        "mirror": Condition(synthetic=factory),
        "mirror+affine": Condition(synthetic=factory, augment=random_affine),
    }
    r = augmentation_experiment(
        x, y, xt[:50], yt[:50], conditions, per_class=1, seeds=[0, 1], steps=2, batch_size=8
    )
    assert isinstance(r, AugmentationResults)
    assert r.per_class == 1 and r.seeds == [0, 1]
    assert list(r.accuracy) == list(conditions)
    for acc in r.accuracy.values():
        assert acc.shape == (2,) and ((acc >= 0) & (acc <= 1)).all()
    assert calls == [0, 1]  # one pool per seed, shared by the two conditions that use it
    table = r.table()
    assert [row["condition"] for row in table] == list(conditions)
    assert "diff" not in table[0] and {"diff", "diff_se", "wins"} <= set(table[1])
    d = r.paired("affine")
    np.testing.assert_allclose(d.differences, r.accuracy["affine"] - r.accuracy["real only"])
    assert r.paired("real only").mean == 0
    with pytest.raises(KeyError, match="unknown condition"):
        r.paired("gan")


def test_experiment_rejects_bad_conditions(mnist):
    x, y, xt, yt = mnist
    with pytest.raises(ValueError, match="at least one Condition"):
        augmentation_experiment(x, y, xt, yt, {}, per_class=1, seeds=[0])
    with pytest.raises(TypeError, match="expected a Condition"):
        augmentation_experiment(x, y, xt, yt, {"a": None}, per_class=1, seeds=[0])
    with pytest.raises(ValueError, match="at least one seed"):
        augmentation_experiment(x, y, xt, yt, {"a": Condition()}, per_class=1, seeds=[])
