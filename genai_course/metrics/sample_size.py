"""How the sample metrics depend on the sample count N: the floor of FID and KID between two
sets of real digits (:func:`real_vs_real_floor`) and both estimates against N
(:func:`metrics_vs_sample_size`)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ._checks import _check_features, _check_pair
from .distances import _mmd2_unbiased, fid_from_features, kid_from_features
from .features import FeatureSpace

__all__ = ["floor_from_features", "metrics_vs_sample_size", "real_pair", "real_vs_real_floor"]

TEST_SPLIT_SIZE = 500  # digits in load_mnist("test") and in load_mnist("val"): the cap of n


def real_pair(n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """n validation digits and n test digits, drawn at random with ``seed``: the two real sets
    of :func:`real_vs_real_floor`, and the course's one evaluation reference (the test digits)
    with the stand-in for a perfect generator (the validation digits).

    Why validation digits and not training digits: a generator trained on the training digits
    is asked for *new* digits, and validation digits are new digits from the same distribution
    that no generator was trained on and that the feature network's weights were never fitted
    to (chapter 02's classifier, and the VAEs, used them only to choose among checkpoints of
    their own runs). Training digits are digits the feature network was fitted to. Both splits
    are random parts of one set of 5,000 digits with exactly 50 digits of each class, so this
    floor is the reference for generators drawn with balanced labels: class counts move FID in
    these features (most of their variance lies between classes), and a set with random class
    counts, real or generated, scores above it (chapter 16 measures by how much).

    Returns:
        (val_images, test_images), each (n, 1, 28, 28) float32 in [0, 1]; the test digits are
        drawn first, so a given (n, seed) always names the same test digits (for n = 500, all).
    """
    from ..data import load_mnist

    if isinstance(n, bool) or not isinstance(n, int) or not 2 <= n <= TEST_SPLIT_SIZE:
        raise ValueError(
            f"n must be an int in [2, {TEST_SPLIT_SIZE}] (the test and validation splits have "
            f"{TEST_SPLIT_SIZE} digits each), got {n!r}"
        )
    x_val, _ = load_mnist("val")
    x_test, _ = load_mnist("test")
    g = torch.Generator().manual_seed(seed)
    test = x_test[torch.randperm(len(x_test), generator=g)[:n]]
    val = x_val[torch.randperm(len(x_val), generator=g)[:n]]
    return val, test


def real_vs_real_floor(
    n: int, space: FeatureSpace | None = None, seed: int = 0
) -> dict[str, float]:
    """FID and KID between n validation digits and n test digits, drawn at random with
    ``seed`` (:func:`real_pair`).

    Both sets are real MNIST that neither the feature network nor any generator was trained
    on, so this is what a perfect generator drawn with balanced labels, one that draws new
    digits from the data distribution, scores against those test digits with n samples: the
    floor that FIDs computed with n samples are read against (``fid_ratio`` = FID / floor).
    The splits have 500 digits each, hence n <= 500. Each split is class-stratified, so the two
    sets are exchangeable only within classes, and KID's expectation is not 0 but a small
    negative offset, -2 (K - 1) / (K (m - 1)) times the mean kernel between digits of one class
    minus that between digits of different classes (K classes, m digits; chapter 16).

    Returns:
        ``{"fid": float, "kid": float}`` (KID is the mean over subsets).
    """
    val, test = real_pair(n, seed)
    space = FeatureSpace() if space is None else space
    return floor_from_features(space.features(test), space.features(val), seed)


def floor_from_features(
    f_test: Tensor | np.ndarray, f_val: Tensor | np.ndarray, seed: int = 0
) -> dict[str, float]:
    """The floor's FID and KID from the features of :func:`real_pair`'s test and validation
    digits, (n, D) each (KID's subsets drawn with ``seed``): what :func:`real_vs_real_floor`
    returns, for callers that already hold the features."""
    return {
        "fid": fid_from_features(f_test, f_val),
        "kid": kid_from_features(f_test, f_val, seed=seed)[0],
    }


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
