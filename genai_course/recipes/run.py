"""What every recipe shares: the record of a recipe, the options of a run, and the fit.

A :class:`Recipe` is one record: its name (``genai-course train NAME``), the checkpoint names
it writes, what it is, and the function that trains it.  :class:`RunOptions` carries the
settings of ``genai-course train`` into that function, and :meth:`RunOptions.ship` saves a
checkpoint under a name the record holds, with the command that reproduces it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..pretrained import MANIFEST, save_pretrained
from ..train import Callback, Trainer

__all__ = ["Recipe", "RunOptions"]


@dataclass(frozen=True)
class Recipe:
    """One shipped recipe.

    Attributes:
        name: what ``genai-course train NAME`` takes, and what the manifest's command names.
        checkpoints: the checkpoint names it writes, in the order it writes them.
        description: one line for ``genai-course train --help`` and ``info``.
        train: ``train(opts) -> metrics``; it saves each checkpoint with :meth:`RunOptions.ship`.
        sample: optional ``sample(n, seed) -> Tensor`` of the shipped checkpoint.
    """

    name: str
    checkpoints: tuple[str, ...]
    description: str
    train: Callable[[RunOptions], dict[str, Any]]
    sample: Callable[..., Any] | None = None

    def __post_init__(self) -> None:
        if not self.checkpoints:
            raise ValueError(f"recipe {self.name!r} must name the checkpoints it writes")

    def checkpoint(self, name: str | None = None) -> str:
        """The checkpoint ``name`` (checked against :attr:`checkpoints`), or with no name the
        only checkpoint of a one-checkpoint recipe."""
        if name is None:
            if len(self.checkpoints) != 1:
                raise ValueError(
                    f"recipe {self.name!r} writes {list(self.checkpoints)}: name the one to ship"
                )
            return self.checkpoints[0]
        if name not in self.checkpoints:
            raise ValueError(f"recipe {self.name!r} writes {list(self.checkpoints)}, not {name!r}")
        return name


@dataclass
class RunOptions:
    """How to run a recipe: the settings of ``genai-course train`` that every recipe shares."""

    profile: str
    out: str | Path | None = None  # folder for the .safetensors and manifest.json; None: no file
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False
    progress: bool = True
    checkpoint_dir: str | None = None  # resumable Trainer checkpoints (last.pt per trainer)
    # steps between checkpoints; 0: only at the end; None: every 500 steps when checkpoint_dir
    # is set (else 0), the default of genai-course train
    checkpoint_every: int | None = None
    resume: bool = False  # continue each trainer from its last.pt in checkpoint_dir, if any
    callbacks: Sequence[Callback] = ()  # added to every Trainer the run fits (timers, probes)
    # the files ship wrote, in order (the .safetensors, then the manifest, per checkpoint)
    written: list[Path] = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.resume and self.checkpoint_dir is None:
            raise ValueError("resume=True needs checkpoint_dir: the folder of the run to continue")
        if self.checkpoint_every is None:
            self.checkpoint_every = 500 if self.checkpoint_dir is not None else 0
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0, got {self.checkpoint_every}")

    def trainer_settings(self, stage: str | None = None) -> dict[str, Any]:
        """The :class:`TrainConfig` fields these options set.

        A recipe with several trainers names each ``stage``, so that each keeps its own
        ``last.pt`` in a sub-folder of ``checkpoint_dir`` and resumes from its own.
        """
        folder = self.checkpoint_dir
        if folder is not None and stage is not None:
            folder = str(Path(folder) / stage)
        return dict(
            seed=self.seed,
            device=self.device,
            precision=self.precision,
            compile=self.compile,
            progress=self.progress,
            checkpoint_dir=folder,
            checkpoint_every=self.checkpoint_every if folder is not None else 0,
        )

    def ship(
        self,
        model: Any,
        recipe: Recipe,
        metrics: dict[str, Any],
        notes: str,
        *,
        checkpoint: str | None = None,
    ) -> None:
        """Save ``model`` as the ``recipe``'s checkpoint (its only one, or ``checkpoint``, which
        must be one the record names) in ``out`` (if set), with the recipe's command and its
        metrics (call it on rank 0 only); the files go to ``written``."""
        name = recipe.checkpoint(checkpoint)
        if self.out is not None:
            entry = save_pretrained(
                model,
                name,
                self.out,
                command=self.command(recipe.name),
                metrics=metrics,
                notes=notes,
            )
            self.written += [Path(self.out) / entry["file"], Path(self.out) / MANIFEST]

    def command(self, recipe: str) -> str:
        """The command line that reproduces this run (recorded in the manifest)."""
        extra = "" if self.precision == "auto" else f" --precision {self.precision}"
        extra += " --compile" if self.compile else ""
        return (
            f"genai-course train {recipe} --profile {self.profile} --seed {self.seed}{extra} "
            f"--out {self.out}"
        )


def _fit(trainer: Trainer, opts: RunOptions) -> dict[str, Any]:
    """Run ``trainer.fit()``, resumed from its ``last.pt`` when ``opts.resume``; return the
    facts of the run that every manifest records (a resumed run's seconds are this leg's).
    ``opts.callbacks`` join the trainer's own for the run."""
    trainer.callbacks += [cb for cb in opts.callbacks if cb not in trainer.callbacks]
    start = time.perf_counter()
    trainer.fit(resume=opts.resume)
    return {
        "steps": trainer.step,
        "train_seconds": round(time.perf_counter() - start, 1),
        "device": str(trainer.device),
        "world_size": trainer.world_size,
    }
