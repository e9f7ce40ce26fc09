"""Experience replay: a small memory of earlier tasks' examples (:class:`ReplayBuffer`), a
reservoir sample, class-balanced or not, whose choices are seeded and resumable."""

from __future__ import annotations

import bisect
from typing import Any

import torch
from torch import Tensor

from .tasks import _check_xy

__all__ = ["ReplayBuffer"]


class ReplayBuffer:
    """A memory of at most ``capacity`` labelled examples, a uniform sample of all it was shown.

    With ``num_classes=None`` it is one reservoir (Vitter's algorithm R): after n examples have
    been added, each is held with probability ``capacity / n``, so classes are held in the
    proportions in which they came. With ``num_classes=C`` (labels in 0..C-1) the memory is
    *class-balanced*: each class seen so far gets an equal quota, ``capacity // m`` for m
    classes seen (the first ``capacity % m`` classes by label one more), and within a class a
    reservoir keeps a uniform sample of that class's examples. When a new class arrives, the
    quotas shrink and each class over its quota drops examples chosen uniformly at random, which
    leaves the rest a uniform sample. Once every seen class has filled its quota, ``len`` is
    ``capacity`` and the class counts differ by at most one.

    The choices of :meth:`add` come from the buffer's own generator, seeded with ``seed`` and
    saved by :meth:`state_dict`, so a resumed buffer makes the same choices as an unbroken one.
    :meth:`sample` draws from the generator it is given, by default the global one (which the
    :class:`~genai_course.train.Trainer` checkpoints).

    The examples are stored in a (capacity, ...) tensor allocated at the first :meth:`add`, on
    the device and with the dtype of that first ``x``.
    """

    def __init__(self, capacity: int, num_classes: int | None = None, seed: int = 0):
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be an integer >= 1, got {capacity!r}")
        if num_classes is not None and (
            isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
        ):
            raise ValueError(f"num_classes must be an integer >= 1 or None, got {num_classes!r}")
        self.capacity, self.num_classes, self.seed = capacity, num_classes, seed
        self._generator = torch.Generator().manual_seed(seed)
        self._x: Tensor | None = None  # (capacity, ...)
        self._label = [-1] * capacity  # label of each slot; -1: free
        self._seen: dict[int, int] = {}  # examples shown, per bucket (class, or 0 unbalanced)
        self._rebuild_slots()

    # bookkeeping: slots of each bucket and free slots, sorted lists of indices into _x

    def _bucket(self, label: int) -> int:
        return label if self.num_classes is not None else 0

    def _rebuild_slots(self) -> None:
        self._slots: dict[int, list[int]] = {b: [] for b in self._seen}
        self._free: list[int] = []
        for i, label in enumerate(self._label):
            if label < 0:
                self._free.append(i)
            else:
                self._slots.setdefault(self._bucket(label), []).append(i)
        self._occupied: Tensor | None = None

    def _quota(self, bucket: int) -> int:
        buckets = sorted(self._seen)
        base, extra = divmod(self.capacity, len(buckets))
        return base + (buckets.index(bucket) < extra)

    def _randint(self, high: int) -> int:
        return int(torch.randint(high, (), generator=self._generator))

    def _free_slot(self, slot: int, bucket: int, plan: dict[int, int]) -> None:
        self._slots[bucket].remove(slot)
        bisect.insort(self._free, slot)
        self._label[slot] = -1
        plan.pop(slot, None)

    def __len__(self) -> int:
        return self.capacity - len(self._free)

    def class_counts(self) -> Tensor:
        """Examples held per label, int64 (num_classes,) (or up to the largest label held)."""
        labels = torch.tensor([c for c in self._label if c >= 0], dtype=torch.int64)
        return torch.bincount(labels, minlength=self.num_classes or 0)

    @torch.no_grad()
    def add(self, x: Tensor, y: Tensor) -> None:
        """Show the buffer examples ``x`` (N, ...) with labels ``y`` (N,), in order."""
        _check_xy(x, y, "ReplayBuffer.add")
        if self._x is None:
            self._x = x.new_zeros((self.capacity, *x.shape[1:]))
        elif x.shape[1:] != self._x.shape[1:]:
            raise ValueError(
                f"examples must have shape (N, {', '.join(map(str, self._x.shape[1:]))}) like the "
                f"first ones added, got {tuple(x.shape)}"
            )
        labels = y.long().tolist()
        if labels and self.num_classes is not None:
            bad = [c for c in labels if not 0 <= c < self.num_classes]
            if bad:
                raise ValueError(
                    f"labels must be in 0..{self.num_classes - 1} (num_classes={self.num_classes}), "
                    f"got {bad[0]}"
                )
        plan: dict[int, int] = {}  # slot -> index into x of the example it will hold
        for j, label in enumerate(labels):
            b = self._bucket(label)
            if b not in self._seen:  # a new class: every quota shrinks
                self._seen[b] = 0
                self._slots[b] = []
                for other, slots in self._slots.items():
                    for _ in range(len(slots) - self._quota(other)):
                        self._free_slot(slots[self._randint(len(slots))], other, plan)
            self._seen[b] += 1
            slots = self._slots[b]
            if len(slots) < self._quota(b):
                slot = self._free.pop(0)
                bisect.insort(slots, slot)
            else:
                r = self._randint(self._seen[b])  # keep with probability quota / seen
                if r >= len(slots):
                    continue
                slot = slots[r]
            self._label[slot] = label
            plan[slot] = j
        if plan:
            slots = torch.tensor(list(plan), device=self._x.device)
            index = torch.tensor(list(plan.values()), device=x.device)
            self._x[slots] = x[index].to(self._x.device, self._x.dtype)
        self._occupied = None

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``n`` examples drawn uniformly, with replacement: x (n, ...) and y (n,) int64, on the
        buffer's device. ``generator`` is a CPU generator; default the global one."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if len(self) == 0:
            raise ValueError("the replay buffer is empty: add examples before sampling")
        if self._occupied is None:  # (len,) slots in use and their labels, until the next add
            held = [(i, c) for i, c in enumerate(self._label) if c >= 0]
            self._occupied = torch.tensor([i for i, _ in held], device=self._x.device)
            self._occupied_labels = torch.tensor([c for _, c in held], device=self._x.device)
        pick = torch.randint(len(self._occupied), (n,), generator=generator)  # (n,) on the CPU
        pick = pick.to(self._x.device)
        return self._x[self._occupied[pick]], self._occupied_labels[pick]

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: tensors, numbers and lists only."""
        return {
            "capacity": self.capacity,
            "num_classes": self.num_classes,
            "seed": self.seed,
            "x": self._x,
            "labels": torch.tensor(self._label, dtype=torch.int64),
            "seen": {int(b): int(s) for b, s in self._seen.items()},
            "generator": self._generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (state["capacity"], state["num_classes"]) != (self.capacity, self.num_classes):
            raise ValueError(
                f"the state is of a buffer with capacity={state['capacity']} and "
                f"num_classes={state['num_classes']}, this one has capacity={self.capacity} and "
                f"num_classes={self.num_classes}"
            )
        self.seed = int(state["seed"])
        self._x = None if state["x"] is None else state["x"].clone()
        self._label = [int(c) for c in state["labels"].tolist()]
        self._seen = {int(b): int(s) for b, s in state["seen"].items()}
        self._generator.set_state(state["generator"])
        self._rebuild_slots()
