"""Few-shot classification with and without generated samples (chapter 19).

The question: does a classifier that sees only ``k`` labelled digits per class get better when
its training batches also hold samples of a class-conditional generator, and is that better than
the classical augmentation (random affine distortions) it should beat?

The experiment is *paired*: for each seed one few-shot split is drawn, and every condition
trains a classifier on that split from the same initial weights with the same batch order (the
real indices, the synthetic indices and the distortions come from three separately seeded
generators, so what one condition draws does not shift another's), so the differences between
conditions are not buried under the (large) differences between splits. What varies between conditions is only what a :class:`Condition` says: an image
transform applied to every training batch, and a pool of labelled synthetic images that
supplies a fixed fraction of every batch.

Shapes: N images, K classes, k = ``per_class`` labelled images per class, images
(N, 1, 28, 28) in [0, 1], labels (N,) int64. Accuracies are fractions in [0, 1].
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checks import check_image_batch
from .models.classifier import ClassifierConfig, DigitClassifier
from .models.vae import VAE, VAEConfig

__all__ = [
    "FEW_SHOT_CLASSIFIER",
    "AugmentationResults",
    "Condition",
    "PairedDifference",
    "augmentation_experiment",
    "few_shot_split",
    "generate_labelled",
    "random_affine",
    "standard_error",
    "train_few_shot_classifier",
    "train_few_shot_cvae",
]

# A quarter of chapter 02's classifier: with 10-200 training images the larger one is no more
# accurate, and 30+ classifiers must train in a notebook's CPU budget.
FEW_SHOT_CLASSIFIER = ClassifierConfig(channels=(16, 32), hidden=64)

# (x_few, y_few, seed) -> (x_synthetic, y_synthetic): a generator fitted to the split itself.
SyntheticFactory = Callable[[Tensor, Tensor, int], tuple[Tensor, Tensor]]
Synthetic = tuple[Tensor, Tensor] | SyntheticFactory | None


# helpers


def _check_labelled(x: Tensor, y: Tensor, name: str = "x") -> None:
    """Raise ``ValueError`` unless ``x`` is a float image batch and ``y`` its (N,) int labels."""
    if not isinstance(x, Tensor) or x.ndim != 4:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be images of shape (N, C, H, W), got {got}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must hold float pixels in [0, 1], got dtype {x.dtype}")
    if not isinstance(y, Tensor) or y.ndim != 1 or y.dtype != torch.int64:
        got = f"{tuple(y.shape)} {y.dtype}" if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"the labels of {name} must be an int64 tensor of shape (N,), got {got}")
    if len(x) != len(y):
        raise ValueError(f"{name} has {len(x)} images but {len(y)} labels")


def _stream_generator(seed: int, stream: int) -> torch.Generator:
    """A CPU generator for random stream ``stream`` of ``seed``: distinct (seed, stream) pairs
    get unrelated seeds (NumPy's ``SeedSequence``), so no stream of one seed replays another's."""
    state = np.random.SeedSequence([seed, stream]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def standard_error(values: Sequence[float] | np.ndarray) -> float:
    """Standard error of the mean, :math:`s / \\sqrt n` with the sample standard deviation
    :math:`s` (``ddof=1``); ``nan`` for fewer than two values."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")


# the few-shot split


