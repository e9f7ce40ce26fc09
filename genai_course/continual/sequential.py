"""Training on a sequence of tasks: the methods' settings (:class:`ContinualConfig`),
:func:`train_sequentially`, which returns the accuracy matrix ``R``, and its summaries
:func:`average_accuracy` and :func:`forgetting`.

Shapes in comments: N examples, C classes (outputs of the head), K the columns of the heads.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import Config, check_choice, check_positive, check_range
from ..train import TrainConfig, Trainer
from .ewc import EWC, EWC_MODES, FISHER_KINDS, fisher_diagonal
from .lwf import distillation_loss
from .replay import ReplayBuffer
from .tasks import LogitsFn, _check_xy, _default_logits, accuracy

__all__ = [
    "METHODS",
    "ContinualConfig",
    "average_accuracy",
    "forgetting",
    "train_sequentially",
]

METHODS = ("naive", "ewc", "replay", "lwf")


@dataclass
class ContinualConfig(Config):
    """The settings of the methods of :func:`train_sequentially`; each method reads its own."""

    # EWC. The Fisher of a classifier that fits its task well is small (its per-example
    # gradients are), so lambda is large; it trades old tasks (large) against the new (small)
    ewc_lambda: float = 1000.0
    ewc_mode: str = "separate"  # separate: one penalty per past task (Kirkpatrick et al.);
    # online: one anchor and a running sum of Fishers (Schwarz et al., 2018); see EWC
    ewc_gamma: float = 1.0  # online mode: the old Fisher is multiplied by gamma at each task
    fisher: str = "true"  # empirical | true | exact; see fisher_diagonal
    fisher_samples: int | None = 500  # examples of each task the Fisher averages; None: all
    # replay
    replay_capacity: int = (
        200  # examples kept from all past tasks together, shared out per class seen
    )
    replay_balanced: bool = True  # equal share of the memory per class seen
    replay_batch_size: int | None = None  # replayed examples per step; None: the batch size
    # learning without forgetting
    lwf_alpha: float = 1.0  # weight of the distillation term (Li & Hoiem's lambda_o)
    lwf_temperature: float = 2.0  # T; Li & Hoiem use 2
    seed: int = 0  # the replay memory's choices and the Fisher's examples and labels

    def validate(self) -> None:
        check_choice(self, "ewc_mode", EWC_MODES)
        check_choice(self, "fisher", FISHER_KINDS)
        check_positive(self, "ewc_lambda", "lwf_alpha", minimum=0)
        check_range(self, "ewc_gamma", 0.0, 1.0, closed="both")
        check_positive(self, "replay_capacity")
        check_positive(self, "lwf_temperature", minimum=0, strict=True)
        for name in ("fisher_samples", "replay_batch_size"):  # None: all, the batch size
            if getattr(self, name) is not None:
                check_positive(self, name)


def _only(logits: Tensor, keep: Tensor) -> Tensor:
    """logits (N, C) with the columns where ``keep`` (N, K) or (K,), K <= C, is False (or
    beyond K) set to -inf."""
    C, K = logits.shape[-1], keep.shape[-1]
    if K > C:
        raise ValueError(f"the heads name class {K - 1}, but the model has only {C} outputs")
    if K < C:
        keep = F.pad(keep, (0, C - K), value=False)
    return logits.masked_fill(~keep, float("-inf"))


def _head_logits(logits_fn: LogitsFn, keep: Tensor) -> LogitsFn:
    """``logits_fn`` restricted to one task's head: columns where ``keep`` (K,) is False are -inf."""

    def head(model: nn.Module, x: Tensor) -> Tensor:
        logits = logits_fn(model, x)
        return _only(logits, keep.to(logits.device))

    return head


def _head_masks(heads: Sequence[Sequence[int]], tasks: Sequence[tuple[Tensor, Tensor]]) -> Tensor:
    """(C, C) bool: row c marks the columns of the head that holds class c."""
    groups = [tuple(int(c) for c in h) for h in heads]
    if len(groups) != len(tasks):
        raise ValueError(f"heads has {len(groups)} groups, expected one per task ({len(tasks)})")
    flat = [c for g in groups for c in g]
    if not all(groups) or len(set(flat)) != len(flat) or min(flat) < 0:
        raise ValueError(f"heads must be non-empty groups of distinct class ids >= 0, got {groups}")
    num_classes = max(flat) + 1
    allowed = torch.zeros(num_classes, num_classes, dtype=torch.bool)
    for g in groups:
        for c in g:
            allowed[c, list(g)] = True
    for t, ((_, y), g) in enumerate(zip(tasks, groups, strict=True)):
        stray = sorted(set(torch.unique(y).tolist()) - set(g))
        if stray:
            raise ValueError(
                f"task {t} has labels {stray} outside its head {g}: with heads, keep the class "
                "labels (split_tasks(..., scenario='class'))"
            )
    return allowed


