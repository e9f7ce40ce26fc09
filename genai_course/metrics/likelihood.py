"""Likelihood in bits: per dimension for images, per character for text.

The course compares image likelihoods on one convention (chapter 16): bits per dimension of
the *8-bit* test digits, with a continuous model scored on the dequantised pixels
:math:`y = (x + u)/256` (:func:`bits_per_dim_dequantised`). Binarised MNIST is a different
data set, reported in nats per image as the literature does.
"""

from __future__ import annotations

import math

from torch import Tensor

__all__ = ["bits_per_char", "bits_per_dim", "bits_per_dim_dequantised"]


def bits_per_dim(nll_nats: float | Tensor, dims: int) -> float:
    """:math:`\\mathrm{bpd} = \\frac{\\mathrm{NLL}}{D \\ln 2}`: a per-example negative
    log-likelihood in nats over D dimensions, in bits per dimension.

    For 8-bit images the NLL must be that of the *discrete* pixels; for a continuous density
    on dequantised pixels in [0, 1]^D use :func:`bits_per_dim_dequantised`, which adds the
    :math:`D \\ln 256` that separates the two.
    """
    if dims < 1:
        raise ValueError(f"dims must be >= 1, got {dims}")
    return float(nll_nats) / (dims * math.log(2))


def bits_per_dim_dequantised(nll_nats: float | Tensor, dims: int, levels: int = 256) -> float:
    """Bits per dimension of *8-bit* pixels from the NLL of a density on dequantised pixels.

    The data are integers :math:`x \\in \\{0, \\dots, 255\\}^D`; dequantising them,
    :math:`y = (x + u)/256` with :math:`u \\sim \\mathcal U[0, 1)^D`, fills the cube of side
    :math:`1/256` that belongs to :math:`x`. A density :math:`p` on :math:`[0, 1]^D` gives
    :math:`x` the probability of its cube,

    .. math:: P(x) = \\int_{\\text{cube}(x)} p(y)\\, dy
       = 256^{-D}\\, \\mathbb E_u\\big[p\\big((x + u)/256\\big)\\big]
       \\;\\Rightarrow\\; -\\log P(x) \\le \\mathbb E_u\\big[-\\log p(y)\\big] + D \\ln 256

    by Jensen's inequality (Theis et al. 2016). So a model's NLL on dequantised test pixels
    (``nll_nats``, nats per image, the average of :math:`-\\log p(y)`), plus :math:`D \\ln 256`,
    bounds the NLL of the discrete 8-bit pixels from above, and in bits per dimension

    .. math:: \\mathrm{bpd} = \\frac{\\mathrm{NLL}_y / D + \\ln 256}{\\ln 2}
       = \\frac{\\mathrm{NLL}_y}{D \\ln 2} + 8.

    A uniform density on :math:`[0, 1]^D` (:math:`\\mathrm{NLL}_y = 0`) scores exactly 8, the
    cost of storing each byte as it is; a density that is constant on each cube is exact (no
    Jensen gap). A discrete model of the 8-bit values (PixelCNN's softmax over 256 levels)
    is scored directly with :func:`bits_per_dim` of its NLL; both land on the same scale.

    Args:
        nll_nats: mean :math:`-\\log p(y)` per image in nats, over dequantised images in
            :math:`[0, 1]^D`.
        dims: D, the number of pixels (times channels) per image.
        levels: quantisation levels per pixel, 256 for 8-bit data.
    """
    if dims < 1:
        raise ValueError(f"dims must be >= 1, got {dims}")
    if levels < 2:
        raise ValueError(f"levels must be >= 2, got {levels}")
    return (float(nll_nats) / dims + math.log(levels)) / math.log(2)


def bits_per_char(nats: float | Tensor) -> float:
    """Cross-entropy per character in nats -> bits per character, :math:`\\text{nats} / \\ln 2`."""
    return float(nats) / math.log(2)
