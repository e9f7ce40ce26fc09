"""The feature space of the image metrics (:class:`FeatureSpace`, by default the digit
classifier's penultimate layer), FID and KID of image sets in it, and the linear probe of
frozen features."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from .distances import fid_from_features, kid_from_features

__all__ = ["FeatureSpace", "fid", "kid", "linear_probe"]

IMAGE_SHAPE = (1, 28, 28)


def _default_classifier() -> nn.Module:
    from ..pretrained import load_pretrained

    return load_pretrained("digit-classifier")


def _placement(net: object) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of a module's parameters (CPU float32 for anything else)."""
    if isinstance(net, nn.Module):
        for p in net.parameters():
            if p.is_floating_point():
                return p.device, p.dtype
    return torch.device("cpu"), torch.float32


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
