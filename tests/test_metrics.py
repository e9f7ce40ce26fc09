"""Sample and likelihood metrics (chapter 16 and the chapters that report them)."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from genai_course.data import load_mnist, make_ring
from genai_course.metrics import (
    FeatureSpace,
    bits_per_char,
    bits_per_dim,
    class_histogram,
    class_histogram_kl,
    conditional_accuracy,
    feature_statistics,
    fid,
    fid_from_features,
    frechet_distance,
    kid_from_features,
    linear_probe,
    memorisation,
    metrics_vs_sample_size,
    modes_covered,
    nearest_neighbour_distance,
    precision_recall,
    real_pair,
    real_vs_real_floor,
)
from genai_course.pretrained import load_pretrained


@pytest.fixture(scope="module")
def classifier():
    return load_pretrained("digit-classifier")


@pytest.fixture(scope="module")
def test_digits():
    return load_mnist("test")


def _features(n, d, seed=0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    return torch.randn(n, d, generator=g, dtype=torch.float64) @ mix + shift


def _isotropic(n, d, seed):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _scipy_frechet(f1, f2):
    """Independent reference: the textbook formula with scipy's general matrix square root."""
    a, b = f1.numpy(), f2.numpy()
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = covmean.real if np.iscomplexobj(covmean) else covmean
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


# FID


def test_feature_statistics_are_mean_and_unbiased_covariance():
    f = _features(50, 4)
    mu, sigma = feature_statistics(f)
    assert mu.dtype == sigma.dtype == torch.float64
    np.testing.assert_allclose(mu.numpy(), f.numpy().mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma.numpy(), np.cov(f.numpy(), rowvar=False), rtol=1e-10)


def test_fid_of_a_feature_set_with_itself_is_zero():
    f = _features(300, 16)
    assert fid_from_features(f, f) == pytest.approx(0.0, abs=1e-8)


@pytest.mark.parametrize("d", [2, 8, 32, 64])
def test_frechet_distance_matches_scipy_sqrtm(d):
    f1, f2 = _features(400, d, seed=1), _features(300, d, seed=2, shift=0.3)
    ours = frechet_distance(*feature_statistics(f1), *feature_statistics(f2))
    assert ours == pytest.approx(_scipy_frechet(f1, f2), rel=1e-6)


def test_frechet_distance_of_known_gaussians():
    # N(0, I) vs N(m, 4 I) in D dims: |m|^2 + D (1 + 4 - 2 * 2) = |m|^2 + D
    d = 5
    mu2 = torch.full((d,), 0.5, dtype=torch.float64)
    value = frechet_distance(torch.zeros(d), torch.eye(d), mu2, 4 * torch.eye(d))
    assert value == pytest.approx(d * 0.25 + d, rel=1e-12)


def test_fid_is_symmetric_and_grows_with_a_shift():
    f1, f2 = _features(300, 16, seed=1), _features(300, 16, seed=2)
    near = fid_from_features(f1, f2)
    assert fid_from_features(f2, f1) == pytest.approx(near, rel=1e-8)
    far = fid_from_features(f1, f2 + 0.5)
    farther = fid_from_features(f1, f2 + 1.0)
    assert near < far < farther
    # the mean term alone is |0.5 * 1|^2 = 16 * 0.25 = 4
    assert far - near == pytest.approx(4.0, rel=0.2)


@pytest.mark.filterwarnings("ignore:Matrix is singular")
def test_fid_on_digit_features_matches_scipy_sqrtm(classifier, test_digits):
    # the features FID is computed on in the course: 128-wide, 250 digits a side
    x, _ = test_digits
    space = FeatureSpace(classifier)
    f1, f2 = space.features(x[:250]), space.features(x[250:])
    assert fid_from_features(f1, f2) == pytest.approx(_scipy_frechet(f1, f2), rel=1e-6)
    # 26 of the 128 ReLU units never fire on these digits: their zero-variance columns make the
    # covariances singular (scipy warns) but add nothing to the distance
    alive = (f1.std(0) > 0) | (f2.std(0) > 0)
    assert alive.sum() < 128
    assert fid_from_features(f1[:, alive], f2[:, alive]) == pytest.approx(
        fid_from_features(f1, f2), rel=1e-6
    )
    assert fid(x[:250], x[:250], space) == pytest.approx(0.0, abs=1e-6)


def test_fid_rejects_features_of_different_widths():
    with pytest.raises(ValueError, match="same width D"):
        fid_from_features(_features(10, 3), _features(10, 4))
    with pytest.raises(ValueError, match=r"shape \(N, D\)"):
        fid_from_features(torch.zeros(10), torch.zeros(10))


# KID


def _brute_force_mmd2_unbiased(x, y):
    k = lambda a, b: (a @ b / len(a) + 1) ** 3  # noqa: E731
    m = len(x)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m**2
    return (xx + yy - 2 * xy).item()


