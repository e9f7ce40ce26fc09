r"""A tiny text encoder that lets prompts condition a diffusion model (chapter 13).

Text-to-image models turn a prompt into vectors with a text encoder and feed those to the
denoiser.  This module is the course's small, complete version of that path:

- :class:`WordTokenizer` splits a prompt into lower-case words and numerals and maps each to an
  id of a fixed vocabulary (0 is padding), refusing words it does not know;
- :class:`TextEncoder` embeds the ids, adds learned positions (so "slanted" before or after a
  word can differ), prepends a start token and runs a small transformer encoder over them; the
  start token's output, after a LayerNorm and a linear map, is the prompt's vector
  :math:`c \in \mathbb R^D`, which attends to every word;
- :class:`TextConditionedUNet` runs the encoder and hands :math:`c` to a
  :class:`~genai_course.models.unet.UNet` built with ``cond_dim = D``, which adds a projection
  of it to the time embedding.  :class:`~genai_course.models.diffusion.Diffusion` wraps it like
  any noise predictor: its ``cond`` is the (B, L) token ids, trained jointly with the U-Net.

The empty prompt (all padding, only the start token left) is the "no condition" of
classifier-free guidance.  Label dropout zeroes a prompt's ids, so the encoder learns the empty
prompt's vector as the unconditional model, as large systems do with the empty string.  One
pooled vector suits prompts that describe a whole small image; systems with long prompts also
let the U-Net cross-attend to every word's vector.

Shapes: B prompts, L ``max_words``, V vocabulary size (words + padding), W ``width``, D
``out_dim``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..checks import check_values
from ..config import Config, check_positive
from .unet import UNet, UNetConfig

__all__ = ["TextConditionedUNet", "TextEncoder", "TextEncoderConfig", "WordTokenizer"]

_WORD = re.compile(r"[a-z]+|[0-9]")


class WordTokenizer:
    """Prompts -> (B, L) int64 ids over a fixed word list; id 0 pads, word i has id i + 1.

    Lower-cases the prompt and keeps runs of letters and single digits, so punctuation and
    spacing do not matter ("A thick 7!" -> ``["a", "thick", "7"]``).  An unknown word or a
    prompt of more than ``max_words`` words is an error naming the known words or the limit.
    """

    def __init__(self, words: Sequence[str], max_words: int = 8):
        words = [str(w) for w in words]
        bad = [w for w in words if _WORD.fullmatch(w) is None]
        if not words or bad:
            raise ValueError(
                f"the vocabulary must be non-empty lower-case words or single digits; bad: {bad}"
            )
        if len(set(words)) != len(words):
            raise ValueError("the vocabulary has repeated words")
        if max_words < 1:
            raise ValueError(f"max_words must be >= 1, got {max_words}")
        self.words = tuple(words)
        self.max_words = int(max_words)
        self._ids = {w: i + 1 for i, w in enumerate(words)}

    @property
    def vocab_size(self) -> int:
        """Number of ids, padding included."""
        return len(self.words) + 1

    def split(self, prompt: str) -> list[str]:
        """The words of one prompt, lower-cased."""
        if not isinstance(prompt, str):
            raise TypeError(f"a prompt must be a str, got {type(prompt).__name__}")
        return _WORD.findall(prompt.lower())

    def encode(self, prompts: str | Sequence[str]) -> Tensor:
        """(B, L) int64 ids of ``prompts`` (one str gives B = 1), padded with 0 on the right."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        ids = torch.zeros(len(prompts), self.max_words, dtype=torch.long)
        for b, prompt in enumerate(prompts):
            words = self.split(prompt)
            unknown = [w for w in words if w not in self._ids]
            if unknown:
                raise ValueError(
                    f"unknown word(s) {unknown} in prompt {prompt!r}; known words: "
                    f"{', '.join(self.words)}"
                )
            if len(words) > self.max_words:
                raise ValueError(
                    f"prompt {prompt!r} has {len(words)} words; at most {self.max_words}"
                )
            ids[b, : len(words)] = torch.tensor([self._ids[w] for w in words], dtype=torch.long)
        return ids

    def decode(self, ids: Tensor) -> list[str]:
        """The prompts (words joined by spaces) of (B, L) ids; padding is dropped."""
        ids = torch.as_tensor(ids)
        if ids.ndim != 2:
            raise ValueError(f"expected ids of shape (B, L), got {tuple(ids.shape)}")
        return [" ".join(self.words[i - 1] for i in row.tolist() if i > 0) for row in ids]


@dataclass
class TextEncoderConfig(Config):
    """What a :class:`TextEncoder` is built from; JSON-serialisable."""

    vocabulary: tuple[str, ...] = field(default_factory=tuple)  # the words, in id order
    max_words: int = 8  # L: longest prompt
    width: int = 64  # W: token embedding and transformer width
    layers: int = 2  # transformer encoder layers
    heads: int = 4  # attention heads; must divide width
    out_dim: int = 64  # D: the prompt vector, the U-Net's cond_dim

    def validate(self) -> None:
        WordTokenizer(self.vocabulary, self.max_words)  # validates the words
        check_positive(self, "width", "layers", "heads", "out_dim")
        if self.width % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide width ({self.width})")


