"""Adversarial examples and adversarial training for image classifiers (L-infinity threat model).

An adversary may change every pixel of an image ``x`` by at most ``eps``; it looks for the
perturbation that most increases the classifier's loss,

.. math:: \\delta^\\star = \\arg\\max_{\\lVert\\delta\\rVert_\\infty \\le \\epsilon,\\;
          x + \\delta \\in [0, 1]^d} \\ell(f(x + \\delta), y).

- **FGSM** (Goodfellow et al., 2015) takes one step to the corner of the eps-ball that the
  gradient's sign points to: :math:`x' = \\Pi(x + \\epsilon\\,\\mathrm{sign}\\,\\nabla_x \\ell)`,
  the maximiser of the loss's first-order Taylor expansion over the ball.
- **PGD** (Madry et al., 2018) repeats smaller signed steps of size ``alpha`` from a random
  point of the ball, projecting back onto the ball and the valid pixel range after each:
  :math:`x^{k+1} = \\Pi_{B_\\epsilon(x) \\cap [0,1]^d}(x^k + \\alpha\\,\\mathrm{sign}\\,
  \\nabla_x \\ell(f(x^k), y))`.
- **Adversarial training** minimises the loss at the adversary's point instead of at ``x``,
  :math:`\\min_\\theta \\mathbb E\\,\\max_{\\lVert\\delta\\rVert_\\infty \\le \\epsilon}
  \\ell(f_\\theta(x + \\delta), y)`, with the inner maximum approximated by PGD on every batch
  (:class:`AdversarialLoss`, a loss for the :class:`~genai_course.train.Trainer`).

Models take images in the valid range (the course's classifiers normalise inside), so the
projection onto [0, 1] is exact and perturbations are measured in pixel units.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "AdversarialLoss",
    "ATTACKS",
    "attack",
    "fgsm",
    "pgd",
    "relu_maxpool_kinks",
    "robust_accuracy",
]

LossOnLogits = Callable[[Tensor, Tensor], Tensor]


# helpers


def _check_inputs(x: Tensor, y: Tensor, eps: float, clamp: tuple[float, float]) -> None:
    if not x.is_floating_point():
        raise ValueError(f"images must be floating point, got {x.dtype}")
    if y.ndim != 1 or len(y) != len(x) or y.dtype != torch.long:
        raise ValueError(
            f"labels must be int64 of shape ({len(x)},), got {tuple(y.shape)} {y.dtype}"
        )
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0 (pixel units), got {eps}")
    lo, hi = clamp
    if not lo < hi:
        raise ValueError(f"clamp must be (low, high) with low < high, got {clamp}")
    if x.numel() and (x.min() < lo - 1e-6 or x.max() > hi + 1e-6):
        raise ValueError(
            f"images must lie in the valid range {clamp}, got values in "
            f"[{x.min().item():.3g}, {x.max().item():.3g}]"
        )


def _project(x_adv: Tensor, x: Tensor, eps: float, clamp: tuple[float, float]) -> Tensor:
    """Closest point of the eps-ball around x intersected with the valid range (per pixel)."""
    return torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp(*clamp)


def _input_gradient(model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossOnLogits) -> Tensor:
    """d loss / d x, without touching the parameters' .grad."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(model(x), y)
        (grad,) = torch.autograd.grad(loss, [x])
    return grad


# attacks


