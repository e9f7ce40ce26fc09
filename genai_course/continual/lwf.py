"""Learning without forgetting (Li & Hoiem, 2018): the distillation term that asks the new
model to reproduce the old model's softened outputs (:func:`distillation_loss`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["distillation_loss"]


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
