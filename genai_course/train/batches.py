"""The Trainer's view of its data: any training data as a stream, validation data as
batches, and batches moved to the device.  :class:`TensorLoader` and the stream contract
live in :mod:`genai_course.data.streams`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor

from ..data.streams import (
    EvalData,
    TensorLoader,
    TrainingStream,
    missing_methods,
    require_protocol,
)


class _IterableStream:
    """An endless stream over any re-iterable (e.g. a DataLoader), restarting it each epoch.

    Resuming does not reproduce the exact batch order of an arbitrary iterable; use
    :class:`TensorLoader` (or a seeded sampler) when that matters.
    """

    def __init__(self, data: Iterable):
        self.data = data
        self._it: Iterator | None = None
        self.epoch = 0

    def next_batch(self) -> Any:
        if self._it is None:
            self._it = iter(self.data)
        try:
            return next(self._it)
        except StopIteration:
            self.epoch += 1
            self._it = iter(self.data)
            try:
                return next(self._it)
            except StopIteration:
                raise ValueError("the training data yielded no batch") from None

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = int(state.get("epoch", 0))


def _as_stream(data: Any, batch_size: int, shuffle: bool, seed: int) -> TrainingStream:
    """The training data as a :class:`~genai_course.data.TrainingStream` (``next_batch()``,
    ``state_dict()``, ``load_state_dict()``; optionally ``to(device)`` and ``shard(rank,
    world_size)``), such as :class:`TensorLoader` or :class:`genai_course.data.TokenWindows`;
    tensors are wrapped in a TensorLoader and other iterables restart at each epoch."""
    if isinstance(data, TrainingStream):
        return data
    if isinstance(data, Tensor):
        return TensorLoader(data, batch_size=batch_size, shuffle=shuffle, seed=seed)
    if isinstance(data, tuple) and data and all(isinstance(t, Tensor) for t in data):
        return TensorLoader(*data, batch_size=batch_size, shuffle=shuffle, seed=seed)
    missing = missing_methods(data, TrainingStream)
    if "next_batch" in missing and isinstance(data, Iterable):
        return _IterableStream(data)  # an iterable of batches, e.g. a DataLoader
    if missing == ["next_batch", "state_dict", "load_state_dict"]:
        raise TypeError(
            f"training data must be a Tensor, a tuple of Tensors, a TrainingStream "
            f"(TensorLoader, TokenWindows) or an iterable of batches, got {type(data).__name__}"
        )
    # Some of a stream's methods but not all: say which are missing.
    return require_protocol(data, TrainingStream, role="training data")


def _check_eval_data(data: Any) -> None:
    """Raise a ``TypeError`` unless ``data`` is something :func:`_eval_batches` can iterate."""
    if isinstance(data, (Tensor, tuple, EvalData, Iterable)):
        return
    require_protocol(
        data, EvalData, role="validation data", hint="; or give tensors or an iterable of batches"
    )


def _eval_batches(data: Any, batch_size: int) -> Iterable:
    """Every batch of validation ``data`` once, in order: an :class:`EvalData`'s
    ``eval_batches()``, tensors in slices of ``batch_size``, or the iterable itself."""
    _check_eval_data(data)
    if isinstance(data, EvalData):
        return data.eval_batches()
    if isinstance(data, Tensor):
        return TensorLoader(data, batch_size=batch_size, shuffle=False, drop_last=False)
    if isinstance(data, tuple) and data and all(isinstance(t, Tensor) for t in data):
        return TensorLoader(*data, batch_size=batch_size, shuffle=False, drop_last=False)
    return data


def move_to(batch: Any, device: torch.device) -> Any:
    """Move every tensor in a (nested) batch to ``device``; tensors already there are untouched."""
    if isinstance(batch, Tensor):
        return batch if batch.device == device else batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    return batch


def _batch_len(batch: Any) -> int:
    if isinstance(batch, Tensor):
        return len(batch)
    if isinstance(batch, (list, tuple)) and batch:
        return _batch_len(batch[0])
    if isinstance(batch, dict) and batch:
        return _batch_len(next(iter(batch.values())))
    return 1
