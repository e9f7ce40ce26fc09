"""Likelihood in bits: per dimension for images, per character for text."""

from __future__ import annotations

import math

from torch import Tensor

__all__ = ["bits_per_char", "bits_per_dim"]


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
