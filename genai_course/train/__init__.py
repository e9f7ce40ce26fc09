"""The training core: a model-agnostic :class:`Trainer`.

Nothing in this package knows about any model.  A model supplies its loss for a batch, as a
function ``loss_fn(model, batch) -> loss`` (or ``(loss, {"name": value, ...})``); by default
the Trainer calls ``model.loss(batch)``.  Everything else is the Trainer's job:

- the device (cuda, mps, cpu) and the precision (``fp32``, ``bf16`` or ``fp16`` autocast, with
  a gradient scaler for fp16), optional ``torch.compile``, fused AdamW on CUDA;
- gradient clipping and accumulation, learning-rate warm-up and cosine/linear decay,
  an exponential moving average (EMA) of the weights, early stopping on a validation metric;
- several objectives, each with its own optimiser (a GAN's discriminator and generator), run
  in turn, each any number of times per step;
- a history of metrics, ``tqdm`` progress bars (widgets in Jupyter), callbacks;
- checkpoints that hold everything needed to resume exactly (model, optimisers, schedulers,
  scalers, EMA, step, data position and every random-number generator), written atomically and
  read without executing pickled code;
- a guard that stops on a non-finite loss and names the step;
- multi-process data parallel training when launched by ``torchrun`` (DDP; rank-sharded
  batches; checkpoints written by rank 0 only).

Datasets that fit in memory take the fast path: :class:`TensorLoader` slices batches from
tensors already on the device, with no DataLoader, worker processes or host-to-device copies.

Modules: :mod:`~genai_course.train.config` (the configuration, objectives, schedule and
weight-decay groups), :mod:`~genai_course.train.trainer` (the loop),
:mod:`~genai_course.train.history` (the history and callbacks),
:mod:`~genai_course.train.batches` (training data as a stream, validation batches) and
:mod:`~genai_course.train.distributed` (torchrun's environment).  Import from
``genai_course.train``; the submodules are its layout, not its interface.
"""

from ..data.streams import TensorLoader
from .batches import move_to
from .config import (
    DECAY_RULES,
    OPTIMIZERS,
    PRECISIONS,
    SCHEDULES,
    LossFn,
    LossOutput,
    Objective,
    TrainConfig,
    decay_param_groups,
    lr_factor,
)
from .distributed import distributed_env
from .history import Callback, EveryN, History
from .trainer import CHECKPOINT_FORMAT, NonFiniteLossError, Trainer

__all__ = [
    "CHECKPOINT_FORMAT",
    "Callback",
    "DECAY_RULES",
    "EveryN",
    "History",
    "LossFn",
    "LossOutput",
    "NonFiniteLossError",
    "OPTIMIZERS",
    "Objective",
    "PRECISIONS",
    "SCHEDULES",
    "TensorLoader",
    "TrainConfig",
    "Trainer",
    "decay_param_groups",
    "distributed_env",
    "lr_factor",
    "move_to",
]