def few_shot_split(x: Tensor, y: Tensor, per_class: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``per_class`` labelled images of every class, drawn at random without replacement.

    Each class's images are shuffled with a generator seeded by ``seed`` and the first
    ``per_class`` kept, so the splits of one seed are *nested*: the 5 images per class of
    ``per_class=5`` are among the 20 of ``per_class=20``.

    Args:
        x: (N, C, H, W) images.
        y: (N,) int64 labels.
        per_class: k >= 1, at most the size of the smallest class.
        seed: the same (x, y, per_class, seed) always give the same split.

    Returns:
        ``(x_few, y_few)`` of shapes (K k, C, H, W) and (K k,), grouped by class in
        ascending label order (k zeros, then k ones, ...).
    """
    _check_labelled(x, y)
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"per_class must be an int >= 1, got {per_class!r}")
    labels = y.cpu().numpy()
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) < per_class:
            raise ValueError(
                f"class {c} has {len(members)} images, fewer than per_class={per_class}"
            )
        chosen.append(rng.permutation(members)[:per_class])
    index = torch.from_numpy(np.concatenate(chosen)).to(x.device)
    return x[index], y[index]


# classical augmentation


def random_affine(
    x: Tensor,
    *,
    degrees: float = 15.0,
    translate: float = 0.1,
    scale: float = 0.1,
    shear: float = 10.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Distort each image by its own random affine map (rotation, shear, scale, shift).

    Image n is resampled (bilinear, zeros outside) at the positions
    :math:`A_n p + t_n` for output positions :math:`p` in coordinates normalised to [-1, 1], with

    .. math:: A_n = \\frac{1}{s_n} R(\\theta_n) \\begin{pmatrix} 1 & \\tan\\phi_n \\\\ 0 & 1
       \\end{pmatrix}, \\quad \\theta_n \\sim U(\\pm\\text{degrees}),\\ \\phi_n \\sim
       U(\\pm\\text{shear}),\\ s_n \\sim U(1 \\pm \\text{scale}),\\ t_n \\sim U(\\pm 2\\,
       \\text{translate})^2,

    so ``translate`` is a fraction of the image width (0.1 of 28 pixels: up to 2.8 pixels).
    Every output pixel is a convex combination of input pixels and zeros, so pixels in [0, 1]
    stay in [0, 1]; with all four strengths 0 the map is the identity (up to rounding).

    Args:
        x: (N, C, H, W) float images.
        degrees, shear: largest rotation and shear angle, in degrees, >= 0.
        translate: largest shift on each axis as a fraction of the image size, >= 0.
        scale: largest relative zoom, in [0, 1).
        generator: CPU source of the random parameters, for reproducibility.

    Returns:
        A new (N, C, H, W) tensor on ``x``'s device.
    """
    if not isinstance(x, Tensor) or x.ndim != 4 or not x.is_floating_point():
        got = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be float images of shape (N, C, H, W), got {got}")
    for name, value in (("degrees", degrees), ("translate", translate), ("shear", shear)):
        if not value >= 0:
            raise ValueError(f"{name} must be >= 0, got {value!r}")
    if not 0 <= scale < 1:
        raise ValueError(f"scale must be in [0, 1), got {scale!r}")
    n = len(x)
    u = torch.rand(5, n, generator=generator, dtype=torch.float64) * 2 - 1  # (5, N) in [-1, 1)
    theta = torch.deg2rad(u[0] * degrees)
    phi = torch.deg2rad(u[1] * shear)
    zoom = 1 + u[2] * scale
    cos, sin, tan = theta.cos() / zoom, theta.sin() / zoom, phi.tan()
    # R(theta) @ [[1, tan], [0, 1]] / s, then the shift as the last column: (N, 2, 3)
    rows = [
        torch.stack([cos, cos * tan - sin, u[3] * 2 * translate], 1),
        torch.stack([sin, sin * tan + cos, u[4] * 2 * translate], 1),
    ]
    affine = torch.stack(rows, 1).to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(affine, list(x.shape), align_corners=False)  # (N, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# generated samples


@torch.no_grad()
def generate_labelled(
    model: nn.Module,
    per_class: int,
    *,
    num_classes: int = 10,
    seed: int = 0,
    ddim_steps: int = 20,
    guidance: float = 2.0,
    batch_size: int = 500,
) -> tuple[Tensor, Tensor]:
    """``per_class`` samples of every class from a class-conditional generator, with their labels.

    Works with the course's three conditional families: a :class:`~genai_course.models.vae.VAE`
    or :class:`~genai_course.models.gan.GAN` (``model.sample(n, labels=...)``) and a
    :class:`~genai_course.models.diffusion.Diffusion` model (DDIM with ``ddim_steps`` steps and
    classifier-free guidance scale ``guidance``), drawn through
    :func:`~genai_course.generators.sample_digits`. The label of a sample is the label it was
    *asked* for: a generator that draws the wrong digit adds label noise.

    Returns:
        ``(x, y)``: (K per_class, C, H, W) images in [0, 1] on the CPU and (K per_class,) int64
        labels, grouped by class.
    """
    from .generators import sample_digits
    from .models.diffusion import Diffusion

    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"per_class must be an int >= 1, got {per_class!r}")
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    was_training = model.training
    model.eval()
    try:
        x = sample_digits(
            model,
            len(labels),
            labels=labels,
            seed=seed,
            steps=ddim_steps,
            guidance=guidance if isinstance(model, Diffusion) else None,
            batch_size=batch_size,
        )
    finally:
        model.train(was_training)
    return x, labels


