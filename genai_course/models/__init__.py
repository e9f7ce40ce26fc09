"""Model families, one module each (``from genai_course.models import DigitClassifier``)."""

from .classifier import ClassifierConfig, DigitClassifier
from .gmm import GaussianMixture, gaussian_kl

__all__ = ["ClassifierConfig", "DigitClassifier", "GaussianMixture", "gaussian_kl"]
