"""Every shipped digit generator behind one interface, and one table that evaluates them all
(chapter 16, and a source of samples for any chapter that needs generated digits).

The course ships eight digit generators, trained in chapters 03-13. Each samples in its
own way (a latent draw and a decoder, a code prior and a decoder, a generator network, a
denoising chain); :func:`sample_digits` hides the differences::

    images = sample_digits("gan-cgan-mnist", 100, seed=0)  # (100, 1, 28, 28) in [0, 1]

Conditional models get balanced labels 0, 1, ..., 9, 0, 1, ... unless told otherwise
(:func:`balanced_labels`). :func:`heldout_nll` gives the held-out negative log-likelihood of
the models that have one, and :func:`evaluation_table` scores every generator against the same
held-out test digits with the sample metrics of :mod:`genai_course.metrics`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from . import metrics as M
from .captions import prompt
from .data import load_mnist

# the figures each recipe records in the manifest live in their own module (re-exported)
from .evaluation import (
    conditional_sample_accuracy,
    diffusion_sample_metrics,
    folk_tune_metrics,
    gan_sample_metrics,
    heldout_reference,
    robustness_metrics,
    text_diffusion_metrics,
)
from .models.vqvae import VQVAEGenerator

__all__ = [
    "ALIASES",
    "DIGIT_GENERATORS",
    "TABLE_GENERATORS",
    "POINT_GENERATORS",
    "TEXT_GENERATORS",
    "DigitGenerator",
    "Evaluation",
    "EvaluationReference",
    "GeneratorSpec",
    "balanced_labels",
    "conditional_sample_accuracy",
    "diffusion_sample_metrics",
    "evaluate_images",
    "evaluation_reference",
    "evaluation_table",
    "folk_tune_metrics",
    "gan_sample_metrics",
    "heldout_nll",
    "heldout_reference",
    "load_generator",
    "robustness_metrics",
    "sample_digits",
    "sample_points",
    "sample_text",
    "sampleable",
    "stratified_training_digits",
    "table_markdown",
    "text_diffusion_metrics",
]

NUM_CLASSES = 10
CODES_PER_IMAGE = 49  # the VQ-VAE's 7x7 code grid
PIXELS = 28 * 28


# the registry


@dataclass(frozen=True)
class GeneratorSpec:
    """What one shipped digit generator is and how it is drawn.

    Attributes:
        name: the key in :data:`DIGIT_GENERATORS`.
        kind: its family, for tables and messages: ``vae``, ``vqvae``, ``gan``, ``diffusion``
            or ``text-diffusion`` (sampling never switches on it: every model has ``sample``).
        checkpoints: the :func:`~genai_course.pretrained.load_pretrained` names it needs.
        description: one line for tables.
        chapter: the chapter that trains it.
        conditional: whether it takes a digit label (or a prompt written from one).
        likelihood: ``"pixels"`` (a bound on :math:`\\log p(x)` of the 784 pixels),
            ``"codes"`` (of the VQ-VAE's codes, not of the pixels) or ``None``.
        guidance: the classifier-free guidance scale of a diffusion model (``None``: one
            conditional pass, :math:`w = 1`).
        options: the sampling options its ``sample`` takes besides ``labels`` and
            ``generator`` (``steps`` and ``guidance`` for the diffusion models).
        assemble: builds the one module that samples from the loaded checkpoints, when there
            are several (the VQ-VAE and its code prior); ``None``: the single checkpoint.
        prompt: for a text-conditioned model, the prompt it is given for a digit label.
    """

    name: str
    kind: str
    checkpoints: tuple[str, ...]
    description: str
    chapter: str
    conditional: bool
    likelihood: str | None = None
    guidance: float | None = None
    options: tuple[str, ...] = ()
    assemble: Callable[..., nn.Module] | None = None
    prompt: Callable[[int], str] | None = None


_DIFFUSION = ("steps", "guidance", "sampler")

_SPECS = (
    GeneratorSpec(
        "vae-mnist", "vae", ("vae-mnist",), "VAE, conv, Bernoulli decoder", "03",
        conditional=False, likelihood="pixels",
    ),
    GeneratorSpec(
        "vae-binary-mnist", "vae", ("vae-binary-mnist",),
        "VAE on binarised digits (MLP; its likelihood: chapter 03)", "03", conditional=False,
    ),
    GeneratorSpec(
        "cvae-mnist", "vae", ("cvae-mnist",), "class-conditional VAE, 3-d latent", "04",
        conditional=True, likelihood="pixels",
    ),
    GeneratorSpec(
        "vqvae-mnist", "vqvae", ("vqvae-mnist", "vqvae-prior"),
        "VQ-VAE + autoregressive code prior", "05", conditional=False, likelihood="codes",
        options=("temperature", "top_k"), assemble=VQVAEGenerator,
    ),
    GeneratorSpec(
        "gan-dcgan-mnist", "gan", ("gan-dcgan-mnist",), "DCGAN, non-saturating loss", "06",
        conditional=False,
    ),
    GeneratorSpec(
        "gan-wgan-gp-mnist", "gan", ("gan-wgan-gp-mnist",), "WGAN-GP", "07", conditional=False
    ),
    GeneratorSpec(
        "gan-cgan-mnist", "gan", ("gan-cgan-mnist",), "conditional DCGAN, projection D", "07",
        conditional=True,
    ),
    GeneratorSpec(
        "diffusion-mnist", "diffusion", ("diffusion-mnist",),
        "DDPM, class label, no guidance (DDIM)", "12", conditional=True, options=_DIFFUSION,
    ),
    GeneratorSpec(
        "diffusion-mnist-uncond", "diffusion", ("diffusion-mnist",),
        "the same DDPM with the 'no label' index (DDIM)", "12", conditional=False,
        options=_DIFFUSION,
    ),
    GeneratorSpec(
        "diffusion-text-mnist", "text-diffusion", ("diffusion-text-mnist",),
        "text-to-image DDPM, prompt 'a seven' etc. (DDIM)", "13", conditional=True,
        options=_DIFFUSION, prompt=prompt,
    ),
)  # fmt: skip
DIGIT_GENERATORS: dict[str, GeneratorSpec] = {s.name: s for s in _SPECS}
# chapter 16's table of generators of the grey digits: the binarised-digit VAE models other data
# (its samples are probabilities of black-or-white pixels), so it is scored in chapter 03 instead
TABLE_GENERATORS: tuple[str, ...] = tuple(n for n in DIGIT_GENERATORS if n != "vae-binary-mnist")
"""Name -> :class:`GeneratorSpec` of every shipped digit generator (``diffusion-mnist-uncond``
is the ``diffusion-mnist`` network given its "no label" index)."""


def _spec(name: str) -> GeneratorSpec:
    if name not in DIGIT_GENERATORS:
        raise ValueError(f"unknown digit generator {name!r}; known: {', '.join(DIGIT_GENERATORS)}")
    return DIGIT_GENERATORS[name]


@dataclass
class DigitGenerator:
    """A loaded digit generator: its :class:`GeneratorSpec`, its modules (in eval mode) and
    the one module that samples.

    ``modules`` is ``(model,)``, or ``(vqvae, prior)`` for the VQ-VAE; ``sampler`` has the
    course's sampling protocol, ``sample(n, *, labels=None, generator=None, **options)``.
    """

    spec: GeneratorSpec
    modules: tuple[nn.Module, ...]
    sampler: nn.Module | None = None

    def __post_init__(self) -> None:
        if self.sampler is None:
            build = self.spec.assemble
            self.sampler = build(*self.modules) if build is not None else self.modules[0]

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def conditional(self) -> bool:
        return self.spec.conditional

    @property
    def model(self) -> nn.Module:
        """The main module (the VQ-VAE itself for ``vqvae-mnist``)."""
        return self.modules[0]


def load_generator(name: str, device: str | torch.device = "cpu") -> DigitGenerator:
    """Load the shipped generator ``name`` (a key of :data:`DIGIT_GENERATORS`) onto ``device``."""
    from .pretrained import load_pretrained

    spec = _spec(name)
    return DigitGenerator(spec, tuple(load_pretrained(c, device=device) for c in spec.checkpoints))


def _wrap(model: nn.Module) -> DigitGenerator:
    """A :class:`DigitGenerator` around a bare VAE, GAN or diffusion model (e.g. one you
    trained), its family and conditioning read from its config."""
    from .models.diffusion import Diffusion
    from .models.gan import GAN
    from .models.vae import VAE

    options: tuple[str, ...] = ()
    text_prompt = None
    if isinstance(model, VAE):
        kind, conditional = "vae", bool(model.config.num_classes)
    elif isinstance(model, GAN):
        if not model.config.is_image:
            raise ValueError("this GAN generates vectors, not 28x28 images")
        kind, conditional = "gan", bool(model.config.num_classes)
    elif isinstance(model, Diffusion):
        text = hasattr(model.unet, "tokenize")
        kind = "text-diffusion" if text else "diffusion"
        conditional = text or bool(model.num_classes)
        options, text_prompt = _DIFFUSION, (prompt if text else None)
    else:
        raise ValueError(
            f"cannot sample digits from a {type(model).__name__}: pass a name of "
            f"DIGIT_GENERATORS ({', '.join(DIGIT_GENERATORS)}), a DigitGenerator, or a VAE, "
            "GAN or Diffusion model (a VQ-VAE needs its prior: load_generator('vqvae-mnist'))"
        )
    spec = GeneratorSpec(
        type(model).__name__, kind, (), "a model passed in", "", conditional,
        options=options, prompt=text_prompt,
    )  # fmt: skip
    return DigitGenerator(spec, (model,))


def _as_generator(generator: str | DigitGenerator | nn.Module) -> DigitGenerator:
    if isinstance(generator, str):
        return load_generator(generator)
    if isinstance(generator, DigitGenerator):
        return generator
    return _wrap(generator)


# sampling


def balanced_labels(n: int, num_classes: int = NUM_CLASSES) -> Tensor:
    """(n,) int64 labels 0, 1, ..., 9, 0, 1, ...: what conditional models get by default, so
    that any n has every class within one of n / 10."""
    return torch.arange(n) % num_classes


def _check_labels(labels: Tensor | None, n: int, gen: DigitGenerator) -> Tensor | None:
    if not gen.conditional:
        if labels is not None:
            raise ValueError(f"{gen.name} is unconditional: pass labels=None")
        return None
    if labels is None:
        return balanced_labels(n)
    if not isinstance(labels, Tensor) or labels.shape != (n,) or labels.is_floating_point():
        got = f"{labels.dtype} {tuple(labels.shape)}" if isinstance(labels, Tensor) else labels
        raise ValueError(f"labels must be an integer tensor of shape ({n},), got {got}")
    if n and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise ValueError(f"labels must lie in [0, {NUM_CLASSES}), got values outside")
    return labels.long().cpu()


@torch.no_grad()
def _draw(
    gen: DigitGenerator,
    n: int,
    labels: Tensor | None,
    prompts: list[str] | None,
    g: torch.Generator,
    options: dict,
) -> Tensor:
    """One batch of n images from ``gen`` (given labels, or prompts for a text model), random
    numbers from ``g``."""
    sampler = gen.sampler
    if prompts is not None:
        options = {**options, "prompts": prompts}
    device = next(sampler.parameters()).device
    y = None if labels is None else labels.to(device)
    return sampler.sample(n, labels=y, generator=g, **options)


def sample_digits(
    generator: str | DigitGenerator | nn.Module,
    n: int,
    *,
    labels: Tensor | None = None,
    seed: int = 0,
    steps: int = 50,
    guidance: float | None = None,
    prompt: str | None = None,
    batch_size: int = 500,
    **options: Any,
) -> Tensor:
    """n digits from a generator, as (n, 1, 28, 28) float32 CPU images in [0, 1].

    Args:
        generator: a name in :data:`DIGIT_GENERATORS` (loaded on every call: load once with
            :func:`load_generator` to draw repeatedly), a :class:`DigitGenerator`, or a bare
            VAE, GAN or Diffusion model.
        n: number of images, >= 1.
        labels: for a conditional model, (n,) integer labels in 0..9, or ``None`` for
            :func:`balanced_labels`; an unconditional model takes none. The text-to-image
            model is prompted with "a zero", "a one", ... for these labels.
        seed: every random number comes from ``torch.Generator().manual_seed(seed)``, so the
            same seed, n and batch_size give the same images.
        steps: DDIM steps of a diffusion model (ignored by the others); the shipped metrics use
            50, fewer are faster and somewhat worse.
        guidance: classifier-free guidance scale of a diffusion model; ``None`` for the
            registry's choice (one conditional pass, :math:`w = 1`).
        prompt: for the text-to-image model, one prompt for every image (e.g. "a thick
            seven") instead of the prompts written from ``labels``.
        batch_size: images drawn at once (memory).
        options: further sampling options the model takes (its spec's ``options``), e.g.
            ``sampler="ddpm"`` for a diffusion model or ``temperature`` for the VQ-VAE's prior.

    Raises:
        ValueError: an unknown name (the message lists the known ones), labels for an
            unconditional model, labels of the wrong shape or range, or an option the model
            does not take (the message lists those it does).
    """
    gen = _as_generator(generator)
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = int(n)
    if prompt is not None:
        if gen.spec.prompt is None:
            raise ValueError(f"{gen.name} is not text-conditioned: it takes no prompt")
        if labels is not None:
            raise ValueError("pass a prompt or labels, not both")
        labels, prompts = None, [prompt] * n
    else:
        labels, prompts = _check_labels(labels, n, gen), None
        if gen.spec.prompt is not None and labels is not None:  # a text model asked for digits
            labels, prompts = None, [gen.spec.prompt(int(k)) for k in labels]
    takes = gen.spec.options
    if "guidance" in takes:
        options["guidance"] = gen.spec.guidance if guidance is None else guidance
    elif guidance is not None:
        raise ValueError(f"guidance applies to diffusion models only, not to {gen.name}")
    if "steps" in takes:
        options["steps"] = steps
    unknown = sorted(set(options) - set(takes))
    if unknown:
        raise ValueError(
            f"{gen.name} takes no sampling option(s) {unknown}; it takes: {list(takes) or 'none'}"
        )
    g = torch.Generator().manual_seed(seed)
    chunks = []
    for start in range(0, n, batch_size):
        size = min(batch_size, n - start)
        y = None if labels is None else labels[start : start + size]
        p = None if prompts is None else prompts[start : start + size]
        chunks.append(_draw(gen, size, y, p, g, options).float().cpu())
    return torch.cat(chunks).clamp(0, 1)


# every other shipped generator: points, text, tunes

POINT_GENERATORS = ("gmm-ring",)
TEXT_GENERATORS = ("gpt-pydocs", "gpt-folk")
ALIASES = {"vqvae-prior": "vqvae-mnist"}  # the prior alone draws codes; with its VQ-VAE, digits
DEFAULT_PROMPTS = {"gpt-pydocs": "The "}  # gpt-folk with no prompt writes whole tunes


def sampleable() -> dict[str, str]:
    """Every name :func:`sample` takes -> what it draws: ``"digits"``, ``"points"``,
    ``"text"`` or ``"tunes"``."""
    out = {name: "digits" for name in (*DIGIT_GENERATORS, *ALIASES)}
    out.update({name: "points" for name in POINT_GENERATORS})
    out.update({"gpt-pydocs": "text", "gpt-folk": "tunes"})
    return out


def sample_points(name: str, n: int, *, seed: int = 0) -> Tensor:
    """(n, 2) points from a shipped 2-D density (``gmm-ring``), random numbers from
    ``torch.Generator().manual_seed(seed)``."""
    from .pretrained import load_pretrained

    if name not in POINT_GENERATORS:
        raise ValueError(f"unknown point generator {name!r}; known: {', '.join(POINT_GENERATORS)}")
    return load_pretrained(name).sample(n, generator=torch.Generator().manual_seed(seed))


def sample_text(
    name: str,
    n: int = 1,
    *,
    prompt: str | None = None,
    seed: int = 0,
    max_new: int = 300,
    **sampling: Any,
) -> list[str]:
    """``n`` continuations of ``prompt`` from a shipped character-level GPT, each the prompt
    and ``max_new`` new characters.

    ``gpt-folk`` with no prompt returns whole tunes instead
    (:func:`~genai_course.music.generate_tunes`: each cut at the end of its first tune).
    ``sampling`` goes to :meth:`~genai_course.models.gpt.GPT.generate` (``temperature``,
    ``top_k``, ``top_p``, ``greedy``).

    Raises:
        ValueError: an unknown name, or a prompt with a character outside the model's
            vocabulary (the message names it).
    """
    from . import music
    from .pretrained import load_pretrained

    if name not in TEXT_GENERATORS:
        raise ValueError(f"unknown text generator {name!r}; known: {', '.join(TEXT_GENERATORS)}")
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    model = load_pretrained(name)
    g = torch.Generator().manual_seed(seed)
    if name == "gpt-folk" and prompt is None:
        return music.generate_tunes(model, int(n), max_chars=max_new, generator=g, **sampling)
    text = DEFAULT_PROMPTS[name] if prompt is None else prompt
    ids = model.tokenizer.encode(text)[None].expand(int(n), -1)  # names an unknown character
    out = model.generate(ids, max_new=max_new, generator=g, **sampling)
    return [model.tokenizer.decode(row) for row in out]


# likelihoods


def heldout_nll(
    generator: str | DigitGenerator,
    *,
    k: int = 1000,
    seed: int = 0,
    images: Tensor | None = None,
    labels: Tensor | None = None,
) -> dict[str, Any]:
    """Held-out negative log-likelihood of a generator that has one, in nats per image.

    - ``vae-mnist``: the IWAE estimate :math:`-\\mathcal L_k(x)` with k importance samples
      (:func:`~genai_course.models.vae.iwae_nll`), an upper bound on :math:`-\\log p(x)` that
      tightens as k grows.
    - ``cvae-mnist``: the *marginal* likelihood :math:`p(x) = \\frac1{10}\\sum_y p(x \\mid y)`,
      each term bounded with k importance samples, so the label is not given away and the
      number compares with the VAE's: :math:`-\\log \\frac1{10}\\sum_y e^{\\mathcal L_k(x \\mid
      y)}`, again an upper bound on :math:`-\\log p(x)`. (The label-given
      :math:`-\\log p(x \\mid y)` is also returned.)
    - ``vqvae-mnist``: the prior's cross-entropy over the 49 codes of each test digit's code
      grid, in nats per image (``bits_per_code`` too). It is a likelihood of the *codes*; the
      decoder is deterministic, so it is no likelihood of the pixels, and is not comparable.

    Both VAEs have Bernoulli decoders evaluated on grey pixels in [0, 1]: their NLL is a
    cross-entropy with a floor at the pixels' binary entropy (``vae.bernoulli_nll_floor``, about
    46 nats per test digit), not the likelihood of 8-bit pixels; the figures VAE papers report
    are on binarised digits, so it compares only with other Bernoulli-decoder models on the same
    grey pixels. What depends on the model is the part above the floor,
    ``nll_above_floor_nats`` = cross-entropy minus floor :math:`= \\frac1N \\sum_n \\sum_p
    \\mathrm{KL}\\big(\\mathrm{Bern}(x_{np}) \\,\\|\\, \\mathrm{Bern}(\\pi_{np})\\big)` for a decoder
    with pixel probabilities :math:`\\pi`: an excess over the best any Bernoulli decoder can do
    on these fixed grey targets, 0 only for :math:`\\pi = x`. For a VAE, whose :math:`\\pi`
    depends on z, the exact excess is :math:`-\\log \\mathbb E_{p(z)} \\exp(-\\sum_p
    \\mathrm{KL}_p)`, still >= 0, and the IWAE bound lies above it. GANs have no
    likelihood; diffusion models have a variational bound that needs a discrete decoder and
    ~1,000 network passes per image, which this function does not compute.

    Args:
        generator: a name or :class:`DigitGenerator` of a model with a likelihood.
        k: importance samples per image (per image and label for the cVAE).
        seed: seed of the importance samples.
        images, labels: the data, default the 500 test digits and their labels.

    Returns:
        ``{"nll_nats", "bits_per_dim" (None for codes), "n", "k", "unit", "comparable",
        "note"}`` plus ``"bits_per_code"`` (VQ-VAE), or for both VAEs ``"floor_nats"`` (the
        mean ``bernoulli_nll_floor`` of the images) and ``"nll_above_floor_nats"`` (``nll_nats``
        minus it), and for the cVAE also ``"nll_given_label_nats"``
        (:math:`-\\log p(x \\mid y)` at the true label) and ``"label_accuracy"`` (the share of
        digits whose bound is highest at their own label).  The marginal minus the
        label-given NLL is the mean of :math:`\\log(10\\,p(y \\mid x))` under the model's Bayes
        posterior: at most :math:`\\log 10`, 0 for a decoder that ignores the label, and at
        most 0 on average for a posterior unrelated to the label (Jensen's inequality).
    """
    from .models.vae import bernoulli_nll_floor, iwae_bound

    gen = _as_generator(generator)
    if gen.spec.likelihood is None:
        why = (
            "a GAN defines no density"
            if gen.spec.kind == "gan"  # the family, for the message only
            else "its variational bound is not computed here"
        )
        raise ValueError(f"{gen.name} has no likelihood to report: {why}")
    if images is None:
        images, labels = load_mnist("test")
    n = len(images)
    if gen.spec.likelihood == "codes":
        vqvae, prior = gen.modules
        with torch.no_grad():
            codes = vqvae.encode(images.to(next(vqvae.parameters()).device))
            per_code = prior.loss(codes).item()
        return {
            "nll_nats": per_code * CODES_PER_IMAGE,
            "bits_per_dim": None,
            "bits_per_code": per_code / math.log(2),
            "n": n,
            "k": None,
            "unit": "nats per image over its 49 codes",
            "comparable": False,
            "note": "likelihood of the VQ codes, not of the pixels",
        }
    g = torch.Generator().manual_seed(seed)
    model = gen.model
    if not gen.conditional:
        nll = -iwae_bound(model, images, k, generator=g).double()  # (N,)
        extra: dict[str, Any] = {}
        note = f"IWAE bound, k = {k}"
    else:
        if labels is None:
            raise ValueError("the conditional VAE's marginal needs the test labels")
        bounds = torch.stack(
            [iwae_bound(model, images, k, y=torch.full((n,), c), generator=g) for c in range(10)],
            1,
        ).double()  # (N, 10): L_k(x | y) for every label
        nll = -(torch.logsumexp(bounds, 1) - math.log(NUM_CLASSES))
        own = bounds[torch.arange(n), labels.cpu()]  # (N,) L_k(x | y) at each digit's label
        extra = {
            "nll_given_label_nats": -own.mean().item(),
            # the cVAE as a classifier by Bayes' rule (uniform labels): argmax_y p(x | y)
            "label_accuracy": (bounds.argmax(1) == labels.cpu()).double().mean().item(),
        }
        note = f"IWAE bound of p(x) = mean over the 10 labels of p(x|y), k = {k} per label"
    mean = nll.mean().item()
    floor = bernoulli_nll_floor(images).double().mean().item()
    return {
        "nll_nats": mean,
        "floor_nats": floor,
        "nll_above_floor_nats": mean - floor,
        "bits_per_dim": M.bits_per_dim(mean, PIXELS),
        "n": n,
        "k": k,
        "unit": "nats per image (Bernoulli cross-entropy of 784 grey pixels)",
        "comparable": True,
        "note": note,
        **extra,
    }


# the evaluation table


@dataclass
class EvaluationReference:
    """What every row of an evaluation table is compared against (built once).

    Attributes:
        n: the sample count of every row.
        space: the feature space of FID, KID, precision and recall.
        heldout: (n, 1, 28, 28) held-out test digits, the reference of every sample metric.
        heldout_features: (n, D) their features.
        train: all training digits, for the nearest-neighbour distances.
        heldout_nn: (n,) distance of each held-out digit to its nearest training digit.
        floor: the metrics of n *validation* digits against the held-out ones (new real
            digits that neither the feature network nor any generator was trained on: what a
            perfect generator scores at this n): ``fid``, ``kid``, ``precision``, ``recall``.
        floor_images: those n validation digits.
    """

    n: int
    space: M.FeatureSpace
    heldout: Tensor
    heldout_features: Tensor
    train: Tensor
    heldout_nn: Tensor
    floor: dict[str, float]
    floor_images: Tensor = field(repr=False)


def evaluation_reference(
    n: int = 500, seed: int = 0, space: M.FeatureSpace | None = None
) -> EvaluationReference:
    """n held-out test digits and the real-vs-real floor at n: n validation digits against
    them (the draw of :func:`~genai_course.metrics.real_pair`, the reference of every figure
    of the course; for n = 500 all the test digits and all the validation digits)."""
    space = M.FeatureSpace() if space is None else space
    floor_images, heldout = M.real_pair(n, seed)
    f_ref, f_floor = space.features(heldout), space.features(floor_images)
    train, _ = load_mnist("train")
    floor = M.floor_from_features(f_ref, f_floor, seed) | M.precision_recall(f_ref, f_floor)
    return EvaluationReference(
        n=n,
        space=space,
        heldout=heldout,
        heldout_features=f_ref,
        train=train,
        heldout_nn=M.nearest_neighbour_distance(heldout, train),
        floor=floor,
        floor_images=floor_images,
    )


def evaluate_images(
    images: Tensor, reference: EvaluationReference, labels: Tensor | None = None
) -> dict[str, float]:
    """The sample metrics of n images against the reference's n held-out digits.

    Returns ``n``, ``fid``, ``fid_floor``, ``fid_ratio`` (FID over the floor), ``kid``,
    ``kid_floor``, ``precision``, ``recall``, ``class_kl`` (KL of the classifier's class
    histogram to uniform, nats), ``accuracy`` (with ``labels``: the share the classifier
    reads as the label asked for; else NaN) and the :func:`~genai_course.metrics.memorisation`
    statistics of the pixel distances to the training digits.
    """
    if len(images) != reference.n:
        raise ValueError(f"the reference holds n = {reference.n} digits, got {len(images)} images")
    f = reference.space.features(images)
    fid = M.fid_from_features(reference.heldout_features, f)
    row = {
        "n": reference.n,
        "fid": fid,
        "fid_floor": reference.floor["fid"],
        "fid_ratio": fid / reference.floor["fid"],
        "kid": M.kid_from_features(reference.heldout_features, f)[0],
        "kid_floor": reference.floor["kid"],
        **M.precision_recall(reference.heldout_features, f),
        "class_kl": M.class_histogram_kl(M.class_histogram(images)),
        "accuracy": math.nan if labels is None else M.conditional_accuracy(images, labels),
    }
    distances = M.nearest_neighbour_distance(images, reference.train)
    return {**row, **M.memorisation(distances, reference.heldout_nn)}


@dataclass
class Evaluation:
    """The result of :func:`evaluation_table`: ``rows`` (one dict per generator, reference rows
    first), ``samples`` (name -> the (n, 1, 28, 28) images scored) and the ``reference``."""

    rows: list[dict[str, Any]]
    samples: dict[str, Tensor]
    reference: EvaluationReference

    def row(self, name: str) -> dict[str, Any]:
        """The row of ``name``."""
        for r in self.rows:
            if r["model"] == name:
                return r
        raise KeyError(f"no row {name!r}; rows: {[r['model'] for r in self.rows]}")


def stratified_training_digits(n: int, seed: int = 0) -> Tensor:
    """(n, 1, 28, 28) training digits drawn at random with ``seed``, as many of each class as
    :func:`balanced_labels` gives (50 of each for n = 500), like the floor's validation digits.

    Class counts move FID: in the digit classifier's features most of the variance lies between
    classes, so a set with random class counts sits farther from the stratified test digits
    than a stratified one does (chapter 16 measures it)."""
    x, y = load_mnist("train")
    counts = torch.bincount(balanced_labels(n), minlength=NUM_CLASSES)
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c in range(NUM_CLASSES):
        of_class = torch.nonzero(y == c).flatten()
        picks.append(of_class[torch.randperm(len(of_class), generator=g)[: int(counts[c])]])
    return x[torch.cat(picks)]


def evaluation_table(
    names: list[str] | tuple[str, ...] | None = None,
    n: int = 500,
    *,
    seed: int = 0,
    steps: int = 50,
    nll_k: int | None = 100,
    likelihoods: dict[str, dict[str, Any]] | None = None,
    real_rows: bool = True,
    space: M.FeatureSpace | None = None,
    device: str | torch.device = "cpu",
) -> Evaluation:
    """Score every generator in ``names`` (default: :data:`TABLE_GENERATORS`) with n
    samples against the same n held-out test digits.

    Each row has ``model``, ``chapter``, ``conditional``, the metrics of
    :func:`evaluate_images`, ``nll_above_floor_nats`` (from :func:`heldout_nll` with ``nll_k``
    importance samples, for the Bernoulli-decoder VAEs: their cross-entropy of the grey test
    digits minus its floor, nats per digit; NaN otherwise or when ``nll_k`` is None;
    ``likelihoods`` maps names to :func:`heldout_nll` results already computed, which are used
    instead), ``nll_bits_per_dim`` (bits per dimension of the 8-bit test digits,
    :func:`~genai_course.metrics.bits_per_dim_dequantised`'s convention, for models with a
    density of the pixels: NaN for every generator listed so far, since a Bernoulli
    cross-entropy of grey levels is no probability of bytes), ``nll_note`` and ``seconds`` (the time to draw the n samples). Conditional models
    are drawn with :func:`balanced_labels`, diffusion models with ``steps`` DDIM steps.

    With ``real_rows``, two rows of real digits come first: ``real: val digits`` (the n
    validation digits of the floor: new data, as a perfect generator would draw; its
    ``fid_ratio`` is 1 by construction) and ``real: train digits`` (n training digits drawn
    with ``seed``, as many of each class as :func:`balanced_labels` gives, so that its class
    counts match the floor's: a perfect copier of the training set, whose features the feature
    network was fitted to). The generators run on ``device``; the metrics on the CPU.
    """
    names = list(TABLE_GENERATORS) if names is None else list(names)
    for name in names:
        _spec(name)
    reference = evaluation_reference(n, seed, space)
    rows: list[dict[str, Any]] = []
    samples: dict[str, Tensor] = {}
    if real_rows:
        for name, images, what in (
            ("real: val digits", reference.floor_images, "validation digits (the floor)"),
            ("real: train digits", stratified_training_digits(n, seed), "training digits (a copier)"),
        ):
            samples[name] = images
            rows.append(
                {"model": name, "description": what, "chapter": "", "conditional": False}
                | evaluate_images(images, reference)
                | {"nll_above_floor_nats": math.nan, "nll_bits_per_dim": math.nan}
                | {"nll_note": "", "seconds": math.nan}
            )
    for name in names:
        gen = load_generator(name, device)
        labels = balanced_labels(n) if gen.conditional else None
        start = time.perf_counter()
        images = sample_digits(gen, n, labels=labels, seed=seed, steps=steps)
        seconds = time.perf_counter() - start
        samples[name] = images
        nll, excess = math.nan, math.nan
        note = "not computed" if gen.spec.likelihood else "no likelihood"
        result = (likelihoods or {}).get(name)
        if result is None and gen.spec.likelihood is not None and nll_k is not None:
            result = heldout_nll(gen, k=nll_k, seed=seed)
        if result is not None:
            note = result["note"]
            if result["comparable"]:
                excess = result["nll_above_floor_nats"]
            else:
                note = f"{result['bits_per_code']:.2f} bits per code ({note})"
        rows.append(
            {
                "model": name,
                "description": gen.spec.description,
                "chapter": gen.spec.chapter,
                "conditional": gen.conditional,
            }
            | evaluate_images(images, reference, labels)
            | {"nll_above_floor_nats": excess, "nll_bits_per_dim": nll}
            | {"nll_note": note, "seconds": seconds}
        )
    return Evaluation(rows, samples, reference)


def table_markdown(
    rows: list[dict[str, Any]], columns: list[str] | None = None, digits: int = 3
) -> str:
    """A markdown table of ``rows`` (dicts), ``columns`` in order (default: all keys of the
    first row); floats with ``digits`` significant digits, NaN as an empty cell."""
    if not rows:
        raise ValueError("no rows to format")
    columns = list(rows[0]) if columns is None else columns

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.{digits}g}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