def test_kid_with_one_full_subset_matches_the_unbiased_mmd_formula():
    x, y = _isotropic(12, 5, seed=1), _isotropic(12, 5, seed=2) + 0.3
    mean, std = kid_from_features(x, y, subsets=3, subset_size=100)
    # m = N: every subset is the whole set (reordered), so the spread is 0
    assert mean == pytest.approx(_brute_force_mmd2_unbiased(x, y), rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_kid_of_identical_sets_is_about_zero_and_of_shifted_sets_clearly_positive():
    f = _isotropic(200, 16, seed=0)
    same, _ = kid_from_features(f, f, subsets=5)
    shifted, _ = kid_from_features(f, f + 1.0, subsets=5)
    assert shifted > 5.0
    # not exactly 0: the estimator treats the two copies as independent samples, O(1 / N)
    assert abs(same) < 0.02 * shifted
    # two independent samples of one distribution: about 0, far below the shifted value
    other, _ = kid_from_features(f, _isotropic(200, 16, seed=1), subsets=20, subset_size=100)
    assert abs(other) < 0.02 * shifted


def test_kid_is_reproducible_with_its_seed():
    f1, f2 = _features(100, 8, seed=1), _features(100, 8, seed=2)
    a = kid_from_features(f1, f2, subsets=5, subset_size=50, seed=3)
    assert kid_from_features(f1, f2, subsets=5, subset_size=50, seed=3) == a


# precision and recall


def test_precision_and_recall_are_one_on_identical_sets():
    f = _features(200, 8)
    assert precision_recall(f, f, k=3) == {"precision": 1.0, "recall": 1.0}


def test_precision_drops_when_fakes_leave_the_real_manifold_while_recall_stays():
    real, fake = _isotropic(400, 3, seed=1), _isotropic(400, 3, seed=2)
    base = precision_recall(real, fake, k=3)
    assert base["precision"] > 0.9 and base["recall"] > 0.9
    # a quarter of the fakes jump far away; the other fakes still cover the real data
    moved = fake.clone()
    moved[:100] += 20.0
    off = precision_recall(real, moved, k=3)
    assert off["precision"] == pytest.approx(base["precision"] - 0.25, abs=0.05)
    assert off["recall"] > 0.85


def test_recall_drops_when_fakes_collapse_on_part_of_the_data():
    real = _isotropic(400, 2, seed=1)
    fake = real[real[:, 0] > 0][:150] + 0.01  # only half of the real data is covered
    result = precision_recall(real, fake, k=3)
    assert result["precision"] > 0.9
    assert result["recall"] < 0.7


# class histograms


def test_class_histogram_kl_of_uniform_is_zero_and_of_one_class_is_log10():
    assert class_histogram_kl(torch.full((10,), 0.1, dtype=torch.float64)) == 0.0
    # float32 fractions sum to 1 only up to round-off
    assert class_histogram_kl(torch.full((10,), 0.1)) == pytest.approx(0.0, abs=1e-6)
    one_class = torch.zeros(10)
    one_class[3] = 1.0
    assert class_histogram_kl(one_class) == pytest.approx(math.log(10), rel=1e-12)


def test_class_histogram_kl_rejects_counts():
    with pytest.raises(ValueError, match="summing to 1"):
        class_histogram_kl(torch.tensor([5.0, 5.0]))


def test_shipped_classifier_on_real_test_digits(classifier, test_digits):
    x, y = test_digits
    assert conditional_accuracy(x, y, classifier) >= 0.97
    hist = class_histogram(x, classifier)
    assert hist.shape == (10,)
    assert hist.sum().item() == pytest.approx(1.0)
    assert class_histogram_kl(hist) < 0.01


def test_class_histogram_detects_a_single_class(classifier, test_digits):
    x, y = test_digits
    sevens = x[y == 7]
    hist = class_histogram(sevens, classifier)
    assert hist[7] > 0.9
    assert class_histogram_kl(hist) > 0.8 * math.log(10)


def test_conditional_accuracy_of_wrong_labels_is_low(classifier, test_digits):
    x, y = test_digits
    assert conditional_accuracy(x[:200], (y[:200] + 1) % 10, classifier) < 0.1


# feature space and the real-vs-real floor


def test_feature_space_gives_float64_cpu_features(classifier, test_digits):
    x, _ = test_digits
    f = FeatureSpace(classifier, batch_size=64).features(x[:100])
    assert f.shape == (100, 128) and f.dtype == torch.float64 and f.device.type == "cpu"
    assert torch.allclose(f.float(), classifier.features(x[:100]), atol=1e-5)


def test_feature_space_rejects_images_without_channel_axis():
    with pytest.raises(ValueError, match=r"shape \(N, 1, 28, 28\).*unsqueeze"):
        FeatureSpace().features(torch.rand(4, 28, 28))


def test_feature_space_rejects_pixels_above_one():
    with pytest.raises(ValueError, match=r"pixels must lie in \[0, 1\]"):
        FeatureSpace().features(torch.rand(4, 1, 28, 28) * 2)
    with pytest.raises(ValueError, match=r"pixels must lie in \[0, 1\]"):
        FeatureSpace().features(torch.rand(4, 1, 28, 28) * 2 - 1)


def test_fid_of_images_separates_real_from_noise(classifier, test_digits):
    x, _ = test_digits
    space = FeatureSpace(classifier)
    real_vs_real = fid(x[:200], x[200:400], space)
    real_vs_noise = fid(x[:200], torch.rand(200, 1, 28, 28), space)
    assert real_vs_real < real_vs_noise / 10


def test_real_pair_is_the_draw_of_the_floor(classifier):
    space = FeatureSpace(classifier)
    val_part, test_part = real_pair(60, seed=2)
    assert val_part.shape == test_part.shape == (60, 1, 28, 28)
    f_a, f_b = space.features(val_part), space.features(test_part)
    assert real_vs_real_floor(60, space, seed=2)["fid"] == pytest.approx(
        fid_from_features(f_b, f_a)
    )


def test_the_floor_pairs_validation_and_test_digits_none_of_them_training_digits():
    from genai_course.data import load_mnist

    val_part, test_part = real_pair(500, seed=0)
    x_train, _ = load_mnist("train")
    x_val, _ = load_mnist("val")
    x_test, _ = load_mnist("test")
    # n = 500 takes every validation and every test digit ...
    for part, split in ((val_part, x_val), (test_part, x_test)):
        assert torch.equal(part.flatten(1).sum(1).sort().values, split.flatten(1).sum(1).sort().values)
    # ... and none of them is a training digit (the feature network was fitted to those)
    train_keys = {tuple(row) for row in (x_train.flatten(1) * 255).round().to(torch.uint8).tolist()}
    for part in (val_part, test_part):
        keys = {tuple(row) for row in (part.flatten(1) * 255).round().to(torch.uint8).tolist()}
        assert not keys & train_keys
    # the test digits are drawn first: a seed names the same test digits at every n
    assert torch.equal(real_pair(20, seed=3)[1], real_pair(500, seed=3)[1][:20])


def test_fid_is_biased_with_few_samples_and_kid_is_not():
    # two samples of one distribution: FID's expectation falls with n, KID's stays at 0
    a, b = _isotropic(1000, 8, seed=1), _isotropic(1000, 8, seed=2)
    curve = metrics_vs_sample_size(a, b, [20, 100, 500], repeats=10)
    assert list(curve["n"]) == [20, 100, 500]
    assert curve["fid_mean"][0] > 3 * curve["fid_mean"][-1]
    assert np.all(np.diff(curve["fid_mean"]) < 0)
    # plug-in bias at n = 20 is about D (D + 1) / (2 n) > 1; KID stays within its noise of 0
    assert curve["fid_mean"][0] > 1.0
    assert np.all(np.abs(curve["kid_mean"]) < 3 * curve["kid_std"] / np.sqrt(10) + 1e-3)


def test_metrics_vs_sample_size_rejects_sizes_beyond_the_sets():
    with pytest.raises(ValueError, match=r"int in \[2, 30\]"):
        metrics_vs_sample_size(_isotropic(30, 2, 0), _isotropic(40, 2, 1), [10, 31])


def test_real_vs_real_floor_is_positive_and_capped_by_the_test_split(classifier):
    floor = real_vs_real_floor(200, FeatureSpace(classifier))
    assert set(floor) == {"fid", "kid"}
    assert floor["fid"] > 0
    assert math.isfinite(floor["kid"])
    with pytest.raises(ValueError, match=r"n must be an int in \[2, 500\]"):
        real_vs_real_floor(1000)


# memorisation


def test_nearest_neighbour_distance_is_zero_for_a_training_image():
    train, _ = load_mnist("train")
    samples = torch.cat([train[[5, 1234]], torch.zeros(1, 1, 28, 28)])
    d = nearest_neighbour_distance(samples, train, batch_size=2)
    assert d.shape == (3,)
    assert d[0].item() == 0.0 and d[1].item() == 0.0
    # brute force for the blank image: the smallest norm of any training digit
    assert d[2].item() == pytest.approx(train.flatten(1).double().norm(dim=1).min().item())


def test_nearest_neighbour_distance_of_a_perturbed_image():
    train = torch.rand(50, 1, 28, 28)
    sample = train[7:8] + 0.01
    d = nearest_neighbour_distance(sample, train)
    assert d.item() == pytest.approx(0.01 * 28, rel=1e-6)


def test_memorisation_flags_copies_of_training_images():
    train, _ = load_mnist("train")
    val, _ = load_mnist("val")
    test, _ = load_mnist("test")
    heldout = nearest_neighbour_distance(test[:200], train)
    copies = memorisation(nearest_neighbour_distance(train[:100], train), heldout)
    assert copies["copies"] == 1.0 and copies["closer_than_heldout"] == 1.0
    assert copies["nn_median"] == 0.0
    # other new digits are as far from the training set as the held-out ones
    new = memorisation(nearest_neighbour_distance(val[:200], train), heldout)
    assert abs(new["closer_than_heldout"] - 0.5) < 0.1
    assert new["copies"] < 0.03
    assert new["nn_median"] == pytest.approx(new["nn_median_heldout"], rel=0.1)


def test_memorisation_statistic_by_hand():
    result = memorisation(torch.tensor([1.0, 2.0, 5.0]), torch.tensor([2.0, 3.0]))
    # pairs (g, r) with d_g < d_r: (1,2) (1,3) (2,3) = 3, one tie (2,2) counts half: 3.5 / 6
    assert result["closer_than_heldout"] == pytest.approx(3.5 / 6)
    assert result["copies"] == pytest.approx(1 / 3)  # only 1.0 is below min(d_r) = 2
    assert result["nn_median"] == 2.0 and result["nn_median_heldout"] == 2.5
    with pytest.raises(ValueError, match="at least one distance"):
        memorisation(torch.zeros(0), torch.ones(3))


# likelihood units


def test_bits_per_dim_and_bits_per_char():
    assert bits_per_dim(784 * math.log(2), 784) == pytest.approx(1.0)
    assert bits_per_dim(torch.tensor(2 * 784 * math.log(2)), 784) == pytest.approx(2.0)
    assert bits_per_char(math.log(2)) == pytest.approx(1.0)
    assert bits_per_char(torch.tensor(math.log(256))) == pytest.approx(8.0)
    with pytest.raises(ValueError, match="dims must be >= 1"):
        bits_per_dim(1.0, 0)


# mode coverage on the ring


def _ring_centres(modes=8, radius=2.0):
    angles = 2 * math.pi * torch.arange(modes, dtype=torch.float64) / modes
    return radius * torch.stack([angles.cos(), angles.sin()], 1)


def test_modes_covered_on_a_full_ring():
    x, _ = make_ring(800, std=0.05, seed=0)
    result = modes_covered(x, _ring_centres(), radius=0.15)
    assert result["covered"] == 8
    assert result["high_quality"] > 0.98
    assert result["share"].sum().item() == pytest.approx(result["high_quality"])


def test_modes_covered_with_missing_modes_and_off_ring_samples():
    centres = _ring_centres()
    x, y = make_ring(1000, std=0.02, seed=1)  # all within 0.15 = 7.5 std of their centre
    kept = x[y < 5]  # modes 5, 6, 7 are dropped
    # a sliver of 3 samples on mode 5 (below min_share) and 100 samples at the ring's centre
    sliver = centres[5].float() + torch.tensor([[0.01, 0.0], [0.0, 0.05], [-0.1, 0.0]])
    junk = torch.zeros(100, 2)
    samples = torch.cat([kept, sliver, junk])
    n = len(samples)
    result = modes_covered(samples, centres, radius=0.15, min_share=0.01)
    assert result["covered"] == 5
    assert result["share"].shape == (8,)
    for mode in range(5):
        assert result["share"][mode].item() == pytest.approx((y == mode).sum().item() / n)
    assert result["share"][5].item() == pytest.approx(3 / n)
    assert result["share"][6:].sum().item() == 0.0
    assert result["high_quality"] == pytest.approx((len(kept) + 3) / n)
    # with a lower bar the sliver counts
    assert modes_covered(samples, centres, radius=0.15, min_share=0.001)["covered"] == 6


def test_linear_probe_finds_a_linearly_coded_label_and_not_noise():
    g = np.random.default_rng(0)
    x = g.normal(size=(600, 5))
    y = (x[:, 2] + 0.1 * g.normal(size=600) > 1.0).astype(int)  # rare class, linear boundary
    assert y.mean() < 0.25
    assert linear_probe(x[:400], y[:400], x[400:], y[400:]) > 0.9
    noise = g.normal(size=(600, 5))  # features that carry nothing about y
    assert abs(linear_probe(noise[:400], y[:400], noise[400:], y[400:]) - 0.5) < 0.1
    with pytest.raises(ValueError, match="single class"):
        linear_probe(x[:10], np.zeros(10), x[10:20], y[10:20])
    with pytest.raises(ValueError, match="must match"):
        linear_probe(x[:10], y[:9], x[10:20], y[10:20])
    with pytest.raises(ValueError, match="2-D"):
        linear_probe(x[:10, 0], y[:10], x[10:20], y[10:20])
