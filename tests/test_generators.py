"""One interface to every shipped digit generator, and the evaluation table (chapter 16)."""

import math

import pytest
import torch

from genai_course import generators as G
from genai_course.metrics import FeatureSpace, conditional_accuracy
from genai_course.pretrained import load_pretrained

FEW_STEPS = 2  # DDIM steps: enough to exercise the sampler, not to draw good digits


@pytest.fixture(scope="module")
def loaded():
    """Every registered generator, loaded once."""
    return {name: G.load_generator(name) for name in G.DIGIT_GENERATORS}


def test_registry_covers_every_shipped_digit_generator():
    shipped = {c for spec in G.DIGIT_GENERATORS.values() for c in spec.checkpoints}
    assert shipped == {
        "vae-mnist",
        "vae-binary-mnist",
        "cvae-mnist",
        "vqvae-mnist",
        "vqvae-prior",
        "gan-dcgan-mnist",
        "gan-wgan-gp-mnist",
        "gan-cgan-mnist",
        "diffusion-mnist",
        "diffusion-text-mnist",
    }
    # chapter 16's table: every generator of the grey digits
    assert set(G.DIGIT_GENERATORS) - set(G.TABLE_GENERATORS) == {"vae-binary-mnist"}
    conditional = {n for n, s in G.DIGIT_GENERATORS.items() if s.conditional}
    assert conditional == {
        "cvae-mnist",
        "gan-cgan-mnist",
        "diffusion-mnist",
        "diffusion-text-mnist",
    }


@pytest.mark.parametrize("name", list(G.DIGIT_GENERATORS))
def test_samples_are_digit_images_and_reproducible(loaded, name):
    gen = loaded[name]
    a = G.sample_digits(gen, 6, seed=3, steps=FEW_STEPS)
    assert a.shape == (6, 1, 28, 28) and a.dtype == torch.float32 and a.device.type == "cpu"
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, G.sample_digits(gen, 6, seed=3, steps=FEW_STEPS))
    assert not torch.equal(a, G.sample_digits(gen, 6, seed=4, steps=FEW_STEPS))


def test_a_name_draws_what_the_loaded_generator_draws(loaded):
    assert torch.equal(
        G.sample_digits("gan-dcgan-mnist", 5, seed=1),
        G.sample_digits(loaded["gan-dcgan-mnist"], 5, seed=1),
    )


def test_conditional_models_default_to_balanced_labels(loaded):
    assert G.balanced_labels(12).tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    gen = loaded["gan-cgan-mnist"]
    default = G.sample_digits(gen, 10, seed=0)
    assert torch.equal(default, G.sample_digits(gen, 10, seed=0, labels=G.balanced_labels(10)))


@pytest.mark.parametrize("name", ["cvae-mnist", "gan-cgan-mnist"])
def test_conditional_samples_follow_their_labels(loaded, name):
    labels = torch.full((30,), 7)
    images = G.sample_digits(loaded[name], 30, labels=labels, seed=0)
    assert conditional_accuracy(images, labels) > 0.8


def test_batches_do_not_change_the_shape_and_stay_reproducible(loaded):
    gen = loaded["vae-mnist"]
    a = G.sample_digits(gen, 7, seed=0, batch_size=3)
    assert a.shape == (7, 1, 28, 28)
    assert torch.equal(a, G.sample_digits(gen, 7, seed=0, batch_size=3))


def test_a_bare_model_can_be_sampled():
    gan = load_pretrained("gan-dcgan-mnist")
    assert G.sample_digits(gan, 4).shape == (4, 1, 28, 28)
    with pytest.raises(ValueError, match="cannot sample digits from a DigitClassifier"):
        G.sample_digits(load_pretrained("digit-classifier"), 4)


