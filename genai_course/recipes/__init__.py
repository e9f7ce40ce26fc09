"""Training recipes behind ``genai-course train NAME``: one record per shipped model.

Each recipe trains with the budget of a profile (see :mod:`genai_course.budget`), evaluates
on held-out data, and writes ``OUT/<checkpoint>.safetensors`` plus its entry in
``OUT/manifest.json`` (the command that made it and the metrics it reached).  Running
``genai-course train NAME --profile full --out genai_course/pretrained`` rebuilds the shipped
checkpoint.

The package is split by job:

- :mod:`~genai_course.recipes.settings` -- the settings of each recipe per profile, one frozen
  record of config objects each (``gan_settings("dcgan", "cpu").model`` is a ``GANConfig``);
- :mod:`~genai_course.recipes.run` -- :class:`Recipe` (a recipe and the checkpoint names it
  writes) and :class:`RunOptions` (the options of a run, and ``ship``);
- :mod:`~genai_course.recipes.drivers` -- the ``train_*`` functions and :data:`RECIPES`.

The held-out figures the recipes record live in :mod:`genai_course.evaluation` (re-exported
here and from :mod:`genai_course.generators`).
"""

from ..data import char_windows, python_docs_tokenizer  # re-exported: notebooks import them here
from ..evaluation import (
    conditional_sample_accuracy,
    diffusion_sample_metrics,
    folk_tune_metrics,
    gan_sample_metrics,
    robustness_metrics,
    text_diffusion_metrics,
)
from ..music import tune_windows
from .drivers import (
    RECIPES,
    gan_objectives,
    gan_trainer,
    sample_gmm_ring,
    train_classifier,
    train_cvae,
    train_diffusion,
    train_gan,
    train_gmm_ring,
    train_gpt_folk,
    train_gpt_pydocs,
    train_robust_classifier,
    train_text_diffusion,
    train_vae,
    train_vae_binary,
    train_vqvae,
)
from .run import Recipe, RunOptions
from .settings import (
    GAN_KINDS,
    DiffusionSettings,
    FineTuneSettings,
    GANSettings,
    GPTSettings,
    TextDiffusionSettings,
    VAESettings,
    VQVAESettings,
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

__all__ = [
    "GAN_KINDS",
    "RECIPES",
    "DiffusionSettings",
    "FineTuneSettings",
    "GANSettings",
    "GPTSettings",
    "Recipe",
    "RunOptions",
    "TextDiffusionSettings",
    "VAESettings",
    "VQVAESettings",
    "char_windows",
    "classifier_config",
    "conditional_sample_accuracy",
    "cvae_settings",
    "diffusion_sample_metrics",
    "diffusion_settings",
    "folk_tune_metrics",
    "gan_objectives",
    "gan_sample_metrics",
    "gan_settings",
    "gan_trainer",
    "gpt_folk_settings",
    "gpt_pydocs_settings",
    "python_docs_tokenizer",
    "robustness_metrics",
    "sample_gmm_ring",
    "text_diffusion_metrics",
    "text_diffusion_settings",
    "train_classifier",
    "train_cvae",
    "train_diffusion",
    "train_gan",
    "train_gmm_ring",
    "train_gpt_folk",
    "train_gpt_pydocs",
    "train_robust_classifier",
    "train_text_diffusion",
    "train_vae",
    "train_vae_binary",
    "train_vqvae",
    "tune_windows",
    "vae_binary_settings",
    "vae_settings",
    "vqvae_settings",
]
