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
"""

from __future__ import annotations

import bisect
import copy
import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import Config, check_choice, check_positive, check_range
from .train import TrainConfig, Trainer

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

METHODS = ("naive", "ewc", "replay", "lwf")
SCENARIOS = ("class", "task")
FISHER_KINDS = ("empirical", "true", "exact")
EWC_MODES = ("separate", "online")
SPLIT_MNIST_PAIRS = ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))

LogitsFn = Callable[[nn.Module, Tensor], Tensor]


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


# ----------------------------------------------------------------------------------------------
# helpers


def _default_logits(model: nn.Module, x: Tensor) -> Tensor:
    return model(x)


def _trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


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


def _chunks(data: Any, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """``(x, y)`` chunks of ``data``: a pair of tensors (sliced) or an iterable of pairs."""
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], Tensor):
        x, y = data
        _check_xy(x, y, "data")
        for i in range(0, len(x), batch_size):
            yield x[i : i + batch_size], y[i : i + batch_size]
    else:
        for batch in data:
            x, y = batch
            yield x, y


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


# ----------------------------------------------------------------------------------------------
# elastic weight consolidation


class _LogitsOf(nn.Module):
    """``logits_fn(model, x)`` as a module, so ``torch.func.functional_call`` can swap the
    model's parameters (its names are the model's, prefixed with ``model.``)."""

    def __init__(self, model: nn.Module, logits_fn: LogitsFn):
        super().__init__()
        self.model = model
        self.logits_fn = logits_fn

    def forward(self, x: Tensor) -> Tensor:
        return self.logits_fn(self.model, x)


def _squared_grads_vmap(
    model: nn.Module, logits_fn: LogitsFn, x: Tensor, y: Tensor, names: list[str]
) -> dict[str, Tensor]:
    """Per-example gradients of :math:`\\log p(y_n \\mid x_n)` with ``torch.func``, squared:
    ``{name: (B, *shape)}``."""
    from torch.func import functional_call, grad, vmap

    wrapper = _LogitsOf(model, logits_fn)
    params = {f"model.{n}": p.detach() for n, p in model.named_parameters() if n in names}

    def log_lik(params: dict[str, Tensor], xn: Tensor, yn: Tensor) -> Tensor:
        logits = functional_call(wrapper, params, (xn.unsqueeze(0),))  # (1, C)
        return -F.cross_entropy(logits.float(), yn.unsqueeze(0))

    g = vmap(grad(log_lik), in_dims=(None, 0, 0))(params, x, y)
    return {n: g[f"model.{n}"].square() for n in names}


def _squared_grads_loop(
    model: nn.Module, logits_fn: LogitsFn, x: Tensor, y: Tensor, names: list[str]
) -> dict[str, Tensor]:
    """The same as :func:`_squared_grads_vmap`, one backward pass per example."""
    params = [p for n, p in model.named_parameters() if n in names]
    rows = []
    for n in range(len(x)):
        log_lik = -F.cross_entropy(logits_fn(model, x[n : n + 1]).float(), y[n : n + 1])
        rows.append(torch.autograd.grad(log_lik, params))
    return {name: torch.stack([r[i] for r in rows]).square() for i, name in enumerate(names)}


def fisher_diagonal(
    model: nn.Module,
    data: tuple[Tensor, Tensor] | Iterable[tuple[Tensor, Tensor]],
    *,
    kind: str = "true",
    logits_fn: LogitsFn | None = None,
    batch_size: int = 64,
    seed: int = 0,
    vectorize: bool = True,
) -> dict[str, Tensor]:
    """The diagonal of the Fisher information of a classifier, averaged over a dataset.

    For each trainable parameter :math:`\\theta_i`,

    .. math:: F_i = \\frac1N \\sum_{n=1}^N \\mathbb{E}_{y \\sim q_n}\\Big[\\Big(
       \\frac{\\partial \\log p_\\theta(y \\mid x_n)}{\\partial \\theta_i}\\Big)^2\\Big],

    with :math:`p_\\theta(y \\mid x) = \\operatorname{softmax}(\\text{logits})_y`. Each example's
    own gradient is squared, then the squares are averaged: *not* the square of the mean
    gradient, which is near zero for a model that fits its data (Jensen: the mean of squares is
    at least the square of the mean). ``kind`` chooses :math:`q_n`:

    - ``"empirical"``: the data's label, :math:`y = y_n`: the *empirical Fisher*, used by many
      implementations; it depends on the labels, not only the model (Kunstner et al., 2019).
    - ``"true"`` (default): one :math:`y` drawn from the model's predictive distribution
      :math:`p_\\theta(\\cdot \\mid x_n)`: an unbiased one-sample estimate of the *true Fisher*
      at the cost of the empirical one. The draws are seeded with ``seed``.
    - ``"exact"``: the expectation over all C classes, weighted by :math:`p_\\theta(c \\mid
      x_n)`: the true Fisher without sampling noise, at C times the cost.

    The model is put in eval mode (no dropout, batch-norm running statistics) while the Fisher
    is computed and put back as it was. Per-example gradients come from ``torch.func.vmap`` in
    chunks of ``batch_size``; ``vectorize=False`` computes them one backward pass at a time
    (slower, for models that ``vmap`` cannot trace, e.g. with data-dependent control flow).

    Args:
        model: the classifier.
        data: ``(x, y)`` tensors, x (N, ...) and y (N,) int64, or an iterable of such batches
            (a :class:`~genai_course.train.TensorLoader`).
        kind: ``"empirical"``, ``"true"`` or ``"exact"``.
        logits_fn: ``logits_fn(model, x) -> logits`` (N, C); default ``model(x)``.

    Returns:
        ``{name: F}`` for every parameter with ``requires_grad``, F float32 of the parameter's
        shape, on its device.
    """
    check_choice("", "kind", FISHER_KINDS, value=kind)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    logits_fn = logits_fn or _default_logits
    names = list(_trainable(model))
    if not names:
        raise ValueError(f"{type(model).__name__} has no parameter with requires_grad")
    device = next(model.parameters()).device
    squared_grads = _squared_grads_vmap if vectorize else _squared_grads_loop
    g = torch.Generator().manual_seed(seed)
    total = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in _trainable(model).items()}
    count = 0
    was = model.training
    model.eval()
    try:
        for x, y in _chunks(data, batch_size):
            x, y = x.to(device), y.to(device).long()
            if kind == "empirical":
                sq = squared_grads(model, logits_fn, x, y, names)  # {name: (B, *shape)}
                for n in names:
                    total[n] += sq[n].sum(0)
            else:
                with torch.no_grad():
                    probs = logits_fn(model, x).float().softmax(-1)  # (B, C)
                if kind == "true":
                    draw = torch.multinomial(probs.cpu(), 1, generator=g).squeeze(1)  # (B,)
                    sq = squared_grads(model, logits_fn, x, draw.to(device), names)
                    for n in names:
                        total[n] += sq[n].sum(0)
                else:
                    for c in range(probs.shape[1]):
                        y_c = torch.full_like(y, c)
                        sq = squared_grads(model, logits_fn, x, y_c, names)
                        for n in names:
                            w = probs[:, c].reshape(-1, *([1] * (sq[n].ndim - 1)))  # (B, 1, ...)
                            total[n] += (w * sq[n]).sum(0)
            count += len(x)
    finally:
        model.train(was)
    if count == 0:
        raise ValueError("data yielded no example; the Fisher is an average over examples")
    return {n: t / count for n, t in total.items()}


class EWC:
    """Elastic weight consolidation (Kirkpatrick et al., 2017): a quadratic pull towards the
    weights of earlier tasks, stronger for the weights those tasks' Fisher says matter.

    After training task t, :meth:`consolidate` stores the anchor :math:`\\theta^\\star_t` (the
    current weights) and the task's Fisher diagonal :math:`F_t` (:func:`fisher_diagonal`). While
    later tasks train, :meth:`penalty` is added to their loss. With one past task it is

    .. math:: \\Omega(\\theta) = \\frac{\\lambda}{2} \\sum_i F_i\\, (\\theta_i - \\theta^\\star_i)^2 .

    Several past tasks are combined as ``mode`` says:

    - ``"separate"`` (Kirkpatrick et al.): one term per past task, each with its own anchor,
      :math:`\\frac{\\lambda}{2} \\sum_t \\sum_i F_{t,i} (\\theta_i - \\theta^\\star_{t,i})^2`;
      memory grows by two copies of the weights per task.
    - ``"online"`` (Schwarz et al., 2018; Huszár, 2018): a single anchor, the latest weights, and
      a running Fisher :math:`\\tilde F \\leftarrow \\gamma \\tilde F + F_t`, so
      :math:`\\Omega(\\theta) = \\frac{\\lambda}{2} \\sum_i \\tilde F_i (\\theta_i -
      \\theta^\\star_{t,i})^2`; constant memory, and :math:`\\gamma < 1` lets old tasks fade.

    Parameters are matched by name (``model.named_parameters()``); those without a Fisher
    (frozen when it was computed) are not penalised.
    """

    def __init__(self, lam: float, *, mode: str = "separate", gamma: float = 1.0):
        check_choice("", "mode", EWC_MODES, value=mode)
        if lam < 0:
            raise ValueError(f"lam (the penalty strength lambda) must be >= 0, got {lam}")
        if not 0 <= gamma <= 1:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        self.lam, self.mode, self.gamma = float(lam), mode, float(gamma)
        # one (anchor, fisher) pair per past task; a single, updated pair in online mode
        self.terms: list[tuple[dict[str, Tensor], dict[str, Tensor]]] = []

    def __len__(self) -> int:
        """The number of (anchor, Fisher) terms held."""
        return len(self.terms)

    @torch.no_grad()
    def consolidate(self, model: nn.Module, fisher: dict[str, Tensor]) -> None:
        """Anchor the current weights of ``model`` with the Fisher of the task just learned."""
        params = dict(model.named_parameters())
        unknown = sorted(set(fisher) - set(params))
        if unknown:
            raise ValueError(
                f"the Fisher has entries {unknown[:5]} that are not parameters of "
                f"{type(model).__name__}"
            )
        for n, f in fisher.items():
            if f.shape != params[n].shape:
                raise ValueError(
                    f"the Fisher of {n!r} has shape {tuple(f.shape)}, the parameter "
                    f"{tuple(params[n].shape)}"
                )
        anchor = {n: params[n].detach().clone() for n in fisher}
        fisher = {n: f.detach().float().clone() for n, f in fisher.items()}
        if self.mode == "online" and self.terms:
            old = self.terms[0][1]
            fisher = {n: f + self.gamma * old[n] if n in old else f for n, f in fisher.items()}
            self.terms = []
        self.terms.append((anchor, fisher))

    def penalty(self, model: nn.Module) -> Tensor:
        """:math:`\\Omega(\\theta)` at the weights of ``model``, a scalar that has a gradient
        (zero, with no task consolidated yet)."""
        params = dict(model.named_parameters())
        device = next(iter(params.values())).device if params else torch.device("cpu")
        total = torch.zeros((), device=device)
        for anchor, fisher in self.terms:
            for n, f in fisher.items():
                if n not in params:
                    raise ValueError(
                        f"EWC holds parameter {n!r}, which {type(model).__name__} does not have"
                    )
                p = params[n]
                total = (
                    total + (f.to(p.device) * (p.float() - anchor[n].to(p.device)).square()).sum()
                )
        return 0.5 * self.lam * total

    def state_dict(self) -> dict[str, Any]:
        return {
            "lam": self.lam,
            "mode": self.mode,
            "gamma": self.gamma,
            "terms": [{"anchor": a, "fisher": f} for a, f in self.terms],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_choice("", "mode", EWC_MODES, value=state["mode"])
        self.lam, self.mode, self.gamma = float(state["lam"]), state["mode"], float(state["gamma"])
        self.terms = [(dict(t["anchor"]), dict(t["fisher"])) for t in state["terms"]]


# ----------------------------------------------------------------------------------------------
# experience replay


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


# ----------------------------------------------------------------------------------------------
# learning without forgetting


def distillation_loss(
    new_logits: Tensor,
    old_logits: Tensor,
    temperature: float = 2.0,
    *,
    classes: Sequence[int] | Tensor | None = None,
) -> Tensor:
    """The distillation term of learning without forgetting (Li & Hoiem, 2018).

    With :math:`q = \\operatorname{softmax}(z^\\text{old} / T)` the old model's softened output
    and :math:`p = \\operatorname{softmax}(z^\\text{new} / T)` the new model's, on the *new*
    task's inputs,

    .. math:: \\mathcal{L}_\\text{LwF} = T^2\\, \\frac1N \\sum_{n=1}^N \\mathrm{KL}(q_n \\,\\|\\, p_n)
       = T^2\\, \\frac1N \\sum_{n=1}^N \\sum_c q_{n,c} (\\log q_{n,c} - \\log p_{n,c}).

    The cross-entropy :math:`-\\sum_c q_{n,c} \\log p_{n,c}` of Li & Hoiem differs from the KL
    by the entropy of :math:`q`, which does not depend on the new model: same gradient, but the
    KL is zero when the two models agree. The factor :math:`T^2` keeps the gradient's size
    independent of :math:`T` (Hinton et al., 2015): softening divides it by about :math:`T^2`.

    Args:
        new_logits: (N, C) logits of the model being trained.
        old_logits: (N, C) logits of the frozen old model (no gradient flows into them).
        temperature: :math:`T > 0`; 1 is the plain KL, larger values soften both outputs.
        classes: the output columns to distil, e.g. the old tasks' classes in a single-head
            model (so the new classes' logits are free to grow); default all.

    Returns:
        A scalar tensor.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if new_logits.shape != old_logits.shape or new_logits.ndim != 2:
        raise ValueError(
            f"expected new and old logits of the same shape (N, C), got "
            f"{tuple(new_logits.shape)} and {tuple(old_logits.shape)}"
        )
    if classes is not None:
        cols = torch.as_tensor(classes, dtype=torch.long, device=new_logits.device)
        new_logits, old_logits = new_logits[:, cols], old_logits[:, cols]  # (N, k)
    log_p = F.log_softmax(new_logits.float() / temperature, dim=-1)  # (N, C)
    log_q = F.log_softmax(old_logits.detach().float() / temperature, dim=-1)
    kl = F.kl_div(log_p, log_q, log_target=True, reduction="batchmean")
    return temperature**2 * kl


# ----------------------------------------------------------------------------------------------
# training on a sequence of tasks


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
