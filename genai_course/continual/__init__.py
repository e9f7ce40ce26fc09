"""Adapting a model to new data without forgetting the old: continual learning (chapter 15).

A model trained on a sequence of tasks, one after the other and without the data of the
earlier ones, tends to lose what it knew (*catastrophic forgetting*). This module holds the
three classic remedies and the bookkeeping to measure them:

- **EWC**, elastic weight consolidation (Kirkpatrick et al., 2017): a quadratic penalty keeps
  the weights that mattered for earlier tasks, as measured by the diagonal of the Fisher
  information, near the values they had (:func:`fisher_diagonal`, :class:`EWC`);
- **experience replay**: a small memory of earlier examples, mixed into every batch
  (:class:`ReplayBuffer`);
- **learning without forgetting**, LwF (Li & Hoiem, 2018): the new model is asked to reproduce
  the old model's softened outputs on the new task's inputs (:func:`distillation_loss`).

:func:`split_tasks` cuts a labelled dataset into tasks (split MNIST: digits 0/1, then 2/3, ...),
:func:`train_sequentially` trains on them in turn with the course :class:`~genai_course.train.Trainer`
and returns the accuracy matrix ``R`` (``R[i, j]``: accuracy on task j after training task i),
summarised by :func:`average_accuracy` and :func:`forgetting`.

Models are used through ``logits_fn(model, x) -> logits`` (N, C), by default ``model(x)``, so
any classifier works, :class:`~genai_course.models.classifier.DigitClassifier` included; the
task loss is the cross-entropy of those logits, which is ``DigitClassifier.loss``.

Shapes in comments: N examples, C classes (outputs of the head), B a chunk of examples.

The modules, each with one job:

- :mod:`~genai_course.continual.tasks` -- the split into tasks, the scenarios, accuracy on a task;
- :mod:`~genai_course.continual.ewc` -- the Fisher diagonal and the EWC penalty;
- :mod:`~genai_course.continual.replay` -- the replay memory;
- :mod:`~genai_course.continual.lwf` -- the distillation term of learning without forgetting;
- :mod:`~genai_course.continual.sequential` -- the methods' settings, training on the tasks in
  turn, and the summaries of the accuracy matrix.
"""

from __future__ import annotations

from .ewc import EWC, EWC_MODES, FISHER_KINDS, fisher_diagonal
from .lwf import distillation_loss
from .replay import ReplayBuffer
from .sequential import (
    METHODS,
    ContinualConfig,
    average_accuracy,
    forgetting,
    train_sequentially,
)
from .tasks import SCENARIOS, SPLIT_MNIST_PAIRS, accuracy, split_tasks
from .tasks import LogitsFn as LogitsFn

__all__ = [
    "EWC_MODES",
    "FISHER_KINDS",
    "METHODS",
    "SCENARIOS",
    "SPLIT_MNIST_PAIRS",
    "ContinualConfig",
    "EWC",
    "ReplayBuffer",
    "accuracy",
    "average_accuracy",
    "distillation_loss",
    "fisher_diagonal",
    "forgetting",
    "split_tasks",
    "train_sequentially",
]
