"""How to train: :class:`TrainConfig`, the :class:`Objective` of each optimiser, the
learning-rate schedule (:func:`lr_factor`) and the weight-decay groups
(:func:`decay_param_groups`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from ..config import Config, check_choice, check_positive, check_range

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
OPTIMIZERS = ("adamw", "adam", "sgd", "rmsprop")
SCHEDULES = ("constant", "cosine", "linear")

LossOutput = Tensor | tuple[Tensor, dict[str, Tensor | float]]
LossFn = Callable[[nn.Module, Any], LossOutput]


@dataclass
class TrainConfig(Config):
    """Everything about *how* to train; the model and data are given to the :class:`Trainer`."""

    steps: int = 1000  # optimiser steps; the schedule spans them
    batch_size: int = 64  # per process; one optimiser step sees batch_size*accumulate*world_size
    lr: float = 1e-3
    optimizer: str = "adamw"  # adamw | adam | sgd | rmsprop
    weight_decay: float = 0.0  # decoupled for adamw, L2 in the loss gradient for the others
    # which parameters weight decay applies to (see decay_param_groups): "matrices" spares
    # biases and norm gains (every 1-D parameter), as nanoGPT does; "all" decays
    # every parameter, the rule of the checkpoints shipped before the rule existed
    decay_rule: str = "matrices"
    decay_embeddings: bool = True  # with "matrices": embedding tables are decayed too (nanoGPT)
    betas: tuple[float, float] = (0.9, 0.999)  # adam/adamw
    momentum: float = 0.9  # sgd and rmsprop
    schedule: str = "constant"  # constant | cosine | linear, after warm-up
    warmup_steps: int = 0  # linear warm-up from 0 to lr
    min_lr_ratio: float = 0.0  # where cosine/linear decay ends, as a fraction of lr
    grad_clip: float | None = None  # max global grad norm, per objective
    accumulate: int = 1  # micro-batches per optimiser step
    precision: str = "auto"  # auto: bf16 on CUDA when supported, else fp32
    compile: bool = False  # torch.compile the loss computation
    ema_decay: float | None = None  # e.g. 0.999; None: no EMA
    ema_of: str | None = None  # submodule to average (e.g. "generator"); None: the whole model
    eval_every: int = 0  # steps between validations; 0: only at the end
    eval_batches: int | None = None  # cap on validation batches; None: the whole split
    monitor: str = "val_loss"  # metric that early stopping and "best" watch
    mode: str = "min"  # min | max
    patience: int | None = None  # evaluations without improvement before stopping
    min_delta: float = 0.0  # an improvement must beat the best by this much
    restore_best: bool = False  # load the best weights (by monitor) when training ends
    checkpoint_dir: str | None = None  # where last.pt goes; None: no checkpoints
    checkpoint_every: int = 0  # steps between checkpoints; 0: only at the end
    log_every: int = 10  # steps between history records (and loss finiteness checks)
    seed: int = 0
    device: str = "auto"
    progress: bool = True  # tqdm progress bar (a widget in Jupyter)
    shuffle: bool = True

    def validate(self) -> None:
        check_choice(self, "precision", PRECISIONS)
        check_choice(self, "optimizer", OPTIMIZERS)
        check_choice(self, "schedule", SCHEDULES)
        check_choice(self, "mode", ("min", "max"))
        check_choice(self, "decay_rule", DECAY_RULES)
        check_positive(self, "steps", "batch_size", "accumulate", "log_every")
        check_positive(self, "lr", minimum=0, strict=True)
        check_positive(self, "weight_decay", minimum=0)
        if self.ema_decay is not None:
            check_range(self, "ema_decay", 0.0, 1.0, closed="neither")


DECAY_RULES = ("matrices", "all")


def decay_param_groups(
    module: nn.Module,
    params: Sequence[nn.Parameter],
    weight_decay: float,
    rule: str = "matrices",
    *,
    decay_embeddings: bool = True,
) -> list[dict[str, Any]]:
    """Optimiser parameter groups that apply ``weight_decay`` where it belongs.

    Decay pulls a weight matrix towards small norm, a prior that suits the matrices of linear
    and convolutional layers. A bias or a LayerNorm/BatchNorm gain is a per-channel offset or
    scale: shrinking a gain towards 0 (rather than towards its neutral value 1) only fights the
    normalisation, so ``rule="matrices"`` gives every parameter with fewer than 2 dimensions no
    decay, nanoGPT's rule (minGPT and the Hugging Face Trainer spare biases and LayerNorm
    weights by type and name, the same parameters in a transformer). Embedding tables are matrices;
    ``decay_embeddings=False`` spares them too (minGPT's choice). ``rule="all"`` decays
    everything (one group), the behaviour of checkpoints trained before the rule.

    Args:
        module: the module that owns ``params`` (for the names of embedding tables).
        params: the parameters the optimiser will update.
        weight_decay: the decay coefficient of the decayed group.
        rule: ``"matrices"`` or ``"all"``.
    Returns:
        ``[{"params": ..., "weight_decay": ...}, ...]``: one group when nothing is spared or the
        decay is 0 (so the optimiser state looks as it did before), else a decayed group and an
        undecayed one.
    """
    check_choice("decay", "rule", DECAY_RULES, value=rule)
    params = list(params)
    if rule == "all" or weight_decay == 0:
        return [{"params": params, "weight_decay": weight_decay}]
    embeddings = {
        id(p) for m in module.modules() if isinstance(m, nn.Embedding) for p in m.parameters()
    }
    spared = [p for p in params if p.ndim < 2 or (not decay_embeddings and id(p) in embeddings)]
    spared_ids = {id(p) for p in spared}
    decayed = [p for p in params if id(p) not in spared_ids]
    groups = [{"params": decayed, "weight_decay": weight_decay}]
    if spared:
        groups.append({"params": spared, "weight_decay": 0.0})
    return groups


@dataclass
class Objective:
    """One loss and the optimiser that minimises it.

    A plain model has one objective.  A GAN has two: the discriminator's loss updates only the
    discriminator's parameters and the generator's loss only the generator's.  While an
    objective runs, the parameters it does not own have ``requires_grad`` switched off, so no
    gradient is computed for them at all.
    """

    name: str
    loss_fn: LossFn
    module: str | None = None  # dotted name of the submodule it updates; None: the whole model
    repeats: int = 1  # optimiser steps per Trainer step (e.g. n_critic = 5 for WGAN)
    lr: float | None = None  # overrides TrainConfig.lr
    betas: tuple[float, float] | None = None  # overrides TrainConfig.betas
    weight_decay: float | None = None  # overrides TrainConfig.weight_decay


def lr_factor(
    step: int, *, total: int, warmup: int = 0, schedule: str = "constant", min_ratio: float = 0.0
) -> float:
    """Learning-rate multiplier after ``step`` optimiser steps.

    Linear warm-up :math:`s/w` for :math:`s < w`, then, with progress
    :math:`p = (s - w)/(T - w) \\in [0, 1]`,
    constant: 1; linear: :math:`1 - (1 - r)p`; cosine: :math:`r + (1 - r)(1 + \\cos \\pi p)/2`,
    where :math:`r` is ``min_ratio``.
    """
    check_choice("lr_factor", "schedule", SCHEDULES, value=schedule)
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, max(0.0, (step - warmup) / max(1, total - warmup)))
    if schedule == "linear":
        return 1.0 - (1.0 - min_ratio) * progress
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
