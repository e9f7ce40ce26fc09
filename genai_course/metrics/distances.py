"""Distances between two sets of features (N, D): the Fréchet distance of fitted Gaussians
(FID) and the unbiased kernel MMD (KID)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ._checks import _as_float64, _check_features, _check_pair

__all__ = [
    "feature_statistics",
    "fid_from_features",
    "frechet_distance",
    "kid_from_features",
]


def _psd_sqrt(s: Tensor) -> Tensor:
    """Symmetric square root of a symmetric PSD matrix, eigenvalues clamped at 0."""
    eigvals, eigvecs = torch.linalg.eigh((s + s.T) / 2)
    return (eigvecs * eigvals.clamp(min=0).sqrt()) @ eigvecs.T


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