def _task_loss_fn(
    method: str,
    logits_fn: LogitsFn,
    settings: ContinualConfig,
    batch_size: int,
    ewc: EWC | None,
    buffer: ReplayBuffer | None,
    old_model: nn.Module | None,
    old_classes: list[int],
    allowed: Tensor | None = None,
    old_heads: Sequence[Sequence[int]] = (),
) -> Callable[[nn.Module, Any], tuple[Tensor, dict[str, Tensor]]]:
    """``loss_fn(model, batch)`` for the Trainer: the task's cross-entropy plus the method's term.

    With ``allowed`` (C, C) bool (task-incremental heads), the logits of an example with label
    c keep only the columns ``allowed[c]`` of its task's head; LwF then distils each old head
    (``old_heads``) on its own columns."""

    def loss_fn(model: nn.Module, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        x, y = batch
        if method == "replay" and buffer is not None and len(buffer):
            # the replayed examples join the batch: one forward pass, one mean over both
            xr, yr = buffer.sample(settings.replay_batch_size or batch_size)
            x, y = torch.cat([x, xr.to(x.device, x.dtype)]), torch.cat([y, yr.to(y.device)])
        raw = logits_fn(model, x)  # (N, C)
        logits = raw if allowed is None else _only(raw, allowed.to(raw.device)[y])
        ce = F.cross_entropy(logits, y)
        logs = {"ce": ce.detach(), "acc": (logits.argmax(-1) == y).float().mean()}
        loss = ce
        if method == "ewc" and ewc is not None and len(ewc):
            penalty = ewc.penalty(model)
            loss = loss + penalty
            logs["ewc_penalty"] = penalty.detach()
        if method == "lwf" and old_model is not None:
            with torch.no_grad():
                old_logits = logits_fn(old_model, x)
            if allowed is None:  # one head: distil the old classes against each other
                distill = distillation_loss(
                    raw, old_logits, settings.lwf_temperature, classes=old_classes
                )
            else:  # one head per task: distil each old head's own softmax (Li & Hoiem)
                distill = sum(
                    distillation_loss(raw, old_logits, settings.lwf_temperature, classes=h)
                    for h in old_heads
                )
            loss = loss + settings.lwf_alpha * distill
            logs["distill"] = distill.detach()
        return loss, logs

    return loss_fn


def train_sequentially(
    model: nn.Module,
    tasks: Sequence[tuple[Tensor, Tensor]],
    config: TrainConfig,
    method: str = "naive",
    *,
    settings: ContinualConfig | None = None,
    eval_sets: Sequence[tuple[Tensor, Tensor]] | None = None,
    logits_fn: LogitsFn | None = None,
    heads: Sequence[Sequence[int]] | None = None,
    on_task_end: Callable[[int, Trainer], None] | None = None,
) -> np.ndarray:
    """Train ``model`` on ``tasks`` one after another and return the accuracy matrix.

    Each task is trained by a new :class:`~genai_course.train.Trainer` (a fresh optimiser, as
    a model deployed and later updated would get) for ``config.steps`` steps, with
    ``config.seed + t`` as the seed of task t. The loss of a batch :math:`(x, y)` is the
    cross-entropy of ``logits_fn(model, x)`` plus what ``method`` adds:

    - ``"naive"``: nothing: plain fine-tuning, the baseline that forgets;
    - ``"ewc"``: the :class:`EWC` penalty of all earlier tasks, each consolidated with
      :func:`fisher_diagonal` on ``settings.fisher_samples`` of its training examples;
    - ``"replay"``: a batch of ``settings.replay_batch_size`` examples from a
      :class:`ReplayBuffer` of the earlier tasks joins each batch (its cross-entropy is over
      the concatenation);
    - ``"lwf"``: ``settings.lwf_alpha`` times :func:`distillation_loss` between a frozen copy of
      the model as it was before the task and the model, on the batch, over the output columns
      of the labels of the earlier tasks.

    Args:
        model: a classifier; trained in place.
        tasks: training data ``(x_t, y_t)`` of each task, e.g. from :func:`split_tasks`.
        config: how to train each task (steps, batch size, learning rate, device, ...).
        method: ``"naive"``, ``"ewc"``, ``"replay"`` or ``"lwf"``.
        settings: the methods' settings; default ``ContinualConfig()``.
        eval_sets: ``(x, y)`` of each task to measure accuracy on (the test splits); default the
            training data of the tasks.
        logits_fn: ``logits_fn(model, x) -> logits`` (N, C); default ``model(x)``.
        heads: task-incremental learning: ``heads[t]`` lists the classes (output columns) of
            task t, e.g. ``SPLIT_MNIST_PAIRS``, and the model is told each example's task.
            Its output is one head per task on a shared body: an example's logits outside
            its task's columns are set to -inf in training (replayed examples included), in
            the Fisher of EWC and in evaluation on ``eval_sets[j]`` (task j's columns); LwF
            distils each old head separately. Labels must be the class ids
            (``split_tasks(..., scenario="class")``). Default ``None``: one head over all
            classes (class-incremental, or domain-incremental with ``scenario="task"``).
        on_task_end: called as ``on_task_end(t, trainer)`` after task t is trained and
            evaluated, e.g. to keep ``trainer.history`` or save the model.

    Returns:
        ``R``, float64 (T, T): ``R[i, j]`` is the accuracy on ``eval_sets[j]`` after training on
        tasks 0..i. Its lower triangle and diagonal show forgetting; the upper triangle is the
        accuracy on tasks not yet seen.
    """
    check_choice("", "method", METHODS, value=method)
    settings = settings or ContinualConfig()
    logits_fn = logits_fn or _default_logits
    tasks = list(tasks)
    if not tasks:
        raise ValueError("tasks is empty: give at least one (x, y) task")
    for t, (x, y) in enumerate(tasks):
        _check_xy(x, y, f"task {t}")
    eval_sets = tasks if eval_sets is None else list(eval_sets)
    if len(eval_sets) != len(tasks):
        raise ValueError(
            f"eval_sets has {len(eval_sets)} entries, expected one per task ({len(tasks)})"
        )
    n_tasks = len(tasks)
    allowed = None if heads is None else _head_masks(heads, tasks)
    # per task, the logits of its head (row c of allowed marks the head holding class c)
    head_fns = [] if heads is None else [_head_logits(logits_fn, allowed[h[0]]) for h in heads]
    ewc = (
        EWC(settings.ewc_lambda, mode=settings.ewc_mode, gamma=settings.ewc_gamma)
        if method == "ewc"
        else None
    )
    buffer = None
    if method == "replay":
        num_classes = int(max(int(y.max()) for _, y in tasks)) + 1
        buffer = ReplayBuffer(
            settings.replay_capacity,
            num_classes if settings.replay_balanced else None,
            seed=settings.seed,
        )
    old_model: nn.Module | None = None
    old_classes: list[int] = []
    R = np.zeros((n_tasks, n_tasks))
    for t, (x, y) in enumerate(tasks):
        loss_fn = _task_loss_fn(
            method,
            logits_fn,
            settings,
            config.batch_size,
            ewc,
            buffer,
            old_model,
            old_classes,
            allowed,
            [] if heads is None else list(heads[:t]),
        )
        task_config = dataclasses.replace(config, seed=config.seed + t)
        trainer = Trainer(model, (x, y), task_config, loss_fn=loss_fn)
        trainer.fit()
        for j, (xe, ye) in enumerate(eval_sets):
            fn = head_fns[j] if head_fns else logits_fn
            R[t, j] = accuracy(model, xe, ye, logits_fn=fn, batch_size=config.batch_size)
        if on_task_end is not None:
            on_task_end(t, trainer)
        if t == n_tasks - 1:
            break
        # remember what task t taught, for the tasks that follow
        if ewc is not None:
            n = len(x) if settings.fisher_samples is None else min(len(x), settings.fisher_samples)
            g = torch.Generator().manual_seed(settings.seed + t)
            pick = torch.randperm(len(x), generator=g)[:n]
            fisher = fisher_diagonal(
                model,
                (x[pick], y[pick]),
                kind=settings.fisher,
                logits_fn=head_fns[t] if head_fns else logits_fn,
                batch_size=config.batch_size,
                seed=settings.seed + t,
            )
            ewc.consolidate(model, fisher)
        if buffer is not None:
            buffer.add(x, y)
        if method == "lwf":
            old_model = copy.deepcopy(model).eval().requires_grad_(False)
            old_classes = sorted(set(old_classes) | set(torch.unique(y).tolist()))
    return R


def average_accuracy(R: np.ndarray | Tensor) -> float:
    """Mean accuracy over all tasks after the last: :math:`\\frac1T \\sum_j R_{T-1,j}`."""
    R = _check_matrix(R)
    return float(R[-1].mean())


def forgetting(R: np.ndarray | Tensor) -> float:
    """Average forgetting (Chaudhry et al., 2018): how far each earlier task's accuracy fell from
    its best to its final value,

    .. math:: \\frac{1}{T-1} \\sum_{j=0}^{T-2} \\Big(\\max_{i < T-1} R_{i,j} - R_{T-1,j}\\Big).

    Rows before task j was learned take part in the maximum but rarely matter (they are at
    chance level). Negative values mean the earlier tasks improved (backward transfer).
    """
    R = _check_matrix(R)
    if len(R) < 2:
        raise ValueError("forgetting needs the accuracy matrix of at least 2 tasks, got 1")
    return float((R[:-1, :-1].max(0) - R[-1, :-1]).mean())


def _check_matrix(R: np.ndarray | Tensor) -> np.ndarray:
    R = R.detach().cpu().numpy() if isinstance(R, Tensor) else np.asarray(R, dtype=float)
    if R.ndim != 2 or R.shape[0] != R.shape[1] or R.shape[0] == 0:
        raise ValueError(
            f"expected a square accuracy matrix R (T, T) with T >= 1, got shape {R.shape}"
        )
    return R
