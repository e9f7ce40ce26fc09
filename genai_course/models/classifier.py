"""The MNIST digit classifier (chapter 02).

Later chapters use it twice: as a judge (is a generated "7" classified as a 7?) and as the
*feature network* of sample metrics such as FID, whose features are its penultimate layer.
Inputs are images in [0, 1] of shape (N, 1, 28, 28); the model normalises them itself, so
every chapter can feed it raw pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checks import check_image_batch
from ..config import Config, check_positive, check_range


@dataclass
class ClassifierConfig(Config):
    channels: tuple[int, int] = (32, 64)  # two conv stages, each halving the resolution
    hidden: int = 128  # width of the feature layer that metrics read
    dropout: float = 0.3  # before the last layer; the 4,000 training digits overfit easily
    num_classes: int = 10
    image_size: int = 28
    mean: float = 0.1307  # pixel statistics of the training split, for normalisation
    std: float = 0.3081

    def validate(self) -> None:
        if len(self.channels) != 2 or min(self.channels) < 1:
            raise ValueError(
                f"ClassifierConfig.channels must be two ints >= 1, got {self.channels}"
            )
        check_positive(self, "hidden", "image_size")
        check_positive(self, "num_classes", minimum=2)
        check_range(self, "dropout", 0.0, 1.0)
        check_positive(self, "std", minimum=0, strict=True)


class DigitClassifier(nn.Module):
    """Two conv stages (conv-BN-ReLU, max-pool) then a ``hidden``-wide feature layer."""

    def __init__(self, config: ClassifierConfig | None = None):
        super().__init__()
        self.config = c = config or ClassifierConfig()
        c1, c2 = c.channels
        self.body = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1, bias=False),
            nn.BatchNorm2d(c1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (N, c1, 14, 14)
            nn.Conv2d(c1, c2, 3, padding=1, bias=False),
            nn.BatchNorm2d(c2),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (N, c2, 7, 7)
            nn.Flatten(),
            nn.Linear(c2 * (c.image_size // 4) ** 2, c.hidden),
            nn.ReLU(),  # (N, hidden)
        )
        self.dropout = nn.Dropout(c.dropout)
        self.head = nn.Linear(c.hidden, c.num_classes)
        self.register_buffer("mean", torch.tensor(c.mean))
        self.register_buffer("std", torch.tensor(c.std))

    def _check(self, x: Tensor) -> None:
        s = self.config.image_size
        check_image_batch(x, (1, s, s))

    def features(self, x: Tensor) -> Tensor:
        """(N, 1, 28, 28) in [0, 1] -> (N, hidden) penultimate features (the metrics' space)."""
        self._check(x)
        return self.body((x - self.mean) / self.std)

    def forward(self, x: Tensor) -> Tensor:
        """(N, 1, 28, 28) in [0, 1] -> (N, num_classes) logits."""
        return self.head(self.dropout(self.features(x)))

    def loss(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """Cross-entropy :math:`-\\frac1N\\sum_i \\log p_\\theta(y_i \\mid x_i)`, and accuracy."""
        x, y = batch
        logits = self(x)
        return F.cross_entropy(logits, y), {"acc": (logits.argmax(1) == y).float().mean()}

    @torch.no_grad()
    def predict(self, x: Tensor, batch_size: int = 1000) -> Tensor:
        """Class labels (N,) int64, in eval mode, batched."""
        was = self.training
        self.eval()
        out = torch.cat(
            [self(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)]
        )
        self.train(was)
        return out

    @torch.no_grad()
    def accuracy(self, x: Tensor, y: Tensor) -> float:
        """Fraction of ``x`` classified as ``y``."""
        return (self.predict(x.to(self.mean.device)).cpu() == y.cpu()).float().mean().item()
