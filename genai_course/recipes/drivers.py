"""The recipe drivers behind ``genai-course train NAME``: one function per shipped model.

Each driver trains with the settings of a profile (:mod:`genai_course.recipes.settings`),
evaluates on held-out data (:mod:`genai_course.evaluation`), and ships each checkpoint its
:class:`~genai_course.recipes.run.Recipe` record names as ``OUT/<checkpoint>.safetensors``
plus its entry in ``OUT/manifest.json`` (the command that made it and the metrics it reached).
"""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F

from .. import data
from ..budget import pick
from ..data import char_windows, python_docs_tokenizer
from ..evaluation import (
    conditional_sample_accuracy,
    diffusion_sample_metrics,
    folk_tune_metrics,
    gan_sample_metrics,
    robustness_metrics,
    text_diffusion_metrics,
)
from ..music import tune_windows
from ..train import Objective, TensorLoader, TrainConfig, Trainer
from .run import Recipe, RunOptions, _fit
from .settings import (
    classifier_config,
    cvae_settings,
    diffusion_settings,
    gan_settings,
    gpt_folk_settings,
    gpt_pydocs_settings,
    text_diffusion_settings,
    vae_binary_settings,
    vae_settings,
    vqvae_settings,
)

# classifier ---------------------------------------------------------------------------------


def _digit_classifier_setup(opts: RunOptions) -> tuple[Any, TensorLoader, tuple, tuple]:
    """What both digit-classifier recipes start from: a fresh :class:`DigitClassifier`
    normalised with the training digits' mean and std, a loader over the 4,000 training digits
    with random shifts of up to 2 pixels, and the (images, labels) of the val and test splits."""
    from ..models import ClassifierConfig, DigitClassifier

    torch.manual_seed(opts.seed)
    x, y = data.load_mnist("train")
    model = DigitClassifier(ClassifierConfig(mean=float(x.mean()), std=float(x.std())))
    loader = TensorLoader(x, y, batch_size=128, seed=opts.seed, transform=data.random_shift)
    return model, loader, data.load_mnist("val"), data.load_mnist("test")


def train_classifier(opts: RunOptions) -> dict[str, Any]:
    """Train :class:`~genai_course.models.DigitClassifier` on the 4,000 MNIST training digits
    (random shifts of up to 2 pixels as augmentation), keep the weights with the best
    validation accuracy, and report the accuracy on the 500 held-out test digits."""
    model, loader, (xv, yv), (xt, yt) = _digit_classifier_setup(opts)
    config = classifier_config(opts.profile, **opts.trainer_settings())
    trainer = Trainer(
        model,
        loader,
        config,
        val_data=(xv, yv),
        metrics_fn=lambda m: {"val_acc": m.accuracy(xv, yv)},
    )
    run = _fit(trainer, opts)
    model = model.cpu().eval()
    with torch.no_grad():
        test_nll = float(F.cross_entropy(model(xt), yt))
    metrics = {
        "test_acc": model.accuracy(xt, yt),
        "val_acc": model.accuracy(xv, yv),
        "test_nll": test_nll,
        **run,
    }
    if trainer.is_main:
        opts.ship(
            model,
            RECIPES["classifier"],
            metrics,
            notes="feature network of the course's sample metrics (FID, KID, ...)",
        )
    return metrics


def train_robust_classifier(opts: RunOptions) -> dict[str, Any]:
    """Adversarially train the digit classifier (Madry et al.): every batch is replaced by its
    PGD-7 examples at eps = 0.1 against the current weights; the weights with the best PGD-10
    accuracy on 200 validation digits are kept. Reports clean, FGSM and PGD accuracy on the
    500 held-out test digits at eps 0.05, 0.1 and 0.2 (50 of each at the smoke profile)."""
    from ..adversarial import AdversarialLoss, robust_accuracy

    model, loader, (xv, yv), (xt, yt) = _digit_classifier_setup(opts)
    steps = pick(smoke=4, cpu=300, full=2000, profile=opts.profile)
    config = classifier_config(
        opts.profile, steps=steps, monitor="val_robust_acc", **opts.trainer_settings()
    )

    # the smoke profile checks that the recipe runs: 50 digits keep its attacks to seconds
    n_eval = pick(smoke=50, cpu=None, full=None, profile=opts.profile)
    xt, yt = xt[:n_eval], yt[:n_eval]

    def val_metrics(m: Any) -> dict[str, float]:
        g = torch.Generator().manual_seed(opts.seed)
        n = pick(smoke=50, cpu=200, full=200, profile=opts.profile)
        return {
            "val_acc": m.accuracy(xv, yv),
            "val_robust_acc": robust_accuracy(m, xv[:n], yv[:n], 0.1, steps=10, generator=g),
        }

    loss = AdversarialLoss(eps=0.1, steps=7, seed=opts.seed)
    trainer = Trainer(
        model, loader, config, loss_fn=loss, val_data=(xv, yv), metrics_fn=val_metrics
    )
    run = _fit(trainer, opts)
    model = model.cpu().eval()
    metrics = {**robustness_metrics(model, xt, yt, seed=opts.seed), "train_eps": 0.1, **run}
    if trainer.is_main:
        opts.ship(
            model,
            RECIPES["robust-classifier"],
            metrics,
            notes="adversarially trained (PGD-7, eps 0.1) digit classifier of chapter 14",
        )
    return metrics