class TextEncoder(nn.Module):
    """Token ids (B, L) -> prompt vectors (B, D): see the module docstring."""

    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.config = c = config
        self.tokenizer = WordTokenizer(c.vocabulary, c.max_words)
        v = self.tokenizer.vocab_size
        self.start = v  # the start token's id, one past the words
        self.token_emb = nn.Embedding(v + 1, c.width, padding_idx=0)
        self.pos_emb = nn.Embedding(c.max_words + 1, c.width)
        layer = nn.TransformerEncoderLayer(
            c.width,
            c.heads,
            dim_feedforward=4 * c.width,
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(
            layer, c.layers, enable_nested_tensor=False, norm=nn.LayerNorm(c.width)
        )
        self.proj = nn.Linear(c.width, c.out_dim)
        nn.init.normal_(self.token_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        with torch.no_grad():
            self.token_emb.weight[0].zero_()

    def forward(self, ids: Tensor) -> Tensor:
        c = self.config
        if ids.ndim != 2 or ids.shape[1] != c.max_words or ids.is_floating_point():
            raise ValueError(
                f"expected integer token ids of shape (B, {c.max_words}), got "
                f"{tuple(ids.shape)} {ids.dtype}"
            )
        if (
            len(ids)
            and check_values()
            and (ids.min() < 0 or ids.max() >= self.tokenizer.vocab_size)
        ):
            raise ValueError(
                f"token ids must be in [0, {self.tokenizer.vocab_size}), got values in "
                f"[{int(ids.min())}, {int(ids.max())}]"
            )
        start = torch.full((len(ids), 1), self.start, dtype=ids.dtype, device=ids.device)
        tokens = torch.cat([start, ids], dim=1)  # (B, L + 1)
        pos = torch.arange(tokens.shape[1], device=ids.device)
        h = self.token_emb(tokens) + self.pos_emb(pos)  # (B, L + 1, W)
        h = self.blocks(h, src_key_padding_mask=tokens == 0)  # the start token is never masked
        return self.proj(h[:, 0])  # (B, D)

    def encode(self, prompts: str | Sequence[str]) -> Tensor:
        """Prompt vectors (B, D) of strings, on the encoder's device."""
        return self(self.tokenizer.encode(prompts).to(self.proj.weight.device))


@dataclass
class TextUNetConfig(Config):
    """The two configs of a :class:`TextConditionedUNet`, with what
    :class:`~genai_course.models.diffusion.Diffusion` reads from a network's config: it takes
    no class labels, and its ``cond`` is (B, ``max_words``) token ids."""

    unet: UNetConfig
    text: TextEncoderConfig

    @property
    def num_classes(self) -> int:
        return self.unet.num_classes

    @property
    def cond_dim(self) -> int:
        return self.text.max_words

    @property
    def channels(self) -> int:
        return self.unet.channels

    @property
    def downsample_factor(self) -> int:
        return self.unet.downsample_factor


class TextConditionedUNet(nn.Module):
    """``forward(x, t, y=None, cond=None)`` with ``cond`` the (B, L) token ids of the prompts:
    the U-Net conditioned on the encoder's prompt vectors; ``cond=None`` is the empty prompt."""

    def __init__(self, unet: UNet, encoder: TextEncoder):
        super().__init__()
        if unet.config.cond_dim != encoder.config.out_dim:
            raise ValueError(
                f"the U-Net's cond_dim ({unet.config.cond_dim}) must equal the text encoder's "
                f"out_dim ({encoder.config.out_dim})"
            )
        self.unet = unet
        self.encoder = encoder
        self.config = TextUNetConfig(unet.config, encoder.config)

    @classmethod
    def build(cls, unet: UNetConfig, text: TextEncoderConfig) -> TextConditionedUNet:
        """A fresh network from its two configs."""
        return cls(UNet(unet), TextEncoder(text))

    @property
    def tokenizer(self) -> WordTokenizer:
        return self.encoder.tokenizer

    def tokenize(self, prompts: str | Sequence[str]) -> Tensor:
        """(B, L) token ids of ``prompts``, on the network's device (what ``cond`` takes)."""
        return self.tokenizer.encode(prompts).to(self.encoder.proj.weight.device)

    def forward(
        self, x: Tensor, t: Tensor, y: Tensor | None = None, cond: Tensor | None = None
    ) -> Tensor:
        if cond is None:
            cond = torch.zeros(len(x), self.encoder.config.max_words, dtype=torch.long)
            cond = cond.to(x.device)
        return self.unet(x, t, y, self.encoder(cond).to(x.dtype))
