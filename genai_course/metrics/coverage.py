"""What the samples cover: the digit classifier's class histogram of the samples, its
distance to uniform, the accuracy of a conditional model's labels, and the modes of a 2-D toy
that the samples hit."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from ._checks import _as_float64
from .features import FeatureSpace, _default_classifier, _placement

__all__ = ["class_histogram", "class_histogram_kl", "conditional_accuracy", "modes_covered"]


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