# Gaussian mixture on the ring ---------------------------------------------------------------


def train_gmm_ring(opts: RunOptions) -> dict[str, Any]:
    """Fit an 8-component Gaussian mixture (k-means++ starting means) to the ring of 8
    Gaussians by gradient descent on the negative log-likelihood; report the held-out NLL
    (nats per point)."""
    from ..models import GaussianMixture
    from ..models.gmm import GMMConfig

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
    run = _fit(trainer, opts)
    model = model.cpu().eval()
    with torch.no_grad():
        val_nll = float(-model.log_prob(xv).mean())
    metrics = {"val_nll": val_nll, **run}
    if trainer.is_main:
        opts.ship(
            model,
            RECIPES["gmm-ring"],
            metrics,
            notes="chapter 01's mixture fitted to the 8-mode ring",
        )
    return metrics


def sample_gmm_ring(n: int, seed: int = 0) -> torch.Tensor:
    """``n`` points from the shipped ring mixture, (n, 2)."""
    from ..pretrained import load_pretrained

    model = load_pretrained("gmm-ring")
    return model.sample(n, generator=torch.Generator().manual_seed(seed))


def _fit_vae(
    model: Any, opts: RunOptions, train: TrainConfig, labelled: bool
) -> tuple[Trainer, dict[str, Any]]:
    """Train a (conditional) VAE on the MNIST training digits, randomly shifted by up to one
    pixel, validating on the validation split; returns the trainer and the run facts."""
    x, y = data.load_mnist("train")
    xv, yv = data.load_mnist("val")
    shift = functools.partial(data.random_shift, max_shift=1)
    loader = TensorLoader(
        *((x, y) if labelled else (x,)),
        batch_size=train.batch_size,
        seed=opts.seed,
        transform=shift,
    )
    trainer = Trainer(
        model,
        loader,
        replace(train, **opts.trainer_settings()),
        val_data=(xv, yv) if labelled else xv,
    )
    return trainer, _fit(trainer, opts)


# conditional VAE on MNIST ----------------------------------------------------------------------


def train_cvae(opts: RunOptions) -> dict[str, Any]:
    """Train the class-conditional MNIST VAE; report its validation ELBO and the accuracy of
    its class-conditional samples as judged by the shipped classifier."""
    from ..models.vae import VAE

    torch.manual_seed(opts.seed)
    st = cvae_settings(opts.profile)
    model = VAE(st.model)
    trainer, run = _fit_vae(model, opts, st.train, labelled=True)
    model = model.cpu().eval()
    metrics = {
        "conditional_accuracy": conditional_sample_accuracy(model, seed=opts.seed),
        "samples_judged": 1000,
        "best_val_neg_elbo": trainer.best_value,
        **run,
    }
    if trainer.is_main:
        opts.ship(model, RECIPES["cvae"], metrics, notes="chapter 04's class-conditional VAE")
    return metrics


# VQ-VAE and its prior -------------------------------------------------------------------------


