"""Sample and likelihood metrics for generative models (chapters 03-07, 12-13, 16, 19).

What each metric measures, and what it misses:

- **Likelihood** (:func:`bits_per_dim`, :func:`bits_per_char`): the average negative
  log-likelihood of held-out data, rescaled to bits. It rewards covering all of the data and
  says nothing direct about how samples look: a model can have a good likelihood and poor
  samples, or the reverse. Only models with a (bound on the) likelihood have one; GANs do not.
- **FID** (:func:`fid`, :func:`frechet_distance`): the Fréchet distance between two Gaussians
  fitted to the features of real and generated images. One number for quality *and* diversity,
  blind to everything outside the feature network's view and to the shape of the feature
  distribution beyond its first two moments. It is biased: the same two distributions give a
  larger FID with fewer samples.
- **KID** (:func:`kid`): an unbiased estimate of the squared MMD between the feature
  distributions with a cubic polynomial kernel; its expectation does not depend on the sample
  count, so it compares models evaluated with different numbers of samples, and it comes with a
  spread over random subsets.
- **Precision and recall** (:func:`precision_recall`): the fraction of generated samples that
  fall on the real data's manifold (quality) and the fraction of real samples that fall on the
  generated manifold (coverage). They separate the two failure modes FID mixes, but depend on
  ``k`` and on the feature space.
- **Class histograms** (:func:`class_histogram`, :func:`class_histogram_kl`,
  :func:`conditional_accuracy`): what the digit classifier thinks the samples are. They detect
  missing classes (mode collapse) and a conditional model that ignores its label, but not
  blurry or unrealistic samples that the classifier still labels confidently.
- **Memorisation** (:func:`nearest_neighbour_distance`, :func:`memorisation`): the pixel
  distance from each sample to its nearest training image, read against the same distance for
  held-out real digits. A distance near 0 means a copied training image; a large one does not
  prove novelty, since pixel distance is a poor measure of similarity.
- **Mode coverage on 2-D toys** (:func:`modes_covered`): how many of the known modes of a ring
  of Gaussians the samples hit, and how many samples are near any mode.

Every sample metric depends on the number of samples: the inputs' first dimension *is* the
sample count N, and a number reported without its N cannot be compared. Even a perfect
generator does not reach FID 0 with finitely many samples; :func:`real_vs_real_floor` gives the
FID and KID between two disjoint sets of *real* digits (train vs test) of the same size n, the
floor that a generator evaluated with n samples should be compared against, and
:func:`metrics_vs_sample_size` shows how FID and KID move with n.

The image metrics work in the feature space of the course's digit classifier (chapter 02, its
128-wide penultimate layer, see :class:`FeatureSpace`), not Inception-v3: the numbers are
comparable within this course, not with published MNIST or ImageNet FIDs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "FeatureSpace",
    "bits_per_char",
    "bits_per_dim",
    "class_histogram",
    "class_histogram_kl",
    "conditional_accuracy",
    "feature_statistics",
    "fid",
    "fid_from_features",
    "frechet_distance",
    "kid",
    "kid_from_features",
    "linear_probe",
    "memorisation",
    "metrics_vs_sample_size",
    "modes_covered",
    "nearest_neighbour_distance",
    "precision_recall",
    "real_pair",
    "real_vs_real_floor",
]

IMAGE_SHAPE = (1, 28, 28)
TEST_SPLIT_SIZE = 500  # digits in load_mnist("test"), the cap of real_vs_real_floor


# helpers


def _as_float64(x: Tensor | np.ndarray, name: str) -> Tensor:
    """A float64 CPU tensor with the values of ``x`` (a tensor or an array)."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    return x.detach().to("cpu", torch.float64)


def _check_features(f: Tensor | np.ndarray, name: str, min_n: int = 2) -> Tensor:
    """Validate an (N, D) feature matrix with N >= min_n; return it as float64 on the CPU."""
    f = _as_float64(f, name)
    if f.ndim != 2:
        raise ValueError(f"{name} must be features of shape (N, D), got {tuple(f.shape)}")
    if len(f) < min_n:
        raise ValueError(f"{name} needs at least {min_n} samples, got N={len(f)}")
    if not torch.isfinite(f).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return f


