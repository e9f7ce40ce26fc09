r"""Measured attributes of handwritten digits and the prompts built from them (chapter 13).

A text-to-image model needs images with captions.  MNIST has labels only, so the captions are
written from the label and two attributes measured on each image:

- **stroke thickness** :math:`2A/P` in pixels, with :math:`A` the number of ink pixels (above
  ``threshold``) and :math:`P` the number of ink/background edges between 4-neighbours: a
  stroke of width :math:`w` and length :math:`\ell \gg w` has :math:`A \approx w\ell` and
  :math:`P \approx 2\ell`.  Diagonal strokes have a longer staircase edge, so they read
  somewhat thinner; the comparisons below are within a class, where that bias is shared;
- **slant** :math:`\sum_p I_p (c_p - \bar c)(\bar r - r_p) / \sum_p I_p (r_p - \bar r)^2`
  over pixels :math:`p` at row :math:`r_p` and column :math:`c_p` with ink :math:`I_p`: the
  least-squares horizontal shift per row upwards, so a digit leaning right (its top to the
  right of its bottom) has a positive slant.  It is the shear that deskewing undoes.

Both are relative within a digit class (a one is thinner than an eight), so a digit is "thin"
or "thick" if it lies in the lowest or highest third of its class on the training digits, and
"upright" or "slanted" likewise; the middle third gets no word.  :func:`describe_digits`
writes varied prompts from these: "a thick seven", "slanted 4", "the digit zero", ...  Each
attribute word appears only with probability ``p_attribute``, so a prompt that leaves an
attribute out means any value of it, as a caption would.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .checks import check_image_batch

__all__ = [
    "NUMBER_WORDS",
    "PROMPT_WORDS",
    "SLANT_WORDS",
    "THICKNESS_WORDS",
    "attribute_bins",
    "caption_digits",
    "class_tertiles",
    "describe_digits",
    "digit_attribute_bins",
    "prompt",
    "slant",
    "stroke_thickness",
]

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
THICKNESS_WORDS = ("thin", None, "thick")  # by third of the class: lowest, middle, highest
SLANT_WORDS = ("upright", None, "slanted")
PROMPT_WORDS = (
    "a",
    "an",
    "the",
    "digit",
    "handwritten",
    *NUMBER_WORDS,
    *(str(d) for d in range(10)),
    "thin",
    "thick",
    "upright",
    "slanted",
)


def _images(x: Tensor) -> Tensor:
    if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[1] != 1:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"expected grey images of shape (N, 1, H, W), got {got}")
    check_image_batch(x, tuple(x.shape[1:]), unit_range=True)
    return x[:, 0].double()  # (N, H, W)


def stroke_thickness(x: Tensor, threshold: float = 0.5) -> Tensor:
    """(N,) stroke thickness 2A/P in pixels of grey images x (N, 1, H, W) in [0, 1]; 0 for an
    image without ink."""
    ink = (_images(x) > threshold).to(torch.int8)
    area = ink.sum(dim=(1, 2))
    padded = F.pad(ink, (1, 1, 1, 1))
    edges = (padded[:, :, 1:] != padded[:, :, :-1]).sum(dim=(1, 2))
    edges = edges + (padded[:, 1:, :] != padded[:, :-1, :]).sum(dim=(1, 2))
    return (2.0 * area / edges.clamp(min=1)).float()


def slant(x: Tensor) -> Tensor:
    """(N,) slant of grey images x (N, 1, H, W) in [0, 1]: columns moved right per row up
    (positive: leaning right); 0 for an image without ink."""
    img = _images(x)
    _, h, w = img.shape
    rows = torch.arange(h, dtype=img.dtype)[None, :, None]
    cols = torch.arange(w, dtype=img.dtype)[None, None, :]
    mass = img.sum(dim=(1, 2)).clamp(min=1e-12)  # (N,)
    r_bar = (img * rows).sum(dim=(1, 2)) / mass
    c_bar = (img * cols).sum(dim=(1, 2)) / mass
    dr = rows - r_bar[:, None, None]
    dc = cols - c_bar[:, None, None]
    var_r = (img * dr**2).sum(dim=(1, 2))
    cov = (img * dc * -dr).sum(dim=(1, 2))
    return (cov / var_r.clamp(min=1e-12)).float()


def _check_labels(values: Tensor, labels: Tensor, classes: int) -> tuple[Tensor, Tensor]:
    values, labels = torch.as_tensor(values).double(), torch.as_tensor(labels)
    if values.ndim != 1 or labels.shape != values.shape:
        raise ValueError(
            f"expected values and labels of one shape (N,), got {tuple(values.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if labels.is_floating_point() or (
        len(labels) and (labels.min() < 0 or labels.max() >= classes)
    ):
        raise ValueError(f"labels must be integers in [0, {classes})")
    return values, labels


def class_tertiles(values: Tensor, labels: Tensor, classes: int = 10) -> Tensor:
    """(classes, 2) cut points: the 1/3 and 2/3 quantiles of ``values`` within each class."""
    values, labels = _check_labels(values, labels, classes)
    cuts = torch.empty(classes, 2, dtype=torch.float64)
    for k in range(classes):
        v = values[labels == k]
        if len(v) < 3:
            raise ValueError(f"class {k} has {len(v)} examples; tertiles need at least 3")
        cuts[k] = torch.quantile(v, torch.tensor([1 / 3, 2 / 3], dtype=torch.float64))
    return cuts


def attribute_bins(values: Tensor, labels: Tensor, cuts: Tensor) -> Tensor:
    """(N,) int64 bins 0 (lowest third of its class), 1 (middle) or 2 (highest), from the
    ``cuts`` of :func:`class_tertiles`."""
    cuts = torch.as_tensor(cuts, dtype=torch.float64)
    if cuts.ndim != 2 or cuts.shape[1] != 2:
        raise ValueError(f"expected cuts of shape (classes, 2), got {tuple(cuts.shape)}")
    values, labels = _check_labels(values, labels, len(cuts))
    c = cuts[labels]  # (N, 2)
    return (values > c[:, 0]).long() + (values > c[:, 1]).long()


def digit_attribute_bins(x: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """(N,) thickness bins and (N,) slant bins of digits x (N, 1, H, W) with ``labels``, each
    by the tertiles of its class among these digits (pass the training digits)."""
    thickness, lean = stroke_thickness(x), slant(x)
    return (
        attribute_bins(thickness, labels, class_tertiles(thickness, labels)),
        attribute_bins(lean, labels, class_tertiles(lean, labels)),
    )


def _phrase(label: int, thick: int, lean: int, rng: np.random.Generator, p_attribute: float) -> str:
    attrs = [
        words[b]
        for words, b in ((THICKNESS_WORDS, thick), (SLANT_WORDS, lean))
        if words[b] is not None and rng.random() < p_attribute
    ]
    rng.shuffle(attrs)
    name = NUMBER_WORDS[label] if rng.random() < 0.7 else str(label)
    words = [*attrs, name]
    style = rng.choice(4)
    if style == 0 and not attrs:
        return " ".join(["the", "digit", *words])
    if style == 1:
        return " ".join(["a", "handwritten", *words])
    if style == 2:
        return " ".join(words)
    article = "an" if words[0] in ("eight", "8", "upright") else "a"
    return " ".join([article, *words])


def describe_digits(
    labels: Tensor,
    thickness_bins: Tensor,
    slant_bins: Tensor,
    *,
    variants: int = 1,
    p_attribute: float = 0.7,
    seed: int = 0,
) -> list[str]:
    """``variants`` random prompts for each digit from its label and attribute bins, as a flat
    list variant-major (prompt ``v * N + i`` describes digit i), to pair with
    ``x.repeat(variants, 1, 1, 1)``.  Deterministic given ``seed``."""
    labels = torch.as_tensor(labels)
    n = len(labels)
    thickness_bins, slant_bins = torch.as_tensor(thickness_bins), torch.as_tensor(slant_bins)
    if thickness_bins.shape != (n,) or slant_bins.shape != (n,):
        raise ValueError("labels, thickness_bins and slant_bins must all have shape (N,)")
    for name, t, hi in (
        ("labels", labels, 10),
        ("bins", thickness_bins, 3),
        ("bins", slant_bins, 3),
    ):
        if t.is_floating_point() or (n and (t.min() < 0 or t.max() >= hi)):
            raise ValueError(f"{name} must be integers in [0, {hi})")
    if variants < 1 or not 0.0 <= p_attribute <= 1.0:
        raise ValueError(
            f"need variants >= 1 and p_attribute in [0, 1], got {variants}, {p_attribute}"
        )
    rng = np.random.default_rng(seed)
    rows = list(zip(labels.tolist(), thickness_bins.tolist(), slant_bins.tolist()))
    return [_phrase(k, a, b, rng, p_attribute) for _ in range(variants) for k, a, b in rows]


def prompt(label: int, thickness: str | None = None, slant_word: str | None = None) -> str:
    """The plain prompt for a digit and optional attribute words: ``prompt(7, "thick")`` is
    ``"a thick seven"``."""
    if label not in range(10):
        raise ValueError(f"label must be an int in [0, 10), got {label!r}")
    for word, known in ((thickness, THICKNESS_WORDS), (slant_word, SLANT_WORDS)):
        if word is not None and word not in known:
            raise ValueError(f"unknown attribute {word!r}; known: {[w for w in known if w]}")
    words = [w for w in (thickness, slant_word) if w] + [NUMBER_WORDS[label]]
    return " ".join(["an" if words[0] in ("eight", "upright") else "a", *words])


def caption_digits(
    x: Tensor, labels: Tensor, *, variants: int = 1, p_attribute: float = 0.7, seed: int = 0
) -> list[str]:
    """:func:`describe_digits` of digits x with ``labels``, their attributes binned by
    :func:`digit_attribute_bins`: the captions a text-conditioned model trains on."""
    thick, lean = digit_attribute_bins(x, labels)
    return describe_digits(
        labels, thick, lean, variants=variants, p_attribute=p_attribute, seed=seed
    )