def test_errors_name_what_was_expected(loaded):
    with pytest.raises(ValueError, match="unknown digit generator 'gan'.*gan-dcgan-mnist"):
        G.sample_digits("gan", 4)
    with pytest.raises(ValueError, match="vae-mnist is unconditional"):
        G.sample_digits(loaded["vae-mnist"], 4, labels=torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="diffusion-mnist-uncond is unconditional"):
        G.sample_digits(
            loaded["diffusion-mnist-uncond"], 2, labels=torch.zeros(2, dtype=torch.long)
        )
    cgan = loaded["gan-cgan-mnist"]
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        G.sample_digits(cgan, 4, labels=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="integer tensor"):
        G.sample_digits(cgan, 4, labels=torch.zeros(4))
    with pytest.raises(ValueError, match=r"lie in \[0, 10\)"):
        G.sample_digits(cgan, 2, labels=torch.tensor([3, 10]))
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        G.sample_digits(cgan, 0)
    with pytest.raises(ValueError, match="guidance applies to diffusion models only"):
        G.sample_digits(cgan, 2, guidance=2.0)


# likelihoods


def test_vae_nll_is_in_nats_per_image_and_bits_per_dim(loaded):
    x = torch.rand(8, 1, 28, 28).round()
    result = G.heldout_nll(loaded["vae-mnist"], k=4, images=x)
    assert result["comparable"] and result["n"] == 8 and result["k"] == 4
    assert result["nll_nats"] > 0
    assert result["bits_per_dim"] == pytest.approx(result["nll_nats"] / (784 * math.log(2)))
    # and the shipped VAE has learnt digits: test digits cost it under 150 nats (about 100),
    # where noise costs thousands and an untrained VAE nearly a coin per pixel (784 ln 2 = 543)
    from genai_course.data import load_mnist

    real = G.heldout_nll(loaded["vae-mnist"], k=4, images=load_mnist("test")[0][:8])
    assert real["nll_nats"] < 150 < result["nll_nats"]


def test_cvae_marginal_nll_is_at_most_the_label_given_one_plus_log10(loaded):
    # p(x) = mean_y p(x | y) >= p(x | y_true) / 10, and both use the same bounds
    from genai_course.data import load_mnist

    x, y = load_mnist("test")
    result = G.heldout_nll(loaded["cvae-mnist"], k=3, images=x[:20], labels=y[:20])
    assert result["nll_nats"] <= result["nll_given_label_nats"] + math.log(10) + 1e-9
    assert result["comparable"]


def test_cvae_label_helps_the_shipped_model_and_not_an_untrained_one(loaded):
    # marginal minus label-given NLL = mean log(10 p(y | x)): what the label is worth to the
    # model, <= 0 on average when its posterior is unrelated to the label; chapter 16 asserts
    # > 0.3 nats and label accuracy > 0.8 for the shipped cVAE
    from genai_course.data import load_mnist
    from genai_course.models.vae import VAE

    x, y = load_mnist("test")
    shipped = loaded["cvae-mnist"]
    torch.manual_seed(0)
    untrained = G.DigitGenerator(shipped.spec, (VAE(shipped.model.config).eval(),))
    gain, accuracy = {}, {}
    for name, gen in (("shipped", shipped), ("untrained", untrained)):
        result = G.heldout_nll(gen, k=3, images=x[:50], labels=y[:50])
        gain[name] = result["nll_nats"] - result["nll_given_label_nats"]
        accuracy[name] = result["label_accuracy"]
    assert gain["shipped"] > 0.3 and accuracy["shipped"] > 0.8
    assert gain["untrained"] < 0.3 and accuracy["untrained"] < 0.3  # the baseline fails both


def test_vqvae_nll_is_over_codes_and_not_comparable(loaded):
    from genai_course.data import load_mnist

    result = G.heldout_nll(loaded["vqvae-mnist"], images=load_mnist("test")[0][:50])
    assert not result["comparable"] and result["bits_per_dim"] is None
    assert result["nll_nats"] == pytest.approx(49 * result["bits_per_code"] * math.log(2))
    assert 0 < result["bits_per_code"] < math.log2(64)  # better than a uniform prior


