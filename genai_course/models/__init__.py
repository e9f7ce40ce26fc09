"""Model families, one module each (``from genai_course.models import DigitClassifier``)."""

from .classifier import ClassifierConfig, DigitClassifier
from .gan import GAN, GANConfig
from .gmm import GaussianMixture, gaussian_kl
from .gpt import GPT, GPTConfig
from .rnn import CharRNN, CharRNNConfig
from .vae import VAE, VAEConfig, iwae_nll
from .vqvae import VQVAE, CodePrior, CodePriorConfig, VQVAEConfig

__all__ = [
    "CharRNN",
    "CharRNNConfig",
    "ClassifierConfig",
    "DigitClassifier",
    "GAN",
    "GANConfig",
    "GPT",
    "GPTConfig",
    "GaussianMixture",
    "VAE",
    "VAEConfig",
    "VQVAE",
    "VQVAEConfig",
    "CodePrior",
    "CodePriorConfig",
    "gaussian_kl",
    "iwae_nll",
]