def train_vqvae(opts: RunOptions) -> dict[str, Any]:
    """Train chapter 05's two-stage model: the VQ-VAE on the training digits, then the
    autoregressive prior (the course GPT) on their 7x7 code grids.  Reports the test
    reconstruction error, codebook usage and perplexity, the prior's held-out NLL per code and
    the class histogram of 1,000 samples judged by the shipped classifier."""
    from ..metrics import class_histogram, class_histogram_kl
    from ..models.vqvae import VQVAE, CodePrior, encode_dataset

    torch.manual_seed(opts.seed)
    x, _ = data.load_mnist("train")
    xv, _ = data.load_mnist("val")
    xt, _ = data.load_mnist("test")
    st = vqvae_settings(opts.profile)
    vq = VQVAE(st.vqvae)
    t1 = Trainer(
        vq,
        TensorLoader(x, batch_size=128, seed=opts.seed),
        replace(st.vqvae_train, **opts.trainer_settings("vqvae")),
    )
    run1 = _fit(t1, opts)
    vq = vq.cpu().eval()
    codes = {
        name: encode_dataset(vq, images)
        for name, images in [("train", x), ("val", xv), ("test", xt)]
    }
    prior = CodePrior(replace(st.prior, num_codes=vq.config.num_codes, grid=vq.grid))
    t2 = Trainer(
        prior,
        TensorLoader(codes["train"], batch_size=64, seed=opts.seed),
        replace(st.prior_train, **opts.trainer_settings("prior")),
        val_data=codes["val"],
    )
    run2 = _fit(t2, opts)
    prior = prior.cpu().eval()
    with torch.no_grad():
        recon = vq.reconstruct(xt)
        samples = vq.decode_codes(prior.sample(1000, generator=torch.Generator().manual_seed(0)))
    hist = class_histogram(samples)
    metrics = {
        "test_mse": float(((recon - xt) ** 2).mean()),
        "test_codebook_perplexity": vq.quantizer.perplexity(codes["test"]),
        "test_codebook_usage": vq.quantizer.usage(codes["test"]),
        "prior_test_nll_per_code": float(t2.evaluate(codes["test"])["val_loss"]),
        "sample_class_kl": class_histogram_kl(hist),
        "samples_judged": 1000,
        "steps": [run1["steps"], run2["steps"]],
        "train_seconds": round(run1["train_seconds"] + run2["train_seconds"], 1),
        "device": run1["device"],
        "world_size": run1["world_size"],
    }
    if t1.is_main:
        recipe = RECIPES["vqvae"]
        opts.ship(vq, recipe, metrics, "chapter 05's VQ-VAE (stage 1)", checkpoint="vqvae-mnist")
        opts.ship(
            prior,
            recipe,
            metrics,
            "chapter 05's autoregressive prior over 7x7 codes (stage 2)",
            checkpoint="vqvae-prior",
        )
    return metrics


# char-level GPT on the Python language reference -------------------------------------------


def _train_char_gpt(
    model: Any,
    windows: dict[str, data.TokenWindows],
    train: TrainConfig,
    opts: RunOptions,
    *,
    start_key: str | None = None,
) -> tuple[Trainer, dict[str, Any]]:
    """Train a char-level GPT on ``windows["train"]`` (validating on ``"val"``); return the
    trainer and the metrics every GPT recipe records: validation and test bits per character
    of the final weights (the restored best ones if ``restore_best``), size, precision, run;
    with ``start_key``, also the validation bits per character before training under it."""
    from ..metrics import bits_per_char

    trainer = Trainer(
        model,
        windows["train"],
        replace(train, **opts.trainer_settings()),
        val_data=windows["val"],
    )
    start = {start_key: bits_per_char(trainer.evaluate()["val_loss"])} if start_key else {}
    run = _fit(trainer, opts)
    val_nats = trainer.evaluate(windows["val"])["val_loss"]
    test_nats = trainer.evaluate(windows["test"])["val_loss"]
    metrics = {
        **start,
        "val_bpc": bits_per_char(val_nats),
        "test_bpc": bits_per_char(test_nats),
        "params": model.num_params(),
        "precision": trainer.precision,
        **run,
    }
    return trainer, metrics


def train_gpt_pydocs(opts: RunOptions) -> dict[str, Any]:
    """Pretrain the char-level GPT on the Python language reference (``pydoc_data``) and report
    validation and test bits per character on the held-out topics."""
    from ..models.gpt import GPT

    torch.manual_seed(opts.seed)
    tok = python_docs_tokenizer()
    st = gpt_pydocs_settings(opts.profile)
    model = GPT(replace(st.model, vocab_size=len(tok), vocab=tok.vocab))
    windows = char_windows(
        tok, data.load_python_docs, st.model.block_size, st.train.batch_size, opts.seed
    )
    trainer, metrics = _train_char_gpt(model, windows, st.train, opts)
    model = model.cpu().eval()
    if trainer.is_main:
        opts.ship(
            model,
            RECIPES["gpt-pydocs"],
            metrics,
            notes="char-level GPT pretrained on the Python language reference",
        )
    return metrics