def _check_pair(f1: Tensor, f2: Tensor) -> None:
    if f1.shape[1] != f2.shape[1]:
        raise ValueError(
            f"both feature sets must have the same width D, got {f1.shape[1]} and {f2.shape[1]}"
        )


def _default_classifier() -> nn.Module:
    from .pretrained import load_pretrained

    return load_pretrained("digit-classifier")


def _placement(net: object) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of a module's parameters (CPU float32 for anything else)."""
    if isinstance(net, nn.Module):
        for p in net.parameters():
            if p.is_floating_point():
                return p.device, p.dtype
    return torch.device("cpu"), torch.float32


def _psd_sqrt(s: Tensor) -> Tensor:
    """Symmetric square root of a symmetric PSD matrix, eigenvalues clamped at 0."""
    eigvals, eigvecs = torch.linalg.eigh((s + s.T) / 2)
    return (eigvecs * eigvals.clamp(min=0).sqrt()) @ eigvecs.T


# Fréchet distance and FID


def frechet_distance(
    mu1: Tensor | np.ndarray,
    sigma1: Tensor | np.ndarray,
    mu2: Tensor | np.ndarray,
    sigma2: Tensor | np.ndarray,
) -> float:
    """Fréchet (2-Wasserstein) distance squared between :math:`\\mathcal N(\\mu_1, \\Sigma_1)`
    and :math:`\\mathcal N(\\mu_2, \\Sigma_2)`:

    .. math:: d^2 = \\lVert\\mu_1 - \\mu_2\\rVert_2^2 + \\mathrm{Tr}\\big(\\Sigma_1 + \\Sigma_2
              - 2\\,(\\Sigma_1^{1/2}\\Sigma_2\\Sigma_1^{1/2})^{1/2}\\big).

    The trace of the matrix square root is :math:`\\sum_i \\sqrt{\\lambda_i}` over the
    eigenvalues of the symmetric PSD matrix :math:`\\Sigma_1^{1/2}\\Sigma_2\\Sigma_1^{1/2}`
    (similar to :math:`\\Sigma_1\\Sigma_2`); round-off can make tiny eigenvalues negative, they
    are clamped to 0. Everything runs in float64 with symmetric eigendecompositions, which is
    stabler than a general ``sqrtm`` when the covariances are near singular (N close to D).

    Args:
        mu1, mu2: (D,) means.
        sigma1, sigma2: (D, D) symmetric positive semi-definite covariances.

    Returns:
        :math:`d^2` in squared feature units, >= 0 (a float).
    """
    m1, m2 = _as_float64(mu1, "mu1"), _as_float64(mu2, "mu2")
    s1, s2 = _as_float64(sigma1, "sigma1"), _as_float64(sigma2, "sigma2")
    if m1.ndim != 1 or m1.shape != m2.shape:
        raise ValueError(
            f"mu1 and mu2 must be vectors of the same shape (D,), got "
            f"{tuple(m1.shape)} and {tuple(m2.shape)}"
        )
    d = m1.shape[0]
    for name, s in (("sigma1", s1), ("sigma2", s2)):
        if s.shape != (d, d):
            raise ValueError(f"{name} must have shape (D, D) = ({d}, {d}), got {tuple(s.shape)}")
    root1 = _psd_sqrt(s1)
    middle = root1 @ s2 @ root1
    eigvals = torch.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt = eigvals.clamp(min=0).sqrt().sum()
    value = (m1 - m2).pow(2).sum() + torch.trace(s1) + torch.trace(s2) - 2 * trace_sqrt
    return max(value.item(), 0.0)