def train_few_shot_cvae(
    x: Tensor,
    y: Tensor,
    *,
    steps: int = 600,
    latent_dim: int = 8,
    hidden: int = 256,
    lr: float = 2e-3,
    num_classes: int = 10,
    seed: int = 0,
) -> VAE:
    """A small class-conditional MLP VAE trained on the few labelled images alone.

    The leak-free control of chapter 19: this generator knows nothing the classifier does not,
    so whatever its samples add must come from the VAE's inductive bias (smooth interpolation
    between the few examples of a class), not from other labelled data. Full-batch Adam on
    the negative ELBO of :meth:`VAE.loss`.

    Args:
        x: (N, 1, H, W) images in [0, 1]; y: (N,) int64 labels.
        steps: optimisation steps (each one pass over all N images).

    Returns:
        The trained :class:`~genai_course.models.vae.VAE`, in eval mode, on the CPU.
    """
    _check_labelled(x, y)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    torch.manual_seed(seed)
    config = VAEConfig(
        arch="mlp",
        image_size=x.shape[-1],
        channels=x.shape[1],
        latent_dim=latent_dim,
        hidden=hidden,
        num_classes=num_classes,
    )
    model = VAE(config)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    x, y = x.cpu(), y.cpu()
    for _ in range(steps):
        loss, _ = model.loss((x, y))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


# one classifier


