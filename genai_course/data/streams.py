"""Training streams: the contract the :class:`~genai_course.train.Trainer` draws batches through,
and the two streams that ship.

A *training stream* is any object with three methods (:class:`TrainingStream`):

- ``next_batch()``: the next batch of an endless stream, advancing its position;
- ``state_dict()``: that position as plain numbers, saved in the Trainer's checkpoints;
- ``load_state_dict(state)``: go back to a saved position, so a resumed run sees the batches
  an unbroken one would.

Two methods are optional, and the Trainer calls them when a stream has them:
``to(device)`` (:class:`MovableStream`) moves the data once, before training, and
``shard(rank, world_size)`` (:class:`ShardableStream`) keeps one rank's share of each global
batch under data parallel training; a stream without it is refused there, since every rank
would train on the same batches. Validation data may offer ``eval_batches()``
(:class:`EvalData`), a finite pass in a fixed order, in place of being an iterable of batches.

The streams here are :class:`TensorLoader` (mini-batches sliced from tensors in memory, epochs
of seeded permutations) and :class:`TokenWindows` (random windows of one token sequence for a
language model). Both derive every batch from a seed and an integer position, so they are
reproducible and resume exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from .splits import SPLITS
from .tokenizers import CharTokenizer

__all__ = [
    "EvalData",
    "MovableStream",
    "ShardableStream",
    "TensorLoader",
    "TokenWindows",
    "TrainingStream",
    "char_windows",
    "missing_methods",
    "require_protocol",
]


# the contract ----------------------------------------------------------------------------------


@runtime_checkable
class TrainingStream(Protocol):
    """What the :class:`~genai_course.train.Trainer` accepts as a stream of training batches.

    ``isinstance(obj, TrainingStream)`` checks that the three methods exist (not their
    signatures); :func:`require_protocol` names the ones that are missing.
    """

    def next_batch(self) -> Any:
        """The next batch of the endless stream (a tensor, a tuple of tensors, ...)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """The position in the stream, as numbers the checkpoint can hold."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a position ``state_dict()`` returned."""
        ...


@runtime_checkable
class MovableStream(Protocol):
    """The optional part of a stream that moves its data to a device, once, before training."""

    def to(self, device: torch.device | str) -> Any:
        """Move the data to ``device``; return the stream."""
        ...


@runtime_checkable
class ShardableStream(Protocol):
    """The optional part of a stream needed under data parallel training (``torchrun``)."""

    def shard(self, rank: int, world_size: int) -> Any:
        """From now on yield only rank ``rank``'s share of each global batch; return the stream."""
        ...


@runtime_checkable
class EvalData(Protocol):
    """Validation data that gives its own finite pass, in a fixed order."""

    def eval_batches(self) -> Iterable[Any]:
        """Every validation batch once, in order, without moving a training position."""
        ...


def _protocol_methods(protocol: type) -> tuple[str, ...]:
    """The public methods ``protocol`` declares, in the order they are written."""
    return tuple(
        name for name, value in vars(protocol).items() if callable(value) and name[0] != "_"
    )


def missing_methods(obj: object, protocol: type) -> list[str]:
    """The methods of ``protocol`` that ``obj`` lacks (absent, ``None`` or not callable)."""
    return [name for name in _protocol_methods(protocol) if not callable(getattr(obj, name, None))]


def require_protocol(
    obj: Any, protocol: type, *, role: str = "training data", hint: str = ""
) -> Any:
    """Return ``obj`` if it has every method of ``protocol``; otherwise raise a ``TypeError``
    that names ``role`` (what ``obj`` was given as), the protocol and the missing methods, and
    ends with ``hint``."""
    missing = missing_methods(obj, protocol)
    if missing:
        wanted = ", ".join(f"{m}()" for m in _protocol_methods(protocol))
        raise TypeError(
            f"{role} of type {type(obj).__name__} does not implement the {protocol.__name__} "
            f"protocol ({wanted}): it lacks {', '.join(f'{m}()' for m in missing)}{hint}"
        )
    return obj


