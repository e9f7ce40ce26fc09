"""Input checks shared by the metrics: a float64 CPU copy of a tensor or array, and (N, D)
feature matrices."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


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
