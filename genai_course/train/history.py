"""What training records and the hooks into the loop: :class:`History` and the
:class:`Callback` protocol, with :class:`EveryN` for work every few steps."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .trainer import Trainer


class History:
    """Metrics recorded during training: a list of ``{"step": s, name: value, ...}`` rows."""

    def __init__(self, records: list[dict[str, float]] | None = None):
        self.records: list[dict[str, float]] = list(records or [])

    def append(self, step: int, **values: float) -> None:
        self.records.append({"step": step, **{k: float(v) for k, v in values.items()}})

    def keys(self) -> list[str]:
        seen: dict[str, None] = {}
        for r in self.records:
            seen.update(dict.fromkeys(k for k in r if k != "step"))
        return list(seen)

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """The steps at which ``key`` was recorded and its values."""
        if key not in self.keys():
            raise KeyError(f"no metric {key!r} in the history; recorded: {self.keys()}")
        rows = [r for r in self.records if key in r]
        return [int(r["step"]) for r in rows], [r[key] for r in rows]

    def last(self, key: str) -> float:
        return self.series(key)[1][-1]

    def best(self, key: str, mode: str = "min") -> float:
        values = self.series(key)[1]
        return min(values) if mode == "min" else max(values)

    def plot(self, keys: Sequence[str] | None = None, ax=None, logy: bool = False):
        """Plot metrics against the step (train and validation on one axis); returns the axis."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3.5))
        keys = list(keys) if keys is not None else [k for k in self.keys() if "loss" in k]
        for key in keys:
            steps, values = self.series(key)
            ax.plot(steps, values, marker="o" if len(steps) < 30 else None, ms=3, label=key)
        ax.set_xlabel("step")
        if logy:
            ax.set_yscale("log")
        ax.legend()
        ax.grid(alpha=0.3)
        return ax

    def __len__(self) -> int:
        return len(self.records)


class Callback:
    """Hooks into the training loop; override the ones you need.  ``on_checkpoint`` gets the
    file each checkpoint was written to, on the rank that wrote it (rank 0)."""

    def on_train_start(self, trainer: Trainer) -> None: ...
    def on_step_end(self, trainer: Trainer) -> None: ...
    def on_eval_end(self, trainer: Trainer, metrics: dict[str, float]) -> None: ...
    def on_train_end(self, trainer: Trainer) -> None: ...
    def on_checkpoint(self, trainer: Trainer, path: Path) -> None: ...


class EveryN(Callback):
    """Call ``fn(trainer)`` every ``n`` steps (and at the end), e.g. to draw samples."""

    def __init__(self, n: int, fn: Callable[[Trainer], None], at_end: bool = True):
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self.n, self.fn, self.at_end = n, fn, at_end

    def on_step_end(self, trainer: Trainer) -> None:
        if trainer.step % self.n == 0:
            self.fn(trainer)

    def on_train_end(self, trainer: Trainer) -> None:
        if self.at_end and trainer.step % self.n != 0:
            self.fn(trainer)
