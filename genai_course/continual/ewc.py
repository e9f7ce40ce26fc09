"""Elastic weight consolidation (Kirkpatrick et al., 2017): the diagonal of the Fisher
information of a classifier (:func:`fisher_diagonal`) and the quadratic penalty built on it
(:class:`EWC`), in its separate and online forms.

Shapes in comments: N examples, C classes (outputs of the head), B a chunk of examples.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import check_choice
from .tasks import LogitsFn, _check_xy, _default_logits

__all__ = ["EWC", "EWC_MODES", "FISHER_KINDS", "fisher_diagonal"]

FISHER_KINDS = ("empirical", "true", "exact")
EWC_MODES = ("separate", "online")


def _trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


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