def fgsm(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    loss_fn: LossOnLogits = F.cross_entropy,
    clamp: tuple[float, float] = (0.0, 1.0),
) -> Tensor:
    """Fast gradient sign method: ``x + eps * sign(grad_x loss)``, clipped to the valid range.

    Args:
        model: maps images (B, ...) to logits (B, K); its mode (train/eval) is left as is.
        x: images (B, ...) in ``clamp``; y: labels (B,) int64.
        eps: L-infinity budget in pixel units (e.g. 0.1 for pixels in [0, 1]).

    Returns:
        adversarial images, same shape, with ``|x_adv - x| <= eps`` and values in ``clamp``.
    """
    _check_inputs(x, y, eps, clamp)
    grad = _input_gradient(model, x, y, loss_fn)
    return _project(x.detach() + eps * grad.sign(), x.detach(), eps, clamp)


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    restarts: int = 1,
    loss_fn: LossOnLogits = F.cross_entropy,
    clamp: tuple[float, float] = (0.0, 1.0),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Projected gradient descent (ascent on the loss) in the L-infinity ball.

    Starts at ``x`` plus uniform noise in [-eps, eps] (``random_start``), then ``steps``
    times: ``x_adv + step_size * sign(grad)``, projected onto the ball and the valid range.
    ``steps=1, step_size=1.25 * eps`` is FGSM with a random start (Wong et al., 2020).

    Args:
        steps: number of gradient steps (>= 1).
        step_size: ``alpha`` in pixel units; default ``2.5 * eps / steps``, the rule of the
            Madry lab's ``robustness`` library (Engstrom et al., 2019): the steps together
            travel 2.5 eps, more than the ball's width of 2 eps, so one coordinate can go
            from face to face.  (Madry et al., 2018, themselves used 40 steps of 0.01 at
            eps = 0.3 on MNIST, 1.33 eps in all.)
        restarts: independent random starts (>= 1; more than 1 needs ``random_start``),
            run one after the other with ``generator``.  Each example keeps the first
            restart's point that the model misclassifies (``argmax != y``: an untargeted
            attack) and, where none does, the point of highest cross-entropy.  So an example
            counts as robust only if every restart fails, and since the first ``r`` restarts
            do not depend on how many follow, the robust accuracy is non-increasing in
            ``restarts`` for a given generator seed (Madry et al., 2018, report restarts).
        generator: for the random start (CPU generator; the noise is moved to x's device).

    Returns:
        adversarial images, same shape, within eps of ``x`` and in ``clamp``.
    """
    _check_inputs(x, y, eps, clamp)
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 1:
        raise ValueError(f"restarts must be an int >= 1, got {restarts!r}")
    if restarts > 1 and not (random_start and eps > 0):
        raise ValueError(
            "restarts > 1 needs random_start=True and eps > 0 (else every run is the same)"
        )
    alpha = 2.5 * eps / steps if step_size is None else step_size
    if not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"step_size must be >= 0, got {step_size}")
    x = x.detach()
    best, best_loss, fooled = x, None, None
    for _ in range(restarts):
        x_adv = x
        if random_start and eps > 0:
            noise = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device)
            x_adv = _project(x + (2 * noise - 1) * eps, x, eps, clamp)
        for _ in range(steps):
            grad = _input_gradient(model, x_adv, y, loss_fn)
            x_adv = _project(x_adv + alpha * grad.sign(), x, eps, clamp)
        if restarts == 1:
            return x_adv
        with torch.no_grad():
            logits = model(x_adv)
        wrong, loss = logits.argmax(1) != y, F.cross_entropy(logits, y, reduction="none")
        if fooled is None:
            best, best_loss, fooled = x_adv, loss, wrong
            continue
        # replace where this restart fools an example not yet fooled, or raises the loss of one
        # that no restart has fooled so far
        take = (wrong & ~fooled) | (~wrong & ~fooled & (loss > best_loss))
        best = torch.where(take.view(-1, *[1] * (x.ndim - 1)), x_adv, best)
        best_loss, fooled = torch.where(take, loss, best_loss), fooled | wrong
    return best


ATTACKS: dict[str, Callable[..., Tensor]] = {"fgsm": fgsm, "pgd": pgd}


def attack(name: str, model: nn.Module, x: Tensor, y: Tensor, eps: float, **kwargs) -> Tensor:
    """Run the attack ``name`` (a key of :data:`ATTACKS`) with ``kwargs``."""
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; known: {', '.join(ATTACKS)}")
    return ATTACKS[name](model, x, y, eps, **kwargs)


@torch.no_grad()
def _correct(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return model(x).argmax(dim=1) == y


def robust_accuracy(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    attack_name: str = "pgd",
    batch_size: int = 500,
    **kwargs,
) -> float:
    """Share of ``x`` still classified correctly after the attack (clean accuracy at eps = 0).

    The model is put in eval mode for the measurement and restored afterwards; the attack runs
    batch by batch on the model's device. ``kwargs`` go to the attack (``steps``,
    ``restarts``, ...); with a ``generator``, the batches draw from it in turn, so the nesting
    of restarts that :func:`pgd` describes holds exactly when all of ``x`` is one batch.
    """
    if len(x) == 0:
        raise ValueError("robust_accuracy needs at least one image")
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    try:
        for i in range(0, len(x), batch_size):
            xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
            xa = attack(attack_name, model, xb, yb, eps, **kwargs) if eps > 0 else xb
            correct += int(_correct(model, xa, yb).sum())
    finally:
        model.train(was)
    return correct / len(x)


# where the gradient is a convention


@torch.no_grad()
def relu_maxpool_kinks(model: nn.Module, x: Tensor) -> list[dict[str, Any]]:
    """Where a network of ReLUs and max-pools is not differentiable at the inputs ``x``.

    A ReLU has its kink where its input is exactly 0.  A max-pool has one where a window's
    maximum is attained by two or more entries: its output is then the maximum of several
    functions of the input, and the slopes on either side differ.  Behind a ReLU, a window
    of switched-off units is all 0 and tied too, but those units stay off under a small
    change of the input, so the output is locally constant there: of the tied windows, only
    those tied at a value above 0 are kinks (``tied_above_zero``).

    Runs ``model(x)`` once, with forward hooks on every ``nn.ReLU`` and ``nn.MaxPool2d``.

    Args:
        model: the network (its mode is left as is); max-pools must be unpadded, with
            dilation 1 and ``ceil_mode=False``.
        x: a batch of inputs of the shape ``model`` takes.

    Returns:
        one row per hooked module, in the order of the forward pass: ``{"module": name,
        "kind": "relu", "exactly_zero": share of the inputs equal to 0}`` or ``{"module":
        name, "kind": "maxpool", "tied": share of windows whose maximum is attained more
        than once, "tied_above_zero": share tied at a maximum > 0}``.
    """
    rows: list[dict[str, Any]] = []

    def on_relu(name: str, inputs: tuple[Tensor, ...]) -> None:
        share = (inputs[0] == 0).float().mean().item()
        rows.append({"module": name, "kind": "relu", "exactly_zero": share})

    def on_pool(name: str, pool: nn.MaxPool2d, inputs: tuple[Tensor, ...]) -> None:
        z = inputs[0]  # (N, C, H, W)
        windows = F.unfold(z.reshape(-1, 1, *z.shape[-2:]), pool.kernel_size, stride=pool.stride)
        top = windows.max(dim=1, keepdim=True).values  # (N*C, 1, L)
        tied = (windows == top).sum(dim=1) > 1  # (N*C, L)
        rows.append(
            {
                "module": name,
                "kind": "maxpool",
                "tied": tied.float().mean().item(),
                "tied_above_zero": (tied & (top[:, 0] > 0)).float().mean().item(),
            }
        )

    hooks = []
    try:
        for name, module in model.named_modules():
            if isinstance(module, nn.ReLU):
                hooks.append(module.register_forward_hook(lambda m, i, o, n=name: on_relu(n, i)))
            elif isinstance(module, nn.MaxPool2d):
                if module.padding not in (0, (0, 0)) or module.dilation not in (1, (1, 1)):
                    raise ValueError(f"{name}: only unpadded max-pools with dilation 1 are read")
                if module.ceil_mode:
                    raise ValueError(f"{name}: max-pools with ceil_mode=True are not read")
                hooks.append(module.register_forward_hook(lambda m, i, o, n=name: on_pool(n, m, i)))
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return rows


# adversarial training


@dataclass
class AdversarialLoss:
    """A loss for the :class:`~genai_course.train.Trainer` that trains on PGD examples.

    ``loss = (1 - clean_weight) * CE(f(x_adv), y) + clean_weight * CE(f(x), y)``, with
    ``x_adv`` from :func:`pgd` against the current weights (the model in eval mode while it
    attacks, so dropout does not help the defender and batch-norm statistics are not fed
    adversarial batches twice). ``clean_weight = 0`` is Madry et al.'s adversarial training.
    ``steps=1, step_size=1.25 * eps`` is Wong et al.'s (2020) FGSM training from a random start
    (FGSM-RS), and ``steps=1, step_size=eps, random_start=False`` plain FGSM training.

    Call ``trainer = Trainer(model, data, config, loss_fn=AdversarialLoss(eps=0.1))``; the
    logged extras are ``acc`` (on the adversarial batch) and ``clean_acc``.
    """

    eps: float = 0.1
    steps: int = 7
    step_size: float | None = None  # default 2.5 * eps / steps
    random_start: bool = True
    clean_weight: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.clean_weight <= 1.0:
            raise ValueError(f"clean_weight must be in [0, 1], got {self.clean_weight}")
        self._generator = torch.Generator().manual_seed(self.seed)

    def __call__(
        self, model: nn.Module, batch: tuple[Tensor, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        x, y = batch
        was = model.training
        model.eval()
        try:
            x_adv = pgd(
                model,
                x,
                y,
                self.eps,
                steps=self.steps,
                step_size=self.step_size,
                random_start=self.random_start,
                generator=self._generator,
            )
        finally:
            model.train(was)
        logits = model(torch.cat([x_adv, x]) if self.clean_weight > 0 else x_adv)
        adv_logits = logits[: len(x)]
        loss = F.cross_entropy(adv_logits, y)
        extras = {"acc": (adv_logits.argmax(1) == y).float().mean()}
        if self.clean_weight > 0:
            clean_logits = logits[len(x) :]
            loss = (1 - self.clean_weight) * loss + self.clean_weight * F.cross_entropy(
                clean_logits, y
            )
            extras["clean_acc"] = (clean_logits.argmax(1) == y).float().mean()
        return loss, extras