def train_few_shot_classifier(
    x: Tensor,
    y: Tensor,
    *,
    synthetic: tuple[Tensor, Tensor] | None = None,
    synthetic_fraction: float = 0.5,
    augment: Callable[..., Tensor] | None = None,
    steps: int = 300,
    batch_size: int = 32,
    lr: float = 1e-3,
    config: ClassifierConfig | None = None,
    seed: int = 0,
) -> DigitClassifier:
    """Train a :class:`~genai_course.models.classifier.DigitClassifier` on few labelled images.

    Every step draws a batch of ``batch_size`` images with replacement: ``round(
    synthetic_fraction * batch_size)`` of them from the ``synthetic`` pool (if given), the rest
    from the real ``(x, y)`` (``synthetic_fraction=1`` trains on generated images alone, the
    "classification accuracy score" of the generator); ``augment(batch, generator=g)`` (e.g.
    :func:`random_affine`), if given, then distorts the whole batch, real and synthetic images
    alike. Adam minimises the cross-entropy for a fixed number of ``steps``: there is no
    validation set to stop early on when labels are this scarce.

    The seed fixes the initial weights and three random streams, each with its own generator:
    the real indices, the synthetic indices and the augmentation's parameters. Each step draws
    ``batch_size`` real indices and keeps the first ``batch_size - round(synthetic_fraction *
    batch_size)``, so two calls that differ only in ``synthetic``, ``synthetic_fraction`` or
    ``augment`` start from the same network and see the same real images in the same order (a
    mixed batch holds a prefix of the real-only batch), and two calls with the same ``augment``
    draw the same distortions: a paired design. (Dropout draws from torch's global generator,
    seeded with ``seed``; every batch has ``batch_size`` images, so its masks match too.)

    Args:
        x: (N, 1, 28, 28) real images in [0, 1]; y: (N,) int64 labels.
        synthetic: ``(x_syn, y_syn)`` of the same image shape, or ``None``.
        synthetic_fraction: share of each batch taken from ``synthetic``, in [0, 1].
        config: the classifier's architecture (default :data:`FEW_SHOT_CLASSIFIER`).

    Returns:
        The trained classifier in eval mode, on ``x``'s device.
    """
    _check_labelled(x, y)
    check_image_batch(x, (1, 28, 28))
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
    if not 0 <= synthetic_fraction <= 1:
        raise ValueError(f"synthetic_fraction must be in [0, 1], got {synthetic_fraction!r}")
    n_syn = 0
    if synthetic is not None:
        xs, ys = synthetic
        _check_labelled(xs, ys, "synthetic")
        if xs.shape[1:] != x.shape[1:]:
            raise ValueError(
                f"synthetic images have shape {tuple(xs.shape[1:])}, the real ones "
                f"{tuple(x.shape[1:])}"
            )
        xs, ys = xs.to(x.device), ys.to(x.device)
        n_syn = round(synthetic_fraction * batch_size)
    torch.manual_seed(seed)
    model = DigitClassifier(config or FEW_SHOT_CLASSIFIER).to(x.device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    # One generator per stream: with a shared one, the draws of one stream would shift those
    # of the others, and conditions would part ways from the second step on.
    g_real, g_syn, g_aug = (_stream_generator(seed, k) for k in range(3))
    for _ in range(steps):
        i = torch.randint(len(x), (batch_size,), generator=g_real)[: batch_size - n_syn]
        i = i.to(x.device)
        xb, yb = x[i], y[i]
        if n_syn:
            j = torch.randint(len(xs), (n_syn,), generator=g_syn).to(x.device)
            xb, yb = torch.cat([xb, xs[j]]), torch.cat([yb, ys[j]])
        if augment is not None:
            xb = augment(xb, generator=g_aug)
        loss, _ = model.loss((xb, yb))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


# the experiment


@dataclass
class Condition:
    """What one arm of the experiment adds to the few real images.

    ``synthetic`` is a fixed pool ``(x, y)`` shared by all seeds, or a function ``(x_few, y_few,
    seed) -> (x, y)`` called once per seed (a generator fitted to that seed's split), or
    ``None``. ``augment`` is a batch transform called as ``augment(x, generator=g)``.
    """

    synthetic: Synthetic = None
    synthetic_fraction: float = 0.5
    augment: Callable[..., Tensor] | None = None


@dataclass
class PairedDifference:
    """Accuracy of one condition minus a baseline's, seed by seed (the same split each time)."""

    condition: str
    baseline: str
    differences: np.ndarray  # (seeds,) in accuracy points (fractions)

    @property
    def mean(self) -> float:
        return float(self.differences.mean())

    @property
    def se(self) -> float:
        """Standard error of the mean difference (paired: between-split variation cancels)."""
        return standard_error(self.differences)

    @property
    def wins(self) -> int:
        """Seeds on which the condition beat the baseline."""
        return int((self.differences > 0).sum())

    def verdict(self, z: float = 2.0) -> str:
        """``"helps"`` if the mean difference is above ``z`` standard errors, ``"hurts"`` if
        below minus that, else ``"no clear difference"`` (also with fewer than two seeds)."""
        if not math.isfinite(self.se):
            return "no clear difference"
        if self.mean > z * self.se:
            return "helps"
        if self.mean < -z * self.se:
            return "hurts"
        return "no clear difference"


@dataclass
class AugmentationResults:
    """Test accuracies of every condition on every seed, and the settings that produced them."""

    per_class: int
    seeds: list[int]
    accuracy: dict[str, np.ndarray]  # condition -> (seeds,) test accuracies
    seconds: dict[str, float] = field(default_factory=dict)  # condition -> total training time

    def mean(self, condition: str) -> float:
        return float(self.accuracy[condition].mean())

    def se(self, condition: str) -> float:
        """Standard error over seeds (splits): how much the mean would move with other splits."""
        return standard_error(self.accuracy[condition])

    def paired(self, condition: str, baseline: str = "real only") -> PairedDifference:
        """Seed-by-seed difference ``condition - baseline``."""
        for name in (condition, baseline):
            if name not in self.accuracy:
                raise KeyError(f"unknown condition {name!r}; known: {', '.join(self.accuracy)}")
        return PairedDifference(
            condition, baseline, self.accuracy[condition] - self.accuracy[baseline]
        )

    def table(self, baseline: str | None = "real only") -> list[dict[str, Any]]:
        """One row per condition: mean and standard error of the accuracy and, if ``baseline``
        is a condition, the paired difference to it with its standard error and wins."""
        rows = []
        for name, acc in self.accuracy.items():
            row: dict[str, Any] = {"condition": name, "mean": self.mean(name), "se": self.se(name)}
            if baseline in self.accuracy and name != baseline:
                d = self.paired(name, baseline)
                row.update(diff=d.mean, diff_se=d.se, wins=d.wins)
            row["accuracies"] = acc.tolist()
            rows.append(row)
        return rows


def augmentation_experiment(
    x_train: Tensor,
    y_train: Tensor,
    x_test: Tensor,
    y_test: Tensor,
    conditions: Mapping[str, Condition],
    *,
    per_class: int,
    seeds: Sequence[int],
    **train_kwargs: Any,
) -> AugmentationResults:
    """Train one classifier per (seed, condition) and score it on ``(x_test, y_test)``.

    Seed ``s`` draws the split ``few_shot_split(x_train, y_train, per_class, s)``; every
    condition then trains with ``seed=s`` on that split, so conditions are compared on the
    same images, from the same initial weights, with the same batch order (see
    :func:`train_few_shot_classifier`). A synthetic factory
    (see :class:`Condition`) is called once per seed, even if several conditions share it.

    Args:
        x_train, y_train: the labelled pool to draw the few-shot splits from.
        x_test, y_test: held-out images and labels the accuracies are measured on.
        conditions: name -> :class:`Condition`; name them as they should be reported.
        per_class: k labelled images per class.
        seeds: one split (and one classifier per condition) per seed.
        train_kwargs: passed to :func:`train_few_shot_classifier` (``steps``, ``lr``, ...).

    Returns:
        :class:`AugmentationResults` with an accuracy array (len(seeds),) per condition.
    """
    _check_labelled(x_test, y_test, "x_test")
    if not conditions:
        raise ValueError("conditions must name at least one Condition")
    if len(seeds) < 1:
        raise ValueError("seeds must hold at least one seed")
    for name, cond in conditions.items():
        if not isinstance(cond, Condition):
            raise TypeError(f"condition {name!r} is a {type(cond).__name__}, expected a Condition")
    accuracy = {name: np.zeros(len(seeds)) for name in conditions}
    seconds = dict.fromkeys(conditions, 0.0)
    for i, seed in enumerate(seeds):
        x_few, y_few = few_shot_split(x_train, y_train, per_class, seed)
        made: dict[int, tuple[Tensor, Tensor]] = {}  # id(factory) -> its pool for this split
        for name, cond in conditions.items():
            start = time.perf_counter()
            pool = cond.synthetic
            if callable(pool):
                if id(pool) not in made:
                    made[id(pool)] = pool(x_few, y_few, seed)
                pool = made[id(pool)]
            model = train_few_shot_classifier(
                x_few,
                y_few,
                synthetic=pool,
                synthetic_fraction=cond.synthetic_fraction,
                augment=cond.augment,
                seed=seed,
                **train_kwargs,
            )
            accuracy[name][i] = model.accuracy(x_test, y_test)
            seconds[name] += time.perf_counter() - start
    return AugmentationResults(per_class, list(seeds), accuracy, seconds)
