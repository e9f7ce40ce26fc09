"""Training recipes behind ``genai-course train NAME``: one function per shipped model.

Each recipe trains with the budget of a profile (see :mod:`genai_course.budget`), evaluates
on held-out data, and writes ``OUT/<checkpoint>.safetensors`` plus its entry in
``OUT/manifest.json`` (the command that made it and the metrics it reached).  Running
``genai-course train NAME --profile full --out genai_course/pretrained`` rebuilds the shipped
checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from . import data
from .budget import pick
from .pretrained import save_pretrained
from .train import TensorLoader, TrainConfig, Trainer


@dataclass
class Recipe:
    name: str  # the checkpoint name it writes
    description: str
    train: Callable[..., dict[str, Any]]
    sample: Callable[..., Any] | None = None


@dataclass
class RunOptions:
    """How to run a recipe: the settings of ``genai-course train`` that every recipe shares."""

    profile: str
    out: str | Path | None = None  # folder for the .safetensors and manifest.json; None: no file
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False
    progress: bool = True
    checkpoint_dir: str | None = None  # resumable Trainer checkpoints

    def trainer_settings(self) -> dict[str, Any]:
        """The :class:`TrainConfig` fields these options set."""
        return dict(
            seed=self.seed,
            device=self.device,
            precision=self.precision,
            compile=self.compile,
            progress=self.progress,
            checkpoint_dir=self.checkpoint_dir,
        )

    def command(self, recipe: str) -> str:
        """The command line that reproduces this run (recorded in the manifest)."""
        return (
            f"genai-course train {recipe} --profile {self.profile} --seed {self.seed} "
            f"--out {self.out}"
        )


# classifier ---------------------------------------------------------------------------------


def classifier_config(profile: str, **overrides: Any) -> TrainConfig:
    """The Trainer settings of the digit classifier for ``profile``."""
    steps = pick(smoke=6, cpu=450, full=3000, profile=profile)
    kw: dict[str, Any] = dict(
        steps=steps,
        batch_size=128,
        lr=3e-3,
        weight_decay=5e-4,
        schedule="cosine",
        warmup_steps=max(1, steps // 20),
        eval_every=max(1, steps // 10),
        monitor="val_acc",
        mode="max",
        restore_best=True,
        log_every=10,
    )
    kw.update(overrides)
    return TrainConfig(**kw)


def train_classifier(opts: RunOptions) -> dict[str, Any]:
    """Train :class:`~genai_course.models.DigitClassifier` on the 4,000 MNIST training digits
    (random shifts of up to 2 pixels as augmentation), keep the weights with the best
    validation accuracy, and report the accuracy on the 500 held-out test digits."""
    from .models import ClassifierConfig, DigitClassifier

    torch.manual_seed(opts.seed)
    x, y = data.load_mnist("train")
    xv, yv = data.load_mnist("val")
    xt, yt = data.load_mnist("test")
    model = DigitClassifier(ClassifierConfig(mean=float(x.mean()), std=float(x.std())))
    loader = TensorLoader(x, y, batch_size=128, seed=opts.seed, transform=data.random_shift)
    config = classifier_config(opts.profile, **opts.trainer_settings())
    trainer = Trainer(
        model,
        loader,
        config,
        val_data=(xv, yv),
        metrics_fn=lambda m: {"val_acc": m.accuracy(xv, yv)},
    )
    start = time.perf_counter()
    trainer.fit()
    seconds = time.perf_counter() - start
    model = model.cpu().eval()
    with torch.no_grad():
        test_nll = float(F.cross_entropy(model(xt), yt))
    metrics = {
        "test_acc": model.accuracy(xt, yt),
        "val_acc": model.accuracy(xv, yv),
        "test_nll": test_nll,
        "steps": trainer.step,
        "train_seconds": round(seconds, 1),
        "device": str(trainer.device),
        "world_size": trainer.world_size,
    }
    if opts.out is not None and trainer.is_main:
        save_pretrained(
            model,
            "digit-classifier",
            opts.out,
            command=opts.command("classifier"),
            metrics=metrics,
            notes="feature network of the course's sample metrics (FID, KID, ...)",
        )
    return metrics


# Gaussian mixture on the ring ---------------------------------------------------------------


def train_gmm_ring(opts: RunOptions) -> dict[str, Any]:
    """Fit an 8-component Gaussian mixture (k-means++ starting means) to the ring of 8
    Gaussians by gradient descent on the negative log-likelihood; report the held-out NLL
    (nats per point)."""
    from .models import GaussianMixture
    from .models.gmm import GMMConfig

    gen = torch.Generator().manual_seed(opts.seed)
    x, _ = data.load_toy2d("ring", "train", n=4000)
    xv, _ = data.load_toy2d("ring", "val", n=1000)
    model = GaussianMixture(
        GMMConfig(components=8, dim=2, init_scale=1.0, init_std=0.5), generator=gen
    ).init_means_kmeanspp(x, generator=gen)
    steps = pick(smoke=5, cpu=1500, full=4000, profile=opts.profile)
    config = TrainConfig(
        steps=steps,
        batch_size=256,
        lr=0.05,
        schedule="cosine",
        log_every=50,
        **opts.trainer_settings(),
    )
    trainer = Trainer(model, x, config, val_data=xv)
    trainer.fit()
    model = model.cpu().eval()
    with torch.no_grad():
        val_nll = float(-model.log_prob(xv).mean())
    metrics = {"val_nll": val_nll, "steps": trainer.step, "device": str(trainer.device)}
    if opts.out is not None and trainer.is_main:
        save_pretrained(
            model,
            "gmm-ring",
            opts.out,
            command=opts.command("gmm-ring"),
            metrics=metrics,
            notes="chapter 01's mixture fitted to the 8-mode ring",
        )
    return metrics


def sample_gmm_ring(n: int, seed: int = 0) -> torch.Tensor:
    """``n`` points from the shipped ring mixture, (n, 2)."""
    from .pretrained import load_pretrained

    model = load_pretrained("gmm-ring")
    return model.sample(n, generator=torch.Generator().manual_seed(seed))[0]


RECIPES: dict[str, Recipe] = {
    "classifier": Recipe(
        "digit-classifier",
        "MNIST digit classifier (chapter 02; metrics' feature network)",
        train_classifier,
    ),
    "gmm-ring": Recipe(
        "gmm-ring",
        "8-component Gaussian mixture on the ring of Gaussians (chapter 01)",
        train_gmm_ring,
        sample_gmm_ring,
    ),
}