def feature_statistics(features: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
    """Mean and unbiased covariance of a feature set.

    .. math:: \\hat\\mu = \\frac1N\\sum_n f_n,\\qquad
              \\hat\\Sigma = \\frac1{N-1}\\sum_n (f_n - \\hat\\mu)(f_n - \\hat\\mu)^\\top

    Args:
        features: (N, D) with N >= 2.

    Returns:
        mu (D,) and sigma (D, D), float64 CPU tensors.
    """
    f = _check_features(features, "features")
    mu = f.mean(0)
    centred = f - mu
    return mu, centred.T @ centred / (len(f) - 1)


def fid_from_features(f1: Tensor | np.ndarray, f2: Tensor | np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N1, D) and (N2, D).

    Biased upwards for finite N: report it with the sample counts and next to
    :func:`real_vs_real_floor` at the same N.
    """
    f1, f2 = _check_features(f1, "f1"), _check_features(f2, "f2")
    _check_pair(f1, f2)
    return frechet_distance(*feature_statistics(f1), *feature_statistics(f2))


# KID


def _polynomial_kernel(x: Tensor, y: Tensor) -> Tensor:
    """:math:`k(x, y) = (x^\\top y / D + 1)^3` for all pairs: (M, D), (M', D) -> (M, M')."""
    return (x @ y.T / x.shape[1] + 1) ** 3


def _mmd2_unbiased(x: Tensor, y: Tensor) -> float:
    m = len(x)
    k_xx, k_yy, k_xy = (
        _polynomial_kernel(x, x),
        _polynomial_kernel(y, y),
        _polynomial_kernel(x, y),
    )
    off_diagonal = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (
        m * (m - 1)
    )
    return (off_diagonal - 2 * k_xy.mean()).item()


def kid_from_features(
    f1: Tensor | np.ndarray,
    f2: Tensor | np.ndarray,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel Inception Distance (Bińkowski et al., 2018) between two feature sets.

    On each of ``subsets`` random subsets of m = min(subset_size, N1, N2) samples drawn
    without replacement from each set, the unbiased estimate of the squared MMD with the cubic
    polynomial kernel :math:`k(x, y) = (x^\\top y / D + 1)^3`,

    .. math:: \\widehat{\\mathrm{MMD}}^2_u = \\frac{1}{m(m-1)}\\sum_{i \\ne j}
              \\big(k(x_i, x_j) + k(y_i, y_j)\\big) - \\frac{2}{m^2}\\sum_{i, j} k(x_i, y_j),

    is averaged. The estimator is unbiased for every m, so its expectation does not depend on
    the sample count; it can be slightly negative when the distributions are close, and two
    copies of one set give a small O(1/m) value, not exactly 0, since the estimator treats them
    as independent samples. With m = N1 = N2 every subset is the whole set and the spread is 0.
    Its unit is the kernel's: with the digit classifier's unnormalised 128-wide features the
    kernel values are in the hundreds, so KIDs are not on the ~1e-3 scale of Inception KIDs.

    Args:
        f1, f2: (N1, D) and (N2, D) features, N >= 2.
        subsets: number of random subsets.
        subset_size: the largest subset size m.
        seed: seed of the subset draws.

    Returns:
        (mean, std) of the estimates over the subsets, in the kernel's units.
    """
    f1, f2 = _check_features(f1, "f1"), _check_features(f2, "f2")
    _check_pair(f1, f2)
    if subsets < 1:
        raise ValueError(f"subsets must be >= 1, got {subsets}")
    if subset_size < 2:
        raise ValueError(f"subset_size must be >= 2, got {subset_size}")
    m = min(subset_size, len(f1), len(f2))
    if m == len(f1) == len(f2):  # every subset is both whole sets, and MMD ignores the order
        return _mmd2_unbiased(f1, f2), 0.0
    rng = np.random.default_rng(seed)
    estimates = [
        _mmd2_unbiased(
            f1[torch.from_numpy(rng.choice(len(f1), m, replace=False))],
            f2[torch.from_numpy(rng.choice(len(f2), m, replace=False))],
        )
        for _ in range(subsets)
    ]
    values = np.asarray(estimates)
    return float(values.mean()), float(values.std())


# precision and recall


def _kth_neighbour_radii(f: Tensor, k: int, batch_size: int) -> Tensor:
    """(N, D) -> (N,) distance of each point to its k-th nearest *other* point of the set."""
    radii = []
    for chunk in f.split(batch_size):
        d = torch.cdist(chunk, f)  # (B, N); column of the point itself is 0
        radii.append(d.kthvalue(k + 1, dim=1).values)
    return torch.cat(radii)


def _inside_manifold(queries: Tensor, support: Tensor, radii: Tensor, batch_size: int) -> Tensor:
    """(Q,) bool: is query q within ``radii[i]`` of some support point i?"""
    inside = []
    for chunk in queries.split(batch_size):
        inside.append((torch.cdist(chunk, support) <= radii[None]).any(1))
    return torch.cat(inside)


def precision_recall(
    real_features: Tensor | np.ndarray,
    fake_features: Tensor | np.ndarray,
    k: int = 3,
    batch_size: int = 1024,
) -> dict[str, float]:
    """Improved precision and recall (Kynkäänniemi et al., 2019).

    Each set's manifold is estimated as the union of balls around its points whose radius is
    the distance to the point's k-th nearest neighbour in the same set:

    .. math:: \\mathrm{in}(\\phi, \\Phi) = 1 \\text{ if } \\exists \\phi' \\in \\Phi:\\;
              \\lVert\\phi - \\phi'\\rVert_2 \\le \\lVert\\phi' - \\mathrm{NN}_k(\\phi', \\Phi)\\rVert_2,

    precision :math:`= \\frac1{N_g}\\sum_{\\phi_g}\\mathrm{in}(\\phi_g, \\Phi_r)` (how many
    generated samples look real) and recall :math:`= \\frac1{N_r}\\sum_{\\phi_r}
    \\mathrm{in}(\\phi_r, \\Phi_g)` (how much of the real data the generator covers). Both
    depend on k and on the sample counts; compare them at the same N.

    Args:
        real_features: (N_r, D) with N_r > k.
        fake_features: (N_g, D) with N_g > k.
        k: the neighbour that sets the radii.
        batch_size: rows of the distance matrix computed at once (memory).

    Returns:
        ``{"precision": float, "recall": float}``, each in [0, 1].
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    real = _check_features(real_features, "real_features", min_n=k + 1)
    fake = _check_features(fake_features, "fake_features", min_n=k + 1)
    _check_pair(real, fake)
    real_radii = _kth_neighbour_radii(real, k, batch_size)
    fake_radii = _kth_neighbour_radii(fake, k, batch_size)
    precision = _inside_manifold(fake, real, real_radii, batch_size).double().mean().item()
    recall = _inside_manifold(real, fake, fake_radii, batch_size).double().mean().item()
    return {"precision": precision, "recall": recall}


# features of images


class FeatureSpace:
    """The feature space in which image metrics are computed.

    By default the 128-wide penultimate layer of the shipped digit classifier
    (``load_pretrained("digit-classifier")``, loaded on first use, in eval mode). Any module
    with a ``features(x)`` method, or any callable mapping (N, 1, 28, 28) images in [0, 1] to
    (N, D) features, can take its place.

    Args:
        network: the feature network; ``None`` for the digit classifier.
        batch_size: images passed through the network at once.
    """

    def __init__(
        self, network: nn.Module | Callable[[Tensor], Tensor] | None = None, batch_size: int = 500
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self._network = network
        self.batch_size = batch_size

    @property
    def network(self) -> nn.Module | Callable[[Tensor], Tensor]:
        if self._network is None:
            self._network = _default_classifier()
        return self._network

    @staticmethod
    def check_images(x: Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is a float batch (N, 1, 28, 28) in [0, 1]."""
        if not isinstance(x, Tensor):
            raise ValueError(f"images must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 4 or tuple(x.shape[1:]) != IMAGE_SHAPE:
            raise ValueError(
                f"images must have shape (N, 1, 28, 28), got {tuple(x.shape)}; "
                "add the channel axis with x.unsqueeze(1)"
            )
        if len(x) == 0:
            raise ValueError("images must hold at least one image, got N=0")
        if not x.is_floating_point():
            raise ValueError(f"images must be float pixels in [0, 1], got dtype {x.dtype}")
        lo, hi = x.min().item(), x.max().item()
        if not (lo >= 0.0 and hi <= 1.0):  # also false for NaN
            raise ValueError(
                f"image pixels must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]; "
                "map generator outputs in [-1, 1] with (x + 1) / 2 and clamp"
            )

    @torch.no_grad()
    def features(self, x: Tensor) -> Tensor:
        """(N, 1, 28, 28) images in [0, 1] -> (N, D) float64 features on the CPU."""
        self.check_images(x)
        net = self.network
        extract = getattr(net, "features", net)
        was_training = isinstance(net, nn.Module) and net.training
        if isinstance(net, nn.Module):
            net.eval()
        try:
            device, dtype = _placement(net)
            out = [
                extract(chunk.to(device, dtype)).to("cpu", torch.float64)
                for chunk in x.split(self.batch_size)
            ]
        finally:
            if was_training:
                net.train()
        f = torch.cat(out)
        if f.ndim != 2 or len(f) != len(x):
            raise ValueError(f"the feature network must return (N, D), got {tuple(f.shape)}")
        return f


def fid(real_images: Tensor, fake_images: Tensor, space: FeatureSpace | None = None) -> float:
    """FID between two image sets (N_r, 1, 28, 28) and (N_g, 1, 28, 28) in [0, 1], in the
    feature space ``space`` (default: the digit classifier's). See :func:`fid_from_features`."""
    space = FeatureSpace() if space is None else space
    return fid_from_features(space.features(real_images), space.features(fake_images))


def kid(
    real_images: Tensor,
    fake_images: Tensor,
    space: FeatureSpace | None = None,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """KID (mean, std) between two image sets in [0, 1]; see :func:`kid_from_features`."""
    space = FeatureSpace() if space is None else space
    return kid_from_features(
        space.features(real_images),
        space.features(fake_images),
        subsets=subsets,
        subset_size=subset_size,
        seed=seed,
    )


def real_pair(n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """n training digits and n held-out test digits, drawn at random with ``seed``: the two
    real sets of :func:`real_vs_real_floor` (the same draw for the same n and seed).

    Returns:
        (train_images, test_images), each (n, 1, 28, 28) float32 in [0, 1].
    """
    from .data import load_mnist

    if isinstance(n, bool) or not isinstance(n, int) or not 2 <= n <= TEST_SPLIT_SIZE:
        raise ValueError(
            f"n must be an int in [2, {TEST_SPLIT_SIZE}] (the test split has "
            f"{TEST_SPLIT_SIZE} digits), got {n!r}"
        )
    x_train, _ = load_mnist("train")
    x_test, _ = load_mnist("test")
    g = torch.Generator().manual_seed(seed)
    real_a = x_train[torch.randperm(len(x_train), generator=g)[:n]]
    real_b = x_test[torch.randperm(len(x_test), generator=g)[:n]]
    return real_a, real_b


def real_vs_real_floor(
    n: int, space: FeatureSpace | None = None, seed: int = 0
) -> dict[str, float]:
    """FID and KID between n training digits and n test digits, drawn at random with ``seed``
    (:func:`real_pair`).

    Both sets are real MNIST, so this is what a perfect generator scores with n samples: the
    floor that FIDs computed with n samples should be read against. The test split has 500
    digits, hence n <= 500.

    Returns:
        ``{"fid": float, "kid": float}`` (KID is the mean over subsets).
    """
    real_a, real_b = real_pair(n, seed)
    space = FeatureSpace() if space is None else space
    fa, fb = space.features(real_a), space.features(real_b)
    return {"fid": fid_from_features(fa, fb), "kid": kid_from_features(fa, fb, seed=seed)[0]}


def metrics_vs_sample_size(
    reference: Tensor | np.ndarray,
    other: Tensor | np.ndarray,
    sizes: list[int] | tuple[int, ...],
    repeats: int = 5,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """FID and KID between n features drawn from ``reference`` and n from ``other``, for each
    n in ``sizes``: how the two estimates depend on the sample count.

    Each of ``repeats`` draws takes n rows of each set at random without replacement; KID is
    the unbiased estimate on the whole draw (one subset of m = n). FID's plug-in estimate is
    biased upwards by roughly a constant over n (its expectation is close to linear in 1/n),
    KID's expectation does not depend on n.

    Args:
        reference: (N_r, D) features, e.g. of held-out digits.
        other: (N_o, D) features, e.g. of samples or of other real digits.
        sizes: sample counts, each in [2, min(N_r, N_o)].
        repeats: random draws per size (a size equal to both set sizes gives equal draws).
        seed: seed of the draws.

    Returns:
        ``{"n", "fid_mean", "fid_std", "kid_mean", "kid_std"}``, arrays of len(sizes).
    """
    ref = _check_features(reference, "reference")
    oth = _check_features(other, "other")
    _check_pair(ref, oth)
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    largest = min(len(ref), len(oth))
    for n in sizes:
        if isinstance(n, bool) or int(n) != n or not 2 <= n <= largest:
            raise ValueError(f"every size must be an int in [2, {largest}], got {n!r}")
    g = torch.Generator().manual_seed(seed)
    values = np.empty((len(sizes), repeats, 2))  # (size, draw, [FID, KID])
    for i, n in enumerate(sizes):
        for j in range(repeats):
            a = ref[torch.randperm(len(ref), generator=g)[: int(n)]]
            b = oth[torch.randperm(len(oth), generator=g)[: int(n)]]
            values[i, j] = fid_from_features(a, b), _mmd2_unbiased(a, b)
    fid_values, kid_values = values[..., 0], values[..., 1]
    return {
        "n": np.asarray(sizes, dtype=int),
        "fid_mean": fid_values.mean(1),
        "fid_std": fid_values.std(1),
        "kid_mean": kid_values.mean(1),
        "kid_std": kid_values.std(1),
    }


# class histograms


def _predict(images: Tensor, classifier: nn.Module | None) -> Tensor:
    FeatureSpace.check_images(images)
    if classifier is None:
        classifier = _default_classifier()
    device, dtype = _placement(classifier)
    images = images.to(device, dtype)
    if hasattr(classifier, "predict"):
        return classifier.predict(images).cpu()
    was_training = classifier.training
    classifier.eval()
    try:
        with torch.no_grad():
            return classifier(images).argmax(1).cpu()
    finally:
        classifier.train(was_training)


def class_histogram(
    images: Tensor, classifier: nn.Module | None = None, num_classes: int = 10
) -> Tensor:
    """Fraction of ``images`` (N, 1, 28, 28) in [0, 1] predicted as each class.

    :math:`h_c = \\frac1N\\,\\#\\{n : \\hat y(x_n) = c\\}` with :math:`\\hat y` the classifier's
    label (default: the shipped digit classifier).

    Returns:
        (num_classes,) float64 tensor summing to 1.
    """
    labels = _predict(images, classifier)
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"the classifier predicted labels outside 0..{num_classes - 1}")
    counts = torch.bincount(labels, minlength=num_classes).to(torch.float64)
    return counts / len(labels)


def class_histogram_kl(hist: Tensor | np.ndarray) -> float:
    """:math:`\\mathrm{KL}(h\\,\\|\\,u) = \\sum_c h_c \\log(C h_c)` in nats, from a class
    histogram to the uniform distribution over its C classes (with :math:`0 \\log 0 = 0`).

    0 for a perfectly balanced generator, :math:`\\log C` when every sample is one class.

    Args:
        hist: (C,) non-negative fractions summing to 1 (e.g. :func:`class_histogram`).
    """
    h = _as_float64(hist, "hist")
    if h.ndim != 1 or len(h) == 0:
        raise ValueError(f"hist must be a non-empty vector (C,), got {tuple(h.shape)}")
    if (h < 0).any() or abs(h.sum().item() - 1.0) > 1e-6:
        raise ValueError(
            f"hist must be non-negative fractions summing to 1, got sum {h.sum().item():.6g}"
        )
    return torch.xlogy(h, h * len(h)).sum().item()


def conditional_accuracy(
    images: Tensor, labels: Tensor, classifier: nn.Module | None = None
) -> float:
    """Fraction of samples generated for label :math:`y_n` that the classifier labels
    :math:`y_n`: :math:`\\frac1N\\sum_n [\\hat y(x_n) = y_n]`.

    Args:
        images: (N, 1, 28, 28) in [0, 1].
        labels: (N,) int64, the labels the samples were conditioned on.
        classifier: default the shipped digit classifier.
    """
    if not isinstance(labels, Tensor) or labels.shape != (len(images),):
        shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"labels must be a tensor of shape ({len(images)},), got {shape}")
    predicted = _predict(images, classifier)
    return (predicted == labels.cpu()).double().mean().item()


# memorisation


def nearest_neighbour_distance(samples: Tensor, train: Tensor, batch_size: int = 1024) -> Tensor:
    """Euclidean pixel distance from each sample to its nearest training example,
    :math:`d_n = \\min_m \\lVert x_n - x^{\\text{train}}_m\\rVert_2`.

    The nearest neighbour is found with ``torch.cdist`` in float64 on batches of samples, then
    its distance is recomputed directly, so an exact copy of a training image gives exactly 0.

    Args:
        samples: (N, ...) e.g. (N, 1, 28, 28).
        train: (M, ...) with the same per-example shape.
        batch_size: samples compared at once (memory: batch_size x M distances).

    Returns:
        (N,) float64 distances in pixel units, on ``samples``' device.
    """
    if samples.ndim < 1 or train.ndim < 1 or samples.shape[1:] != train.shape[1:]:
        raise ValueError(
            f"samples (N, ...) and train (M, ...) must have the same per-example shape, "
            f"got {tuple(samples.shape)} and {tuple(train.shape)}"
        )
    if len(train) == 0:
        raise ValueError("train must hold at least one example")
    device = samples.device
    flat_train = train.detach().to(device, torch.float64).flatten(1)
    out = []
    for chunk in samples.detach().to(torch.float64).flatten(1).split(batch_size):
        nearest = torch.cdist(chunk, flat_train).argmin(1)
        out.append((chunk - flat_train[nearest]).norm(dim=1))
    if not out:
        return torch.zeros(0, dtype=torch.float64, device=device)
    return torch.cat(out)


def memorisation(
    sample_distances: Tensor | np.ndarray, heldout_distances: Tensor | np.ndarray
) -> dict[str, float]:
    """Do samples sit closer to the training images than new real digits do?

    Given each sample's distance to its nearest training image, :math:`d_g`
    (:func:`nearest_neighbour_distance`), and the same distance for held-out real digits that
    were never trained on, :math:`d_r`, returns

    - ``nn_median`` and ``nn_median_heldout``: the medians of :math:`d_g` and :math:`d_r`;
    - ``closer_than_heldout``: :math:`P(d_g < d_r)` over all pairs (ties count half), the
      Mann-Whitney statistic of the data-copying test of Meehan et al. (2020) without its
      cells. About 0.5 when samples are as far from the training set as new digits are; near 1
      when samples hug training images (copying, or merely smooth "average" digits, which are
      close in pixel distance to many images); near 0 when samples are far from any digit;
    - ``copies``: the fraction of samples closer to a training image than *every* held-out
      digit is, :math:`\\frac1{N_g}\\#\\{g : d_g < \\min_r d_r\\}`. New digits score about
      :math:`1/(N_r + 1)`; a model that reproduces training images scores near 1.

    Args:
        sample_distances: (N_g,) distances of the samples, N_g >= 1.
        heldout_distances: (N_r,) distances of held-out real digits, N_r >= 1.
    """
    d_g = _as_float64(sample_distances, "sample_distances").flatten()
    d_r = _as_float64(heldout_distances, "heldout_distances").flatten()
    if len(d_g) == 0 or len(d_r) == 0:
        raise ValueError(f"need at least one distance in each set, got {len(d_g)} and {len(d_r)}")
    sorted_r = d_r.sort().values
    at_most = torch.searchsorted(sorted_r, d_g, right=True)  # (N_g,) #{r: d_r <= d_g}
    above = len(d_r) - at_most  # #{r: d_r > d_g}
    ties = at_most - torch.searchsorted(sorted_r, d_g)  # #{r: d_r == d_g}
    closer = (above + 0.5 * ties).sum() / (len(d_g) * len(d_r))
    return {
        "nn_median": d_g.quantile(0.5).item(),
        "nn_median_heldout": d_r.quantile(0.5).item(),
        "closer_than_heldout": closer.item(),
        "copies": (d_g < d_r.min()).double().mean().item(),
    }


# likelihood units


def bits_per_dim(nll_nats: float | Tensor, dims: int) -> float:
    """:math:`\\mathrm{bpd} = \\frac{\\mathrm{NLL}}{D \\ln 2}`: a per-example negative
    log-likelihood in nats over D dimensions, in bits per dimension.

    For 8-bit images the NLL must be that of the *discrete* pixels: a continuous density on
    [0, 1]^D (dequantised data) gives :math:`\\mathrm{NLL}_{\\text{discrete}} \\approx
    \\mathrm{NLL}_{[0,1]} + D \\ln 256`; add that term before calling this.
    """
    if dims < 1:
        raise ValueError(f"dims must be >= 1, got {dims}")
    return float(nll_nats) / (dims * math.log(2))


def bits_per_char(nats: float | Tensor) -> float:
    """Cross-entropy per character in nats -> bits per character, :math:`\\text{nats} / \\ln 2`."""
    return float(nats) / math.log(2)


# linear probes


def linear_probe(
    train_features: Tensor | np.ndarray,
    train_labels: Tensor | np.ndarray,
    test_features: Tensor | np.ndarray,
    test_labels: Tensor | np.ndarray,
    *,
    max_iter: int = 1000,
) -> float:
    """Balanced accuracy on the test set of a linear classifier fitted on frozen features.

    Features (N, D) are standardised with the training set's mean and deviation, then a
    logistic regression with class weights inversely proportional to class frequency is
    fitted (scikit-learn). Balanced accuracy, the mean of the per-class recalls, is 1/K for
    any constant guess among K classes however unbalanced they are, so probes of rare
    properties are not flattered by the majority class.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    arrays = []
    for name, value in (
        ("train_features", train_features),
        ("train_labels", train_labels),
        ("test_features", test_features),
        ("test_labels", test_labels),
    ):
        arrays.append(
            value.detach().cpu().float().numpy() if isinstance(value, Tensor) else np.asarray(value)
        )
        want = 2 if name.endswith("features") else 1
        if arrays[-1].ndim != want:
            raise ValueError(f"{name} must be {want}-D, got shape {arrays[-1].shape}")
    xtr, ytr, xte, yte = arrays
    if len(xtr) != len(ytr) or len(xte) != len(yte) or xtr.shape[1] != xte.shape[1]:
        raise ValueError(
            f"features (N, D) and labels (N,) must match: train {xtr.shape} / {ytr.shape}, "
            f"test {xte.shape} / {yte.shape}"
        )
    if len(np.unique(ytr)) < 2:
        raise ValueError("the training labels hold a single class; a probe needs two or more")
    probe = make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=max_iter, class_weight="balanced")
    )
    probe.fit(xtr, ytr)
    return float(balanced_accuracy_score(yte, probe.predict(xte)))


# 2-D mode coverage


def modes_covered(
    samples: Tensor, centres: Tensor, radius: float, min_share: float = 0.01
) -> dict[str, int | Tensor | float]:
    """Mode coverage of 2-D samples from a mixture with known centres (the ring of chapter 06).

    Each sample is assigned to its nearest centre. ``share[k]`` is the fraction of all samples
    assigned to centre k *and* within ``radius`` of it; mode k is covered if
    ``share[k] >= min_share``; ``high_quality`` is the fraction of samples within ``radius`` of
    any centre (= ``share.sum()``). A common choice is radius = 3 standard deviations of a mode.

    Args:
        samples: (N, 2) points (any (N, D) works).
        centres: (K, D) mode centres.
        radius: distance to a centre that counts as hitting the mode (> 0).
        min_share: fraction of samples that a mode needs to count as covered.

    Returns:
        ``{"covered": int, "share": (K,) float64 tensor, "high_quality": float}``.
    """
    x, c = _as_float64(samples, "samples"), _as_float64(centres, "centres")
    if x.ndim != 2 or c.ndim != 2 or x.shape[1] != c.shape[1]:
        raise ValueError(
            f"samples (N, D) and centres (K, D) must have the same D, got "
            f"{tuple(x.shape)} and {tuple(c.shape)}"
        )
    if len(x) == 0 or len(c) == 0:
        raise ValueError(f"need at least one sample and one centre, got N={len(x)}, K={len(c)}")
    if radius <= 0:
        raise ValueError(f"radius must be > 0, got {radius}")
    if not 0 < min_share <= 1:
        raise ValueError(f"min_share must lie in (0, 1], got {min_share}")
    dist, nearest = torch.cdist(x, c).min(1)  # (N,), (N,)
    hit = dist <= radius
    share = torch.bincount(nearest[hit], minlength=len(c)).to(torch.float64) / len(x)
    return {
        "covered": int((share >= min_share).sum().item()),
        "share": share,
        "high_quality": share.sum().item(),
    }
