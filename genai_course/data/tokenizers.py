"""Character-level tokenization: :class:`CharTokenizer` and :func:`fold_to_vocab`."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["CharTokenizer", "fold_to_vocab"]


class CharTokenizer:
    """Maps characters to integer ids and back; the id of a character is its index in ``vocab``.

    Example:
        >>> tok = CharTokenizer.from_text("hello")
        >>> tok.vocab, tok.encode("hole").tolist(), tok.decode([3, 2])
        ('ehlo', [1, 3, 2, 0], 'ol')
    """

    def __init__(self, vocab: str) -> None:
        if not isinstance(vocab, str):
            raise TypeError(f"vocab must be a str of distinct characters, got {type(vocab)}")
        if not vocab:
            raise ValueError("vocab must hold at least one character, got an empty string")
        if len(set(vocab)) != len(vocab):
            repeated = sorted({c for c in vocab if vocab.count(c) > 1})
            raise ValueError(f"vocab characters must be distinct; repeated: {repeated}")
        self._vocab = vocab
        codes = np.frombuffer(vocab.encode("utf-32-le"), dtype=np.uint32)
        # A lookup table indexed by code point makes encoding a few numpy operations.
        self._lookup = np.full(int(codes.max()) + 1, -1, dtype=np.int64)
        self._lookup[codes] = np.arange(len(vocab))
        self._chars = np.array(list(vocab), dtype=object)

    @classmethod
    def from_text(cls, text: str, extra: str = "") -> CharTokenizer:
        """The tokenizer whose vocab is the sorted set of characters of ``text`` and ``extra``."""
        return cls("".join(sorted(set(text) | set(extra))))

    @property
    def vocab(self) -> str:
        """The characters, in id order."""
        return self._vocab

    def __len__(self) -> int:
        return len(self._vocab)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CharTokenizer):
            return NotImplemented
        return self._vocab == other._vocab

    def __hash__(self) -> int:
        return hash(self._vocab)

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab={self._vocab!r})"

    def encode(self, text: str) -> Tensor:
        """Encode ``text`` as an int64 (T,) tensor of ids, T = len(text).

        Raises:
            ValueError: naming the first character not in the vocabulary and its position.
        """
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        in_table = codes < len(self._lookup)
        ids = np.where(in_table, self._lookup[np.where(in_table, codes, 0)], -1)
        unknown = np.flatnonzero(ids < 0)
        if unknown.size:
            pos = int(unknown[0])
            char = text[pos]
            raise ValueError(
                f"character {char!r} (U+{ord(char):04X}) at position {pos} is not in the "
                f"vocabulary of {len(self)} characters"
            )
        return torch.from_numpy(ids)

    def decode(self, ids: Tensor | np.ndarray | Sequence[int]) -> str:
        """Decode a 1-D sequence of ids (tensor on any device, array or list) into a string.

        Raises:
            ValueError: if an id is outside [0, len(self)) or ``ids`` is not 1-D.
            TypeError: if the ids are not integers.
        """
        if isinstance(ids, Tensor):
            ids = ids.detach().cpu().numpy()
        array = np.asarray(ids)
        if array.size == 0:
            return ""
        if array.ndim != 1:
            raise ValueError(f"ids must be 1-D of shape (T,), got shape {array.shape}")
        if not np.issubdtype(array.dtype, np.integer):
            raise TypeError(f"ids must be integers, got dtype {array.dtype}")
        bad = np.flatnonzero((array < 0) | (array >= len(self)))
        if bad.size:
            pos = int(bad[0])
            raise ValueError(
                f"id {int(array[pos])} at position {pos} is out of range [0, {len(self)})"
            )
        return "".join(self._chars[array].tolist())

    def to_dict(self) -> dict[str, str]:
        """A JSON-serialisable description; ``CharTokenizer.from_dict`` inverts it."""
        return {"type": "CharTokenizer", "vocab": self._vocab}

    @classmethod
    def from_dict(cls, state: Mapping[str, str]) -> CharTokenizer:
        """Rebuild a tokenizer from ``to_dict()``'s output."""
        if state.get("type", "CharTokenizer") != "CharTokenizer" or "vocab" not in state:
            raise ValueError(
                f"expected a dict with type 'CharTokenizer' and a 'vocab', got keys {list(state)}"
            )
        return cls(state["vocab"])


def fold_to_vocab(text: str, vocab: str, *, fallback: str = "?") -> str:
    """``text`` with every character a tokenizer of ``vocab`` can encode, same length.

    Used to feed text from one corpus to a model trained on another (chapter 11: folk tunes and
    European names to the GPT of the Python reference). A character in ``vocab`` stays; one
    outside it is replaced by its accent-free base letter when that is in ``vocab`` (``é`` ->
    ``e``: Unicode NFKD decomposition without the combining marks), by a space if it is
    whitespace (a tab), and otherwise by ``fallback``. Each character maps to exactly one, so
    positions in the result match positions in ``text``.

    Raises:
        ValueError: if ``fallback`` is not a single character of ``vocab``.
    """
    if len(fallback) != 1 or fallback not in vocab:
        raise ValueError(f"fallback must be one character of the vocabulary, got {fallback!r}")
    allowed = set(vocab)
    space = " " if " " in allowed else fallback

    def fold(c: str) -> str:
        if c in allowed:
            return c
        base = [b for b in unicodedata.normalize("NFKD", c) if not unicodedata.combining(b)]
        if len(base) == 1 and base[0] in allowed:
            return base[0]
        return space if c.isspace() else fallback

    table = {c: fold(c) for c in set(text) if c not in allowed}
    return "".join(table.get(c, c) for c in text) if table else text