# char-level GPT fine-tuned on folk tunes ------------------------------------------------------


def train_gpt_folk(opts: RunOptions) -> dict[str, Any]:
    """Fine-tune the pretrained char-level GPT on folk tunes in ABC notation; report bits per
    character on held-out tunes and how many sampled tunes parse and fit their metre."""
    from ..pretrained import load_pretrained

    torch.manual_seed(opts.seed)
    st = gpt_folk_settings(opts.profile)
    model = load_pretrained("gpt-pydocs").set_dropout(st.dropout).train()
    windows = tune_windows(model.tokenizer, st.block_size, st.train.batch_size, seed=opts.seed)
    trainer, metrics = _train_char_gpt(
        model, windows, st.train, opts, start_key="val_bpc_pretrained"
    )
    model = model.cpu().eval()
    n_tunes = 4 if opts.profile == "smoke" else 200
    metrics.update(folk_tune_metrics(model, n=n_tunes, seed=opts.seed))
    if trainer.is_main:
        opts.ship(
            model,
            RECIPES["gpt-folk"],
            metrics,
            notes="chapter 17's tune model: gpt-pydocs fine-tuned on folk tunes in ABC notation",
        )
    return metrics


# VAE on MNIST --------------------------------------------------------------------------------


def train_vae(opts: RunOptions) -> dict[str, Any]:
    """Train the MNIST VAE (Bernoulli decoder) and report the IWAE (k = 1000) negative
    log-likelihood of the 500 held-out test digits, in nats and bits per dimension."""
    from ..models.vae import VAE, iwae_nll

    torch.manual_seed(opts.seed)
    xt, _ = data.load_mnist("test")
    st = vae_settings(opts.profile)
    model = VAE(st.model)
    trainer, run = _fit_vae(model, opts, st.train, labelled=False)
    model = model.cpu().eval()
    k = pick(smoke=10, cpu=1000, full=1000, profile=opts.profile)
    nll = iwae_nll(model, xt, k=k, generator=torch.Generator().manual_seed(opts.seed))
    metrics = {
        "test_nll_nats": nll["nll_nats"],
        "test_bits_per_dim": nll["bits_per_dim"],
        "iwae_k": k,
        "best_val_neg_elbo": trainer.best_value,
        **run,
    }
    if trainer.is_main:
        opts.ship(model, RECIPES["vae"], metrics, notes="chapter 03's VAE (Bernoulli decoder)")
    return metrics


# VAE on binarised MNIST ------------------------------------------------------------------------


def _shift_and_binarise(x: torch.Tensor) -> torch.Tensor:
    """A training batch of grey digits (B, 1, 28, 28), each shifted by up to one pixel and then
    binarised afresh (a new Bernoulli draw every batch). Both draw from the global generator,
    which the Trainer's checkpoints save and restore, so a resumed run sees the same digits."""
    return data.binarise(data.random_shift(x, max_shift=1))


def train_vae_binary(opts: RunOptions) -> dict[str, Any]:
    """Train the binarised-MNIST VAE (Bernoulli decoder, a true likelihood of binary pixels) on
    the 4,000 training digits, shifted by up to a pixel and binarised afresh for every batch
    (:func:`_shift_and_binarise`), and report the IWAE negative
    log-likelihood (k = 5,000 at the full profile, Burda et al.'s evaluation) of the 500 test
    digits binarised once (``data.load_binarised_mnist``), in nats per image, with the number
    of active latent units (``vae.active_units``) on those digits."""
    from ..models.vae import VAE, active_units, iwae_nll

    torch.manual_seed(opts.seed)
    st = vae_binary_settings(opts.profile)
    x, _ = data.load_mnist("train")
    xv, _ = data.load_binarised_mnist("val")
    xt, _ = data.load_binarised_mnist("test")
    model = VAE(st.model)
    loader = TensorLoader(
        x, batch_size=st.train.batch_size, seed=opts.seed, transform=_shift_and_binarise
    )
    trainer = Trainer(model, loader, replace(st.train, **opts.trainer_settings()), val_data=xv)
    run = _fit(trainer, opts)
    model = model.cpu().eval()
    k = pick(smoke=10, cpu=1000, full=5000, profile=opts.profile)
    nll = iwae_nll(model, xt, k=k, generator=torch.Generator().manual_seed(opts.seed))
    with torch.no_grad():
        mu, _ = model.encode(xt)
    metrics = {
        "test_nll_nats": nll["nll_nats"],
        "iwae_k": k,
        "test_active_units": active_units(mu),
        "best_val_neg_elbo": trainer.best_value,
        **run,
    }
    if trainer.is_main:
        opts.ship(
            model,
            RECIPES["vae-binary"],
            metrics,
            notes="chapter 03's VAE on dynamically binarised digits (binarised-MNIST benchmark)",
        )
    return metrics


