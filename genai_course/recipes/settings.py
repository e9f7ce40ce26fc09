"""The settings of every shipped recipe, per profile: one frozen record per recipe.

Each ``*_settings(profile)`` returns a frozen dataclass whose fields are the real config
objects the recipe builds from (:class:`~genai_course.models.gan.GANConfig`,
:class:`~genai_course.train.TrainConfig`, ...), so a notebook trains what
``genai-course train`` trains with ``GAN(st.model)`` and ``st.train``, and changes one field
with :func:`dataclasses.replace` (``replace(st.train, progress=False)``).  The records share
the config base (:class:`~genai_course.config.Config`): ``to_dict()`` gives the nested fields.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ..budget import pick
from ..captions import PROMPT_WORDS
from ..config import Config
from ..models.diffusion import DiffusionConfig
from ..models.gan import GANConfig
from ..models.gpt import GPTConfig
from ..models.text_encoder import TextEncoderConfig
from ..models.unet import UNetConfig
from ..models.vae import VAEConfig
from ..models.vqvae import CodePriorConfig, VQVAEConfig
from ..train import TrainConfig

__all__ = [
    "GAN_KINDS",
    "DiffusionSettings",
    "FineTuneSettings",
    "GANSettings",
    "GPTSettings",
    "TextDiffusionSettings",
    "VAESettings",
    "VQVAESettings",
    "classifier_config",
    "cvae_settings",
    "diffusion_settings",
    "gan_settings",
    "gpt_folk_settings",
    "gpt_pydocs_settings",
    "text_diffusion_settings",
    "vae_binary_settings",
    "vae_settings",
    "vqvae_settings",
]


# the records -------------------------------------------------------------------------------


@dataclass(frozen=True)
class VAESettings(Config):
    """A (conditional) VAE recipe: the network and its Trainer settings."""

    model: VAEConfig
    train: TrainConfig


@dataclass(frozen=True)
class VQVAESettings(Config):
    """Chapter 05's two stages: the VQ-VAE, the prior over its code grids (``num_codes`` and
    ``grid`` those of the VQ-VAE), and the Trainer settings of each."""

    vqvae: VQVAEConfig
    prior: CodePriorConfig
    vqvae_train: TrainConfig
    prior_train: TrainConfig


@dataclass(frozen=True)
class GPTSettings(Config):
    """A char-level GPT recipe.  ``model.vocab_size`` and ``model.vocab`` are the config's
    defaults: the tokenizer fills them in (``replace(st.model, vocab_size=len(tok),
    vocab=tok.vocab)``)."""

    model: GPTConfig
    train: TrainConfig


@dataclass(frozen=True)
class FineTuneSettings(Config):
    """Full fine-tuning of a pretrained GPT: the context of the new windows (characters), the
    dropout the network is set to, and the Trainer settings."""

    block_size: int
    dropout: float
    train: TrainConfig


@dataclass(frozen=True)
class GANSettings(Config):
    """A GAN recipe: the networks, the Trainer settings and ``n_critic`` (discriminator steps
    per generator step)."""

    model: GANConfig
    train: TrainConfig
    n_critic: int


@dataclass(frozen=True)
class DiffusionSettings(Config):
    """A diffusion recipe: the U-Net, the noising process and the Trainer settings."""

    unet: UNetConfig
    diffusion: DiffusionConfig
    train: TrainConfig


@dataclass(frozen=True)
class TextDiffusionSettings(DiffusionSettings):
    """:class:`DiffusionSettings` plus the text encoder and ``prompt_variants`` (captions drawn
    per training digit)."""

    text: TextEncoderConfig
    prompt_variants: int


# classifier --------------------------------------------------------------------------------


def classifier_config(profile: str, **overrides: Any) -> TrainConfig:
    """The Trainer settings of the digit classifier for ``profile`` (``overrides``: fields of
    :class:`~genai_course.train.TrainConfig`)."""
    steps = pick(smoke=6, cpu=450, full=3000, profile=profile)
    kw: dict[str, Any] = dict(
        steps=steps,
        batch_size=128,
        lr=3e-3,
        weight_decay=5e-4,
        decay_rule="all",  # the shipped classifiers were trained so (TrainConfig.decay_rule)
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


# VAEs --------------------------------------------------------------------------------------


def _vae_train_settings(steps: int) -> TrainConfig:
    """Trainer settings shared by the VAE recipes: cosine schedule, and the weights of the best
    validation ELBO (4,000 digits overfit)."""
    return TrainConfig(
        steps=steps,
        batch_size=128,
        lr=1e-3,
        schedule="cosine",
        warmup_steps=min(100, steps // 10),
        eval_every=max(1, steps // 10),
        monitor="val_loss",
        restore_best=True,
        log_every=50,
    )


def vae_settings(profile: str, **model_overrides: Any) -> VAESettings:
    """The MNIST VAE for ``profile`` (``model_overrides``: fields of
    :class:`~genai_course.models.vae.VAEConfig`).

    4,000 training digits overfit a VAE quickly; random 1-pixel shifts of the training digits
    and keeping the weights with the best validation ELBO hold that off.
    """
    # the shipped model is convolutional: about 2 nats better than an MLP at the same budget
    model = VAEConfig(
        arch=pick(smoke="mlp", cpu="mlp", full="conv", profile=profile),
        latent_dim=pick(smoke=4, cpu=16, full=32, profile=profile),
        hidden=pick(smoke=32, cpu=400, full=500, profile=profile),
    )
    if model_overrides:
        model = replace(model, **model_overrides)
    steps = pick(smoke=4, cpu=6000, full=30000, profile=profile)
    return VAESettings(model=model, train=_vae_train_settings(steps))


def vae_binary_settings(profile: str) -> VAESettings:
    """The VAE of the binarised-MNIST benchmark (``vae-binary-mnist``) for ``profile``.

    An MLP (784-400-400 ReLU, 32 latent dims, the mirror back to 784 Bernoulli logits) trained
    on the 4,000 training digits binarised afresh for every batch (dynamic binarisation, as
    Burda et al. 2016 train) after a random shift of up to one pixel, keeping the weights of
    the best validation ELBO on the validation digits binarised once. In one run each (seed 0,
    full budget, k = 500), dropping the shifts made the best validation ELBO come at a fifth of
    the steps and left the test NLL about 7 nats worse. An MLP rather than the conv net of ``vae-mnist``:
    the IWAE evaluation at k = 5,000 passes every test digit 5,000 times through the decoder.
    """
    model = VAEConfig(
        arch="mlp",
        latent_dim=pick(smoke=4, cpu=32, full=32, profile=profile),
        hidden=pick(smoke=32, cpu=400, full=400, profile=profile),
    )
    steps = pick(smoke=4, cpu=3000, full=30000, profile=profile)
    return VAESettings(model=model, train=_vae_train_settings(steps))


def cvae_settings(profile: str) -> VAESettings:
    """The class-conditional VAE for ``profile``.

    A small latent space (3 dimensions): in chapter 04's cpu-profile run (one seed each) the same
    recipe with 16 latent dimensions has clearly fewer of its samples of a class recognised as
    that class (the chapter glues both shares; its last runs gave about 0.6 against 0.87).  The
    cause was not measured; the hypotheses are that the wider
    codes carry class information the decoder reads instead of the label, or that prior draws
    land where the 16-dimensional aggregate posterior has little mass.
    """
    model = VAEConfig(
        arch="mlp",
        latent_dim=3,
        hidden=pick(smoke=32, cpu=400, full=400, profile=profile),
        num_classes=10,
    )
    steps = pick(smoke=4, cpu=4000, full=15000, profile=profile)
    return VAESettings(model=model, train=_vae_train_settings(steps))


# VQ-VAE and its prior ----------------------------------------------------------------------


def vqvae_settings(profile: str) -> VQVAESettings:
    """Chapter 05's two stages for ``profile``: the VQ-VAE and its prior, each with its
    Trainer settings."""
    vq_steps = pick(smoke=4, cpu=1500, full=8000, profile=profile)
    prior_steps = pick(smoke=4, cpu=500, full=3000, profile=profile)
    vqvae = VQVAEConfig(num_codes=64, embed_dim=16, hidden=(32, 64))
    prior = pick(
        smoke=dict(n_layer=1, n_head=2, n_embd=32),
        cpu=dict(n_layer=2, n_head=4, n_embd=64),
        full=dict(n_layer=4, n_head=4, n_embd=128),
        profile=profile,
    )
    return VQVAESettings(
        vqvae=vqvae,
        prior=CodePriorConfig(num_codes=vqvae.num_codes, grid=vqvae.grid, **prior),
        vqvae_train=TrainConfig(
            steps=vq_steps,
            batch_size=128,
            lr=2e-3,
            schedule="cosine",
            warmup_steps=min(50, vq_steps // 10),
            log_every=50,
        ),
        prior_train=TrainConfig(
            steps=prior_steps,
            batch_size=64,
            lr=pick(cpu=2e-3, full=1e-3, profile=profile),
            schedule="cosine",
            warmup_steps=min(50, prior_steps // 10),
            eval_every=max(1, prior_steps // 5),
            log_every=50,
        ),
    )


# char-level GPTs ---------------------------------------------------------------------------


def gpt_pydocs_settings(profile: str) -> GPTSettings:
    """The Python-reference GPT for ``profile`` (the vocabulary is the tokenizer's).

    ``cpu`` is what a notebook trains on 2 cores within its time budget; ``full`` is the shipped
    checkpoint: wider, dropout against the 370 KB corpus, and a 512-character context, so that
    a short prompt and its continuation fit in one window (chapter 09 compares generation with
    and without the KV cache there: equal logits up to float rounding, the same greedy tokens).
    """
    model = pick(
        smoke=dict(n_layer=1, n_head=2, n_embd=32, block_size=32, dropout=0.0),
        cpu=dict(n_layer=4, n_head=4, n_embd=128, block_size=128, dropout=0.0),
        full=dict(n_layer=4, n_head=6, n_embd=192, block_size=512, dropout=0.1),
        profile=profile,
    )
    steps = pick(smoke=4, cpu=700, full=4000, profile=profile)
    train = TrainConfig(
        steps=steps,
        batch_size=pick(smoke=32, cpu=32, full=16, profile=profile),  # full: 8,192 chars a step
        lr=pick(cpu=5e-3, full=3e-3, profile=profile),
        schedule="cosine",
        warmup_steps=min(100, steps // 10),
        min_lr_ratio=0.1,
        weight_decay=0.1,
        decay_rule="all",  # the shipped GPTs were trained so (TrainConfig.decay_rule)
        betas=(0.9, 0.95),
        grad_clip=1.0,
        eval_every=max(1, steps // 8),
        log_every=25,
    )
    return GPTSettings(model=GPTConfig(**model), train=train)


def gpt_folk_settings(profile: str) -> FineTuneSettings:
    """The folk-tune GPT for ``profile``: ``gpt-pydocs`` fine-tuned on tunes.

    The network is ``gpt-pydocs`` (chapter 09) fine-tuned in full (chapter 11 found full
    fine-tuning best on this domain). ``cpu`` is chapter 17's run of about 45 seconds on 2
    cores; ``full`` is the shipped checkpoint: 2,000 steps of 8,192 characters, about 9.4
    passes over the 1.7 M characters of training tunes, with dropout 0.1 and the best
    validation weights kept.
    """
    steps = pick(smoke=3, cpu=120, full=2000, profile=profile)
    train = TrainConfig(
        steps=steps,
        batch_size=pick(smoke=8, cpu=16, full=32, profile=profile),
        lr=pick(cpu=2e-3, full=1e-3, profile=profile),
        schedule="cosine",
        warmup_steps=min(50, steps // 10),
        min_lr_ratio=0.1,
        weight_decay=0.1,
        decay_rule="all",  # the shipped GPTs were trained so (TrainConfig.decay_rule)
        betas=(0.9, 0.95),
        grad_clip=1.0,
        eval_every=max(1, steps // 6),
        eval_batches=pick(smoke=1, cpu=8, full=40, profile=profile),
        restore_best=profile == "full",
        log_every=25,
    )
    return FineTuneSettings(
        block_size=pick(smoke=32, cpu=256, full=256, profile=profile),
        dropout=pick(smoke=0.0, cpu=0.0, full=0.1, profile=profile),
        train=train,
    )


# GANs --------------------------------------------------------------------------------------

GAN_KINDS = ("dcgan", "wgan-gp", "cgan")


def gan_settings(kind: str, profile: str) -> GANSettings:
    """Chapters 06-07's MNIST GAN of ``kind`` for ``profile``.

    ``kind`` is ``dcgan`` (non-saturating loss), ``wgan-gp`` (Wasserstein loss with gradient
    penalty, the DCGAN networks, 5 critic steps, Adam betas (0.5, 0.9) as in the MNIST code of
    Gulrajani et al.) or
    ``cgan`` (the DCGAN with a label embedding and a projection discriminator).
    """
    if kind not in GAN_KINDS:
        raise ValueError(f"unknown GAN kind {kind!r}; known: {', '.join(GAN_KINDS)}")
    wgan = kind == "wgan-gp"
    # a WGAN-GP step is five critic steps with a double backward each: about 5x the cost
    cpu_steps = {"dcgan": 2000, "wgan-gp": 300, "cgan": 1500}[kind]
    steps = pick(smoke=4, cpu=cpu_steps, full=2500 if wgan else 10000, profile=profile)
    model = GANConfig(
        arch="dcgan",
        width=pick(smoke=8, cpu=32, full=64, profile=profile),
        latent_dim=64,
        # nearest-neighbour upsampling then a 3x3 convolution: no uneven overlap, so none of
        # the checkerboard artefacts of transposed convolutions (Odena et al., 2016); chapter
        # 06's exercise 4 trains both
        upsample="nearest",
        loss="wgan-gp" if wgan else "ns",
        num_classes=10 if kind == "cgan" else 0,
        # lambda of the mode-seeking term (Mao et al.): the generator's loss gains
        # lambda / (r + eps), r the ratio of image distance to latent distance, which pushes a
        # conditional generator to use z rather than draw one image per class. Chapter 07
        # measures the cGAN's within-class pixel spread against real digits. Only the cGAN
        # uses it: the failure it targets, one image per label, needs labels; chapter 06's
        # exercise 5 tries it on the unconditional DCGAN.
        mode_seeking=1.0 if kind == "cgan" else 0.0,
    )
    train = TrainConfig(
        steps=steps,
        batch_size=64,
        lr=2e-4 if wgan else 5e-4,
        optimizer="adam",
        betas=(0.5, 0.9) if wgan else (0.5, 0.999),
        schedule="cosine",
        min_lr_ratio=0.1,
        ema_decay=pick(smoke=0.9, cpu=0.995, full=0.999, profile=profile),  # ~1/10 of the run
        ema_of="generator",
        log_every=50,
    )
    return GANSettings(model=model, train=train, n_critic=5 if wgan else 1)


# diffusion ---------------------------------------------------------------------------------


def diffusion_settings(profile: str) -> DiffusionSettings:
    """The class-conditional MNIST diffusion model for ``profile``.

    One class-conditional network with label dropout serves chapters 12 and 13: with the "no
    label" index it is the unconditional model, with a label and a guidance scale the
    conditional one (classifier-free guidance).
    """
    unet = pick(
        smoke=dict(
            base_width=8,
            channel_mults=(1, 2),
            attention_levels=(),
            norm_groups=4,
            attention_heads=2,
            middle_attention=False,
        ),
        cpu=dict(base_width=32),
        full=dict(base_width=32),
        profile=profile,
    )
    unet.update(num_classes=10, dropout=pick(smoke=0.0, cpu=0.0, full=0.1, profile=profile))
    steps = pick(smoke=4, cpu=600, full=6000, profile=profile)
    train = TrainConfig(
        steps=steps,
        batch_size=pick(smoke=16, cpu=64, full=64, profile=profile),
        lr=pick(smoke=1e-3, cpu=2e-3, full=1e-3, profile=profile),
        schedule="cosine",
        warmup_steps=min(200, steps // 10),
        min_lr_ratio=0.1,
        grad_clip=1.0,
        ema_decay=pick(smoke=0.9, cpu=0.99, full=0.999, profile=profile),
        log_every=50,
    )
    return DiffusionSettings(
        unet=UNetConfig(**unet),
        diffusion=DiffusionConfig(schedule="linear", timesteps=1000, p_uncond=0.1),
        train=train,
    )


def text_diffusion_settings(profile: str) -> TextDiffusionSettings:
    """:func:`diffusion_settings` for the text-conditioned model: the same U-Net and training,
    with the text encoder's prompt vector (``cond_dim``) in place of class labels."""
    st = diffusion_settings(profile)
    width = pick(smoke=16, cpu=64, full=64, profile=profile)
    unet = replace(
        st.unet, num_classes=0, cond_dim=pick(smoke=16, cpu=64, full=64, profile=profile)
    )
    text = TextEncoderConfig(
        vocabulary=PROMPT_WORDS,
        max_words=8,
        width=width,
        layers=pick(smoke=1, cpu=2, full=2, profile=profile),
        heads=4,
        out_dim=unet.cond_dim,
    )
    return TextDiffusionSettings(
        unet=unet, diffusion=st.diffusion, train=st.train, text=text, prompt_variants=4
    )
