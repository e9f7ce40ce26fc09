"""Tasks of a continual-learning run: split MNIST's groups of classes, the scenarios, and the
accuracy of a classifier on one task. The helpers here (the ``logits_fn`` default, the ``(x, y)``
check) are shared by the other modules of :mod:`genai_course.continual`.

Shapes in comments: N examples, C classes (outputs of the head).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ..config import check_choice

__all__ = ["SCENARIOS", "SPLIT_MNIST_PAIRS", "accuracy", "split_tasks"]

SCENARIOS = ("class", "task")
SPLIT_MNIST_PAIRS = ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))

LogitsFn = Callable[[nn.Module, Tensor], Tensor]


# ----------------------------------------------------------------------------------------------
# helpers


def _default_logits(model: nn.Module, x: Tensor) -> Tensor:
    return model(x)


def _check_xy(x: Tensor, y: Tensor, what: str) -> None:
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError(
            f"{what} must be tensors (x, y), got {type(x).__name__}, {type(y).__name__}"
        )
    if y.ndim != 1 or len(x) != len(y):
        raise ValueError(
            f"{what}: expected x (N, ...) and integer labels y (N,), got shapes "
            f"{tuple(x.shape)} and {tuple(y.shape)}"
        )


@torch.no_grad()
def accuracy(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    logits_fn: LogitsFn | None = None,
    batch_size: int = 1000,
) -> float:
    """Fraction of ``x`` (N, ...) whose arg-max logit is ``y`` (N,), in eval mode, batched."""
    _check_xy(x, y, "accuracy")
    logits_fn = logits_fn or _default_logits
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    try:
        correct = 0
        for i in range(0, len(x), batch_size):
            xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
            correct += int((logits_fn(model, xb).argmax(-1) == yb).sum())
    finally:
        model.train(was)
    return correct / max(1, len(x))


# ----------------------------------------------------------------------------------------------
# tasks


def split_tasks(
    x: Tensor,
    y: Tensor,
    pairs: Sequence[Sequence[int]] = SPLIT_MNIST_PAIRS,
    *,
    scenario: str = "class",
) -> list[tuple[Tensor, Tensor]]:
    """Cut a labelled dataset into tasks, one per group of classes (split MNIST by default).

    Task t holds the examples of ``x`` (N, ...) whose label ``y`` (N,) is in ``pairs[t]`` (a
    group of any size, pairs in split MNIST), in their original order. The scenarios differ in
    the labels (van de Ven & Tolias, 2019):

    - ``"class"`` (class-incremental, the default): labels are kept, the model has one head
      over all classes (10 for digits) and must, at the end, tell every class from every other
      without being told the task. The hardest case, and the one where forgetting is plain.
    - ``"task"`` (task-incremental labelling): labels become the position of the class in its
      group, 0..k-1 (digit 3 of ``(2, 3)`` is 1). With one output head per task, chosen by the
      task's identity, this is task-incremental learning; with a single shared k-way head (what
      :func:`train_sequentially` does) it is the *domain-incremental* case: "first or second
      digit of the pair?", asked of every digit.

    Returns:
        A list of ``(x_t, y_t)``, ``x_t`` (N_t, ...) and ``y_t`` (N_t,) int64, new tensors.

    Raises:
        ValueError: ``pairs`` is empty, a group is empty, a class is in two groups, a class has
            no example in ``y``, or ``scenario`` is unknown.
    """
    check_choice("", "scenario", SCENARIOS, value=scenario)
    _check_xy(x, y, "split_tasks")
    groups = [tuple(int(c) for c in g) for g in pairs]
    if not groups:
        raise ValueError("pairs is empty: give at least one group of classes, e.g. ((0, 1),)")
    seen: dict[int, int] = {}
    for t, group in enumerate(groups):
        if not group:
            raise ValueError(f"group {t} of pairs is empty; every task needs a class")
        for c in group:
            if c in seen:
                raise ValueError(
                    f"class {c} is in group {seen[c]} and group {t} of pairs; tasks must not share "
                    "classes"
                )
            seen[c] = t
    present = set(torch.unique(y).tolist())
    missing = sorted(c for c in seen if c not in present)
    if missing:
        raise ValueError(
            f"classes {missing} of pairs have no example in y (labels present: {sorted(present)})"
        )
    tasks = []
    for group in groups:
        classes = torch.tensor(group, device=y.device)
        keep = torch.isin(y, classes)
        y_t = y[keep].long()
        if scenario == "task":
            y_t = (y_t.unsqueeze(1) == classes).long().argmax(1)  # (N_t,) position in the group
        tasks.append((x[keep], y_t))
    return tasks