# GANs on MNIST ------------------------------------------------------------------------------


def gan_objectives(n_critic: int = 1) -> list[Objective]:
    """The two objectives of a :class:`~genai_course.models.gan.GAN`: ``D`` updates only the
    discriminator (``n_critic`` times per step), ``G`` only the generator."""
    from ..models.gan import GAN

    return [
        Objective("D", GAN.discriminator_loss, module="discriminator", repeats=n_critic),
        Objective("G", GAN.generator_loss, module="generator"),
    ]


def gan_trainer(
    kind: str,
    profile: str,
    *,
    seed: int = 0,
    model: dict[str, Any] | None = None,
    **train: Any,
) -> tuple[Any, Trainer]:
    """A new GAN of ``kind`` and the :class:`~genai_course.train.Trainer` that trains it on the
    4,000 training digits with :func:`gan_settings` (``model`` overrides GANConfig fields,
    e.g. ``{"mode_seeking": 0.0}``; ``train`` overrides TrainConfig fields): what
    ``genai-course train`` runs, and what chapters 06 and 07 call. ``seed`` seeds the
    initialisation, the batch order and the Trainer."""
    from ..models.gan import GAN

    torch.manual_seed(seed)
    x, y = data.load_mnist("train")
    st = gan_settings(kind, profile)
    gan = GAN(replace(st.model, **(model or {})))
    trainer = Trainer(
        gan,
        TensorLoader(x, y, batch_size=st.train.batch_size, seed=seed),
        replace(st.train, seed=seed, **train),
        objectives=gan_objectives(st.n_critic),
    )
    return gan, trainer


def train_gan(opts: RunOptions, kind: str) -> dict[str, Any]:
    """Train one of the MNIST GANs (``kind`` in ``GAN_KINDS``) on the 4,000 training digits and
    ship the generator's exponential moving average with the discriminator."""
    model, trainer = gan_trainer(kind, opts.profile, **opts.trainer_settings())  # with its seed
    run = _fit(trainer, opts)
    model = model.with_generator(trainer.ema_model.module).cpu().eval()
    metrics = {**gan_sample_metrics(model, seed=opts.seed), **run}
    if trainer.is_main:
        chapter = "07" if kind != "dcgan" else "06"
        opts.ship(
            model, RECIPES[kind], metrics, notes=f"chapter {chapter}'s {kind} (EMA generator)"
        )
    return metrics


# class-conditional diffusion on MNIST ------------------------------------------------------


def train_diffusion(opts: RunOptions) -> dict[str, Any]:
    """Train the class-conditional MNIST diffusion model on the 4,000 training digits (label
    dropout 0.1) and ship its exponential moving average."""
    from ..models.diffusion import Diffusion
    from ..models.unet import UNet

    torch.manual_seed(opts.seed)
    x, y = data.load_mnist("train")
    st = diffusion_settings(opts.profile)
    model = Diffusion(UNet(st.unet), st.diffusion)
    trainer = Trainer(
        model,
        TensorLoader(x, y, batch_size=st.train.batch_size, seed=opts.seed),
        replace(st.train, **opts.trainer_settings()),
    )
    run = _fit(trainer, opts)
    model = trainer.ema_model.module.cpu().eval()
    n = 500 if opts.profile != "smoke" else 20
    steps = 50 if opts.profile != "smoke" else 3
    metrics = {**diffusion_sample_metrics(model, n=n, steps=steps, seed=opts.seed), **run}
    metrics["params"] = sum(p.numel() for p in model.parameters())
    if trainer.is_main:
        opts.ship(
            model,
            RECIPES["diffusion"],
            metrics,
            notes="chapters 12-13's class-conditional DDPM (EMA weights; label dropout 0.1)",
        )
    return metrics