@pytest.mark.parametrize("name", ["gan-dcgan-mnist", "diffusion-mnist"])
def test_models_without_a_computed_likelihood_say_so(loaded, name):
    with pytest.raises(ValueError, match=f"{name} has no likelihood"):
        G.heldout_nll(loaded[name])


# evaluation


@pytest.fixture(scope="module")
def reference():
    return G.evaluation_reference(40, space=FeatureSpace(load_pretrained("digit-classifier")))


def test_held_out_digits_against_themselves_score_the_trivial_values(reference):
    row = G.evaluate_images(reference.heldout, reference)
    assert row["fid"] == pytest.approx(0.0, abs=1e-6)
    assert row["precision"] == row["recall"] == 1.0
    assert row["closer_than_heldout"] == 0.5 and row["copies"] == 0.0


def test_evaluation_table_rows(reference):
    ev = G.evaluation_table(["gan-cgan-mnist"], n=40, nll_k=None, space=reference.space)
    assert [r["model"] for r in ev.rows] == [
        "real: val digits",
        "real: train digits",
        "gan-cgan-mnist",
    ]
    floor_row, copier = ev.row("real: val digits"), ev.row("real: train digits")
    cgan = ev.row("gan-cgan-mnist")
    # the validation digits are the floor; the training digits are copies of the training set
    assert floor_row["fid"] == pytest.approx(floor_row["fid_floor"])
    assert torch.equal(ev.samples["real: val digits"], reference.floor_images)
    assert copier["copies"] == 1.0 and copier["nn_median"] == 0.0
    assert floor_row["nn_median"] > 0  # new digits: none is a training digit
    assert all(r["n"] == 40 for r in ev.rows)
    assert cgan["fid"] > 0 and cgan["fid_ratio"] == pytest.approx(cgan["fid"] / cgan["fid_floor"])
    assert cgan["accuracy"] > 0.8 and math.isnan(floor_row["accuracy"])
    assert ev.samples["gan-cgan-mnist"].shape == (40, 1, 28, 28)
    text = G.table_markdown(ev.rows, ["model", "n", "fid"])
    assert text.splitlines()[0] == "| model | n | fid |" and len(text.splitlines()) == 5
    with pytest.raises(KeyError, match="no row 'vae-mnist'"):
        ev.row("vae-mnist")


def test_evaluate_images_needs_the_reference_count(reference):
    with pytest.raises(ValueError, match="n = 40"):
        G.evaluate_images(reference.heldout[:10], reference)


def test_a_prompt_reaches_only_the_text_model():
    with pytest.raises(ValueError, match="not text-conditioned"):
        G.sample_digits("vae-mnist", 2, prompt="a seven")
    with pytest.raises(ValueError, match="a prompt or labels, not both"):
        G.sample_digits("diffusion-text-mnist", 2, prompt="a seven", labels=torch.tensor([7, 7]))
    one = G.sample_digits("diffusion-text-mnist", 2, prompt="a seven", steps=2)
    written = G.sample_digits("diffusion-text-mnist", 2, labels=torch.tensor([7, 7]), steps=2)
    torch.testing.assert_close(one, written)  # 'a seven' is the prompt written for label 7


def test_stratified_training_digits_have_the_floors_class_counts():
    from genai_course.data import load_mnist

    x = G.stratified_training_digits(40, seed=1)
    x_train, y_train = load_mnist("train")
    index = {tuple(r): int(y) for r, y in zip((x_train.flatten(1) * 255).round().int().tolist(), y_train)}
    labels = torch.tensor([index[tuple(r)] for r in (x.flatten(1) * 255).round().int().tolist()])
    assert torch.equal(torch.bincount(labels, minlength=10), torch.bincount(G.balanced_labels(40), minlength=10))
    assert torch.equal(x, G.stratified_training_digits(40, seed=1))
