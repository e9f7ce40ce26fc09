"""Metrics built on nearest neighbours: improved precision and recall in feature space, and
memorisation read from pixel distances to the training set."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ._checks import _as_float64, _check_features, _check_pair

__all__ = ["memorisation", "nearest_neighbour_distance", "precision_recall"]


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
