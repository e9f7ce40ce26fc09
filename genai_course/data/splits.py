"""What every loader shares: the split names, the fixed seed, stratified and weighted cuts.

Splits are ``"train"``, ``"val"`` and ``"test"``, drawn once with ``SPLIT_SEED``, disjoint, and
stratified by label where there is one (:func:`stratified_split`).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["SPLITS", "SPLIT_SEED", "stratified_split"]

SPLITS = ("train", "val", "test")
SPLIT_SEED = 0

# Names, Python docs and ABC tunes are cut 80/10/10; MNIST's sizes are counts (see below).
_FRACTIONS_80_10_10 = {"train": 0.8, "val": 0.1, "test": 0.1}


def _check_split(split: str) -> str:
    """Return ``split`` if it is one of ``SPLITS``, else raise ``ValueError``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def _to_device(tensor: Tensor, device: str | torch.device | None) -> Tensor:
    """Move ``tensor`` to ``device``; ``None`` keeps it where it is (the CPU for loaders)."""
    if device is None:
        return tensor
    return tensor.to(torch.device(device))


def _split_totals(sizes: Mapping[str, float | int], n: int) -> dict[str, int]:
    """Turn split sizes (all counts or all fractions summing to 1) into counts summing <= n."""
    if not sizes:
        raise ValueError("sizes must name at least one split, got an empty mapping")
    values = list(sizes.values())
    # bool is an int subclass, and True as a size is almost certainly a mistake.
    if any(
        isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating))
        for v in values
    ):
        raise TypeError(f"sizes must map split names to ints or floats, got {dict(sizes)!r}")
    is_count = [isinstance(v, (int, np.integer)) for v in values]
    if all(is_count):
        if any(v < 0 for v in values):
            raise ValueError(f"split counts must be >= 0, got {dict(sizes)!r}")
        if sum(values) > n:
            raise ValueError(f"split counts {dict(sizes)!r} add up to {sum(values)} > {n} items")
        return {name: int(v) for name, v in sizes.items()}
    if any(is_count):
        raise TypeError(
            f"sizes must be all ints (counts) or all floats (fractions), got {dict(sizes)!r}"
        )
    fractions = np.asarray(values, dtype=np.float64)
    if (fractions < 0).any() or abs(fractions.sum() - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {dict(sizes)!r}")
    # Largest-remainder rounding, so that the counts add up to exactly n.
    exact = fractions * n
    counts = np.floor(exact).astype(np.int64)
    leftover = n - int(counts.sum())
    counts[np.argsort(-(exact - counts), kind="stable")[:leftover]] += 1
    return {name: int(c) for name, c in zip(sizes, counts)}


def stratified_split(
    labels: np.ndarray | Sequence, sizes: Mapping[str, float | int], seed: int = SPLIT_SEED
) -> dict[str, np.ndarray]:
    """Split item indices into named, disjoint, label-stratified subsets.

    Args:
        labels: (N,) array of class labels of any sortable dtype (ints, strings).
        sizes: split name -> size. Either all ``int`` (absolute counts, summing to at most N;
            items left over go to no split) or all ``float`` (fractions summing to 1, rounded so
            that every item goes to exactly one split).
        seed: seed of the shuffle; the same labels, sizes and seed give the same split.

    Returns:
        split name -> ``int64`` array of indices into ``labels``. Every class is cut in the
        same proportions as the whole, up to one item per class and split (500 items of a
        class with sizes 0.8/0.1/0.1 give exactly 400/50/50). Within a split the classes are
        interleaved in a random order, so every *prefix* is stratified too: ``x[:500]`` of the
        MNIST training split holds 50 digits of each class, never a block of zeros.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be a 1-D array of shape (N,), got shape {labels.shape}")
    n = len(labels)
    totals = _split_totals(sizes, n)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    _, inverse, counts = np.unique(labels[perm], return_inverse=True, return_counts=True)
    # Rank of each item within its class, in the shuffled order.
    by_class = np.argsort(inverse, kind="stable")
    class_start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(n, dtype=np.int64)
    rank[by_class] = np.arange(n) - class_start[inverse[by_class]]
    # Ordering items by their relative position within their class interleaves the classes
    # evenly, so any prefix of this order is stratified; cutting it into consecutive pieces
    # gives stratified splits of exactly the requested sizes. Ties keep the random order.
    position = (rank + 0.5) / counts[inverse]
    order = perm[np.argsort(position, kind="stable")]
    bounds = np.cumsum([0, *totals.values()])
    return {
        name: order[start:stop].astype(np.int64)
        for name, start, stop in zip(totals, bounds[:-1], bounds[1:])
    }


def _split_by_weight(
    weights: Sequence[int], fractions: Mapping[str, float], seed: int = SPLIT_SEED
) -> dict[str, list[int]]:
    """Assign whole items of different weights (e.g. characters) to splits by weight.

    Items are visited in an order shuffled with ``seed``; each goes to the first held-out split
    (every split but the first) with room left for it, otherwise to the first split. Held-out
    splits thus stay at or just under their share and the first split takes the rest.
    Returns split name -> item indices in the shuffled order.
    """
    order = np.random.default_rng(seed).permutation(len(weights))
    total = float(sum(weights))
    names = list(fractions)
    budget = {name: fractions[name] * total for name in names[1:]}
    filled = dict.fromkeys(names[1:], 0)
    assigned: dict[str, list[int]] = {name: [] for name in names}
    for index in order.tolist():
        weight = weights[index]
        target = next((s for s in budget if filled[s] + weight <= budget[s]), names[0])
        if target in filled:
            filled[target] += weight
        assigned[target].append(index)
    return assigned


def _derived_seed(*parts: str) -> int:
    """A fixed 32-bit seed from ``SPLIT_SEED`` and strings (``hash`` is salted per process)."""
    words = [SPLIT_SEED, *(zlib.crc32(part.encode()) for part in parts)]
    return int(np.random.SeedSequence(words).generate_state(1)[0])