# the in-memory fast path -----------------------------------------------------------------------


class TensorLoader:
    """Mini-batches sliced from tensors that are already in memory (ideally on the device).

    ``TensorLoader(x, y, batch_size=128)`` yields ``(x[idx], y[idx])`` (or ``x[idx]`` for a
    single tensor).  The order of epoch ``e`` is ``randperm(N)`` from a generator seeded with
    ``seed + e``, so the position in the stream is just ``(epoch, batch)`` and a resumed run
    sees exactly the batches the uninterrupted one would.  Under data parallel training
    (:meth:`shard`) every rank draws the same permutation, takes the same global batch of
    ``batch_size * world_size`` indices and keeps every ``world_size``-th one from its rank.

    ``transform`` (e.g. :func:`genai_course.data.random_shift`) is applied to the first tensor
    of each training batch, on the device.
    """

    def __init__(
        self,
        *tensors: Tensor,
        batch_size: int,
        shuffle: bool = True,
        drop_last: bool = True,
        seed: int = 0,
        transform: Callable[[Tensor], Tensor] | None = None,
    ):
        if not tensors:
            raise ValueError("TensorLoader needs at least one tensor")
        n = len(tensors[0])
        for i, t in enumerate(tensors):
            if not isinstance(t, Tensor):
                raise TypeError(f"tensor {i} is a {type(t).__name__}, expected a torch.Tensor")
            if len(t) != n:
                raise ValueError(
                    f"all tensors need the same first dimension: tensor 0 has {n}, "
                    f"tensor {i} has {len(t)}"
                )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.tensors = tensors
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.transform = seed, transform
        self.rank, self.world_size = 0, 1
        self.epoch, self.batch = 0, 0  # position of the next batch
        self._order: Tensor | None = None
        self._order_epoch = -1

    @property
    def num_examples(self) -> int:
        return len(self.tensors[0])

    def __len__(self) -> int:
        """Batches per epoch (for this rank)."""
        global_batch = self.batch_size * self.world_size
        if self.drop_last:
            return self.num_examples // global_batch
        return math.ceil(self.num_examples / global_batch)

    def to(self, device: torch.device | str) -> TensorLoader:
        """Move the tensors to ``device`` (once, before training) and return self."""
        self.tensors = tuple(t.to(device) for t in self.tensors)
        return self

    def shard(self, rank: int, world_size: int) -> TensorLoader:
        """Make this loader yield only rank ``rank``'s share of each global batch."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.rank, self.world_size = rank, world_size
        return self

    def _epoch_order(self, epoch: int) -> Tensor:
        if self._order_epoch != epoch:
            if self.shuffle:
                g = torch.Generator().manual_seed(self.seed + epoch)
                order = torch.randperm(self.num_examples, generator=g)
            else:
                order = torch.arange(self.num_examples)
            self._order = order.to(self.tensors[0].device)
            self._order_epoch = epoch
        return self._order

    def next_batch(self) -> Tensor | tuple[Tensor, ...]:
        """The next batch of the endless stream (epochs follow each other)."""
        if len(self) == 0:
            raise ValueError(
                f"{self.num_examples} examples cannot fill one batch of "
                f"{self.batch_size * self.world_size} with drop_last=True"
            )
        if self.batch >= len(self):
            self.epoch, self.batch = self.epoch + 1, 0
        order = self._epoch_order(self.epoch)
        global_batch = self.batch_size * self.world_size
        idx = order[self.batch * global_batch : (self.batch + 1) * global_batch]
        idx = idx[self.rank :: self.world_size]
        self.batch += 1
        out = tuple(t[idx] for t in self.tensors)
        if self.transform is not None:
            out = (self.transform(out[0]),) + out[1:]
        return out[0] if len(out) == 1 else out

    def __iter__(self) -> Iterator[Tensor | tuple[Tensor, ...]]:
        """One pass over the data in order (for evaluation); does not move the stream position."""
        step = self.batch_size
        n = self.num_examples
        stop = n - n % step if self.drop_last else n
        for start in range(0, stop, step):
            out = tuple(t[start : start + step] for t in self.tensors)
            yield out[0] if len(out) == 1 else out

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.batch, self.seed = (
            int(state["epoch"]),
            int(state["batch"]),
            int(state["seed"]),
        )


# token streams for language models ----------------------------------------------------------


class TokenWindows:
    """Random windows of a token sequence as (inputs, next-token targets) batches.

    ``next_batch()`` returns x, y of shape (batch_size, block_size) with ``y[:, t] = x[:, t+1]``
    in the original sequence. Batch ``i`` draws its window starts from a generator seeded with
    ``(seed, i)``, so the stream position is one integer and a resumed run sees exactly the
    batches an unbroken one would. The :class:`~genai_course.train.Trainer` accepts it as
    training data; under data parallel training (:meth:`shard`) every rank draws the same
    global batch of ``batch_size * world_size`` windows and keeps its share.
    """

    def __init__(self, tokens: Tensor, *, block_size: int, batch_size: int, seed: int = 0):
        if tokens.ndim != 1 or tokens.dtype != torch.long:
            raise ValueError(
                f"tokens must be a 1-D int64 tensor, got {tuple(tokens.shape)} {tokens.dtype}"
            )
        if len(tokens) < block_size + 2:
            raise ValueError(f"{len(tokens)} tokens are too few for windows of {block_size}")
        self.tokens, self.block_size, self.batch_size = tokens, block_size, batch_size
        self.seed, self.index = seed, 0
        self.rank, self.world_size = 0, 1

    def to(self, device: str | torch.device) -> TokenWindows:
        self.tokens = self.tokens.to(device)
        return self

    def shard(self, rank: int, world_size: int) -> TokenWindows:
        self.rank, self.world_size = rank, world_size
        return self

    def next_batch(self) -> tuple[Tensor, Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.index)
        self.index += 1
        n = self.batch_size * self.world_size
        starts = torch.randint(len(self.tokens) - self.block_size - 1, (n,), generator=g)
        starts = starts[self.rank :: self.world_size].to(self.tokens.device)
        offsets = torch.arange(self.block_size + 1, device=self.tokens.device)
        windows = self.tokens[starts[:, None] + offsets]  # (B, block_size + 1)
        return windows[:, :-1], windows[:, 1:]

    def eval_batches(self, max_batches: int | None = None):
        """Consecutive, non-overlapping windows covering the sequence in order (for an exact
        validation loss over every token, up to the last partial window)."""
        bs, n = self.block_size, len(self.tokens) - 1
        starts = torch.arange(0, n - bs + 1, bs, device=self.tokens.device)
        offsets = torch.arange(bs + 1, device=self.tokens.device)
        for i, chunk in enumerate(starts.split(self.batch_size)):
            if max_batches is not None and i >= max_batches:
                break
            w = self.tokens[chunk[:, None] + offsets]
            yield w[:, :-1], w[:, 1:]

    def state_dict(self) -> dict[str, int]:
        return {"index": self.index, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.index, self.seed = int(state["index"]), int(state["seed"])


def char_windows(
    tok: CharTokenizer,
    text_of: Callable[[str], str],
    block_size: int,
    batch_size: int,
    seed: int = 0,
) -> dict[str, TokenWindows]:
    """Split -> :class:`TokenWindows` of ``text_of(split)`` encoded with ``tok``, for every split
    of ``SPLITS`` (windows of ``block_size`` tokens, batches of ``batch_size``, one ``seed``)."""
    return {
        s: TokenWindows(
            tok.encode(text_of(s)), block_size=block_size, batch_size=batch_size, seed=seed
        )
        for s in SPLITS
    }
