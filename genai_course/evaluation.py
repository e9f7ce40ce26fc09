"""The held-out figures every recipe records in the manifest, one function per model family.

``genai-course train`` calls these after training; the chapters call them on their own runs
so that a notebook's figure and the shipped checkpoint's are measured the same way.  Image
metrics live in :mod:`genai_course.metrics`; this module draws the samples and the held-out
reference and puts the figures together.  Every figure is read against the one reference of
the course, :func:`genai_course.metrics.real_pair`: held-out test digits, and as many
validation digits for the real-vs-real floor (digits no generator was trained on and no
network's weights were fitted to).  (:func:`genai_course.generators.evaluation_table` is chapter 16's
side-by-side table of every generator on the same reference; its samples are drawn through
:func:`~genai_course.generators.sample_digits`, so its figures differ from these by the draw.)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from . import captions as C
from . import data
from . import metrics as M

__all__ = [
    "conditional_sample_accuracy",
    "diffusion_sample_metrics",
    "folk_tune_metrics",
    "gan_sample_metrics",
    "heldout_reference",
    "robustness_metrics",
    "text_diffusion_metrics",
]


def heldout_reference(
    n: int, seed: int
) -> tuple[M.FeatureSpace, Tensor, dict[str, float], torch.Generator]:
    """What the sample metrics compare against: the digit classifier's feature space, the
    (n, D) features of the ``n`` held-out test digits of :func:`~genai_course.metrics.real_pair`
    (for n = 500 all of them), the real-vs-real floor at ``n`` (those test digits against as
    many validation digits, :func:`~genai_course.metrics.real_vs_real_floor`), and a generator
    seeded with ``seed`` for the samples (its own stream, not the reference's draw)."""
    space = M.FeatureSpace()
    val, test = M.real_pair(n, seed)
    f_test = space.features(test)
    floor = M.floor_from_features(f_test, space.features(val), seed)
    return space, f_test, floor, torch.Generator().manual_seed(seed)


def robustness_metrics(
    model: Any, x: Tensor, y: Tensor, eps: tuple[float, ...] = (0.05, 0.1, 0.2), seed: int = 0
) -> dict[str, float]:
    """Clean accuracy and FGSM / PGD-10 / PGD-40 accuracy at each ``eps`` (pixels in [0, 1]),
    each over all of ``x`` (N, 1, 28, 28) with labels ``y`` (N,); PGD starts at a seeded
    random point of the ball."""
    from .adversarial import robust_accuracy

    out = {"clean_acc": robust_accuracy(model, x, y, 0.0)}
    for e in eps:
        out[f"fgsm_acc_{e:g}"] = robust_accuracy(model, x, y, e, attack_name="fgsm")
        for steps in (10, 40):
            g = torch.Generator().manual_seed(seed)
            out[f"pgd{steps}_acc_{e:g}"] = robust_accuracy(model, x, y, e, steps=steps, generator=g)
    return out


def conditional_sample_accuracy(model: Any, per_class: int = 100, seed: int = 0) -> float:
    """Fraction of a conditional VAE's samples of label y (z ~ N(0, I)) that the shipped digit
    classifier labels y, over ``per_class`` samples of each of the 10 classes
    (:func:`~genai_course.metrics.conditional_accuracy`)."""
    labels = torch.arange(10).repeat_interleave(per_class)
    images = model.sample(len(labels), labels=labels, generator=torch.Generator().manual_seed(seed))
    return M.conditional_accuracy(images.cpu(), labels)


def gan_sample_metrics(model: Any, n: int = 500, seed: int = 0) -> dict[str, Any]:
    """FID and KID of ``n`` samples against ``n`` held-out test digits, next to the
    real-vs-real floor at the same n, in the digit classifier's feature space; the class
    histogram's KL to uniform; for a conditional GAN, the accuracy of its class-conditional
    samples (labels cycling 0..9) as judged by the classifier."""
    space, f_real, floor, g = heldout_reference(n, seed)
    labels = torch.arange(n) % 10 if model.config.num_classes else None
    fake = model.sample(n, labels=labels, generator=g).cpu()
    f_fake = space.features(fake)
    fid = M.fid_from_features(f_real, f_fake)
    out = {
        "fid": fid,
        "fid_floor": floor["fid"],
        "fid_ratio": fid / floor["fid"],
        "kid": M.kid_from_features(f_real, f_fake)[0],
        "kid_floor": floor["kid"],
        "class_kl": M.class_histogram_kl(M.class_histogram(fake)),
        "samples": n,
    }
    if labels is not None:
        out["conditional_accuracy"] = M.conditional_accuracy(fake, labels)
    return out


def diffusion_sample_metrics(
    model: Any, n: int = 500, steps: int = 50, guidance: float = 2.0, seed: int = 0
) -> dict[str, Any]:
    """DDIM samples of ``model`` scored in the digit classifier's feature space against ``n``
    held-out test digits, next to the real-vs-real floor: the unconditional model (the "no
    label" index) and the guided conditional one (labels cycling 0..9, scale ``guidance``),
    whose accuracy the classifier judges."""
    space, f_real, floor, g = heldout_reference(n, seed)
    uncond = model.ddim_sample(n, steps=steps, generator=g).cpu()
    labels = torch.arange(n) % 10
    cond = model.ddim_sample(n, steps=steps, labels=labels, guidance=guidance, generator=g).cpu()
    fid_u = M.fid_from_features(f_real, space.features(uncond))
    fid_c = M.fid_from_features(f_real, space.features(cond))
    return {
        "fid_uncond": fid_u,
        "fid_uncond_ratio": fid_u / floor["fid"],
        "fid_guided": fid_c,
        "fid_guided_ratio": fid_c / floor["fid"],
        "fid_floor": floor["fid"],
        "class_kl_uncond": M.class_histogram_kl(M.class_histogram(uncond)),
        "conditional_accuracy": M.conditional_accuracy(cond, labels),
        "guidance": guidance,
        "ddim_steps": steps,
        "samples": n,
    }


def text_diffusion_metrics(
    model: Any, n_per_digit: int = 20, steps: int = 50, guidance: float = 3.0, seed: int = 0
) -> dict[str, Any]:
    """How well DDIM samples of a text-conditioned ``model`` follow their prompts.

    - ``digit_accuracy``: "a seven" and the like, ``n_per_digit`` per digit, classified as
      the requested digit by the digit classifier;
    - for thickness ("a thick seven" vs "a thin seven") and slant ("a slanted seven" vs "an
      upright seven"), ``n_per_digit`` of each per digit: the accuracy on all of them, the mean
      difference of the measured attribute within each digit (pixels, or columns per row),
      that difference over the real digits' within-class standard deviation (``*_effect``),
      and the probability that a sample of the "more" prompt measures more than one of the
      "less" prompt of the same digit (``*_auc``; 0.5: the words do nothing).  The real
      digits' gap between their top and bottom thirds is given for scale.
    """
    g = torch.Generator().manual_seed(seed)
    tok = model.unet.tokenize
    digits = torch.arange(10).repeat_interleave(n_per_digit)  # (10 n,)

    def draw(words: str | None, other: str | None = None) -> Tensor:
        prompts = [C.prompt(int(k), words, other) for k in digits]
        return model.ddim_sample(
            len(prompts), steps=steps, cond=tok(prompts), guidance=guidance, generator=g
        ).cpu()

    plain = draw(None)
    out: dict[str, Any] = {
        "digit_accuracy": M.conditional_accuracy(plain, digits),
        "guidance": guidance,
        "ddim_steps": steps,
        "samples_per_prompt": n_per_digit,
    }
    xt, yt = data.load_mnist("train")
    judged = []
    for attr, measure, more, less in (
        ("thickness", C.stroke_thickness, ("thick", None), ("thin", None)),
        ("slant", C.slant, (None, "slanted"), (None, "upright")),
    ):
        hi, lo = draw(*more), draw(*less)
        judged += [hi, lo]
        m_hi = measure(hi).double().view(10, n_per_digit)
        m_lo = measure(lo).double().view(10, n_per_digit)
        real = measure(xt).double()
        bins = C.attribute_bins(real, yt, C.class_tertiles(real, yt))
        std, top, bottom = (
            torch.stack([real[yt == k].std() for k in range(10)]),
            torch.stack([real[(yt == k) & (bins == 2)].mean() for k in range(10)]),
            torch.stack([real[(yt == k) & (bins == 0)].mean() for k in range(10)]),
        )  # (10,) each
        gap = m_hi.mean(1) - m_lo.mean(1)  # (10,)
        auc = (m_hi[:, :, None] > m_lo[:, None, :]).double().mean(dim=(1, 2))
        out[f"{attr}_gap"] = float(gap.mean())
        out[f"{attr}_effect"] = float((gap / std).mean())
        out[f"{attr}_auc"] = float(auc.mean())
        out[f"{attr}_digits_moved"] = int((gap > 0).sum())
        out[f"{attr}_real_gap"] = float((top - bottom).mean())
    both = torch.cat(judged)
    out["attribute_digit_accuracy"] = M.conditional_accuracy(both, digits.repeat(len(judged)))
    return out


def folk_tune_metrics(model: Any, n: int = 200, seed: int = 0, **sampling: Any) -> dict[str, Any]:
    """Generate ``n`` tunes (temperature 1 unless ``sampling`` says otherwise) and check them
    with :func:`~genai_course.music.check_tunes`: share that parse as ABC and that fit their
    metre."""
    from . import music

    tunes = music.generate_tunes(
        model, n, max_chars=500, generator=torch.Generator().manual_seed(seed), **sampling
    )
    report = music.check_tunes(tunes)
    return {f"tunes_{k}": v for k, v in report.items()}