def train_text_diffusion(opts: RunOptions) -> dict[str, Any]:
    """Train the text-conditioned MNIST diffusion model: each training digit with
    ``prompt_variants`` captions from its label, thickness and slant; prompt dropout 0.1;
    ship the exponential moving average."""
    from .. import captions
    from ..models.diffusion import Diffusion
    from ..models.text_encoder import TextConditionedUNet

    torch.manual_seed(opts.seed)
    st = text_diffusion_settings(opts.profile)
    x, y = data.load_mnist("train")
    v = st.prompt_variants
    net = TextConditionedUNet.build(st.unet, st.text)
    model = Diffusion(net, st.diffusion)
    ids = net.tokenize(captions.caption_digits(x, y, variants=v, seed=opts.seed))
    trainer = Trainer(
        model,
        TensorLoader(x.repeat(v, 1, 1, 1), ids, batch_size=st.train.batch_size, seed=opts.seed),
        replace(st.train, **opts.trainer_settings()),
    )
    run = _fit(trainer, opts)
    model = trainer.ema_model.module.cpu().eval()
    smoke = opts.profile == "smoke"
    metrics = {
        **text_diffusion_metrics(
            model, n_per_digit=2 if smoke else 20, steps=3 if smoke else 50, seed=opts.seed
        ),
        **run,
    }
    metrics["params"] = sum(p.numel() for p in model.parameters())
    if trainer.is_main:
        opts.ship(
            model,
            RECIPES["text-diffusion"],
            metrics,
            notes="chapter 13's text-to-image DDPM: prompts from label, thickness and slant "
            "(EMA weights; prompt dropout 0.1)",
        )
    return metrics


_RECIPES = (
    Recipe(
        "classifier",
        ("digit-classifier",),
        "MNIST digit classifier (chapter 02; metrics' feature network)",
        train_classifier,
    ),
    Recipe(
        "robust-classifier",
        ("digit-classifier-robust",),
        "MNIST digit classifier adversarially trained with PGD at eps 0.1 (chapter 14)",
        train_robust_classifier,
    ),
    Recipe(
        "gmm-ring",
        ("gmm-ring",),
        "8-component Gaussian mixture on the ring of Gaussians (chapter 01)",
        train_gmm_ring,
        sample_gmm_ring,
    ),
    Recipe(
        "vae",
        ("vae-mnist",),
        "variational autoencoder on MNIST, Bernoulli decoder (chapter 03)",
        train_vae,
    ),
    Recipe(
        "vae-binary",
        ("vae-binary-mnist",),
        "VAE on dynamically binarised MNIST, the binarised benchmark (chapter 03)",
        train_vae_binary,
    ),
    Recipe("cvae", ("cvae-mnist",), "class-conditional VAE on MNIST (chapter 04)", train_cvae),
    Recipe(
        "vqvae",
        ("vqvae-mnist", "vqvae-prior"),
        "VQ-VAE on MNIST and its autoregressive prior over codes (chapter 05)",
        train_vqvae,
    ),
    Recipe(
        "dcgan",
        ("gan-dcgan-mnist",),
        "DCGAN on MNIST, non-saturating loss (chapter 06)",
        functools.partial(train_gan, kind="dcgan"),
    ),
    Recipe(
        "wgan-gp",
        ("gan-wgan-gp-mnist",),
        "WGAN-GP on MNIST, DCGAN networks (chapter 07)",
        functools.partial(train_gan, kind="wgan-gp"),
    ),
    Recipe(
        "cgan",
        ("gan-cgan-mnist",),
        "class-conditional DCGAN on MNIST, projection discriminator (chapter 07)",
        functools.partial(train_gan, kind="cgan"),
    ),
    Recipe(
        "gpt-pydocs",
        ("gpt-pydocs",),
        "char-level GPT pretrained on the Python language reference (chapter 09)",
        train_gpt_pydocs,
    ),
    Recipe(
        "gpt-folk",
        ("gpt-folk",),
        "gpt-pydocs fine-tuned on folk tunes in ABC notation (chapter 17)",
        train_gpt_folk,
    ),
    Recipe(
        "diffusion",
        ("diffusion-mnist",),
        "class-conditional DDPM on MNIST with label dropout (chapters 12-13)",
        train_diffusion,
    ),
    Recipe(
        "text-diffusion",
        ("diffusion-text-mnist",),
        "DDPM on MNIST conditioned on text prompts through a tiny text encoder (chapter 13)",
        train_text_diffusion,
    ),
)
# recipe name (``genai-course train NAME``) -> its record, in the order of the chapters
RECIPES: dict[str, Recipe] = {r.name: r for r in _RECIPES}
