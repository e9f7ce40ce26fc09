"""Differentiable augmentation for GAN training on little data (Zhao et al., 2020).

With 4,000 training digits a discriminator learns the training set by heart: its scores of
real digits climb, those of anything else fall, and the generator's gradient says "be one of
these 4,000 images" rather than "be a digit". DiffAugment shows the discriminator only
augmented images, *real and generated alike, in both players' losses*: the discriminator then
has to judge ``T(x)`` for a random transformation ``T``, which it cannot memorise, and because
``T`` is differentiable the generator's gradient flows back through it. Augmenting only the
real images would teach the generator to produce augmented digits; augmenting both in the
discriminator's step only would let the two steps disagree about what is judged.

Two of the paper's transformations suit grey-level digits (its colour one does not):

- ``translation``: shift each image by up to ``1/8`` of its side in each direction, the
  uncovered border filled with the background value;
- ``cutout``: erase one square of half the side at a random place, filled with the background.

Images are (N, C, H, W) in the GAN's range [-1, 1]; the background is -1 (black). Each image
gets its own draw. The ops are indexing and masking, so gradients pass to the input unchanged
where a pixel is kept and are zero where it is erased.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["POLICIES", "diff_augment", "random_cutout", "random_translation"]

POLICIES = ("none", "translation", "cutout", "translation,cutout")
BACKGROUND = -1.0  # black in the GAN's [-1, 1] range


def _check_images(x: Tensor) -> None:
    if x.ndim != 4:
        raise ValueError(f"expected images (N, C, H, W), got shape {tuple(x.shape)}")


def random_translation(
    x: Tensor, ratio: float = 0.125, generator: torch.Generator | None = None
) -> Tensor:
    """Each image shifted by a random integer offset in [-r, r] pixels along each axis,
    r = round(ratio * side); pixels shifted in from outside are the background."""
    _check_images(x)
    n, _, h, w = x.shape
    rh, rw = round(ratio * h), round(ratio * w)
    dy = torch.randint(-rh, rh + 1, (n, 1, 1), generator=generator).to(x.device)
    dx = torch.randint(-rw, rw + 1, (n, 1, 1), generator=generator).to(x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1) - dy  # source row of each output row
    cols = torch.arange(w, device=x.device).view(1, 1, w) - dx
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)  # (N, H, W)
    rows, cols = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    moved = x.permute(0, 2, 3, 1)[batch, rows, cols]  # (N, H, W, C), gathered
    moved = moved.permute(0, 3, 1, 2)
    return torch.where(inside.unsqueeze(1), moved, torch.full_like(moved, BACKGROUND))


def random_cutout(
    x: Tensor, ratio: float = 0.5, generator: torch.Generator | None = None
) -> Tensor:
    """Each image with one square of side round(ratio * side) set to the background; the
    square's centre is uniform over the image, so it may hang over the border."""
    _check_images(x)
    n, _, h, w = x.shape
    sh, sw = round(ratio * h), round(ratio * w)
    cy = torch.randint(0, h, (n, 1, 1), generator=generator).to(x.device)
    cx = torch.randint(0, w, (n, 1, 1), generator=generator).to(x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    erased = (
        (rows >= cy - sh // 2) & (rows < cy - sh // 2 + sh)
        & (cols >= cx - sw // 2) & (cols < cx - sw // 2 + sw)
    )
    return torch.where(erased.unsqueeze(1), torch.full_like(x, BACKGROUND), x)


def diff_augment(x: Tensor, policy: str, generator: torch.Generator | None = None) -> Tensor:
    """``x`` transformed by the comma-separated ops of ``policy`` (one of :data:`POLICIES`),
    in order; ``"none"`` returns ``x`` itself."""
    if policy not in POLICIES:
        raise ValueError(f"unknown DiffAugment policy {policy!r}; known: {', '.join(POLICIES)}")
    if policy == "none":
        return x
    for op in policy.split(","):
        x = (random_translation if op == "translation" else random_cutout)(x, generator=generator)
    return x
