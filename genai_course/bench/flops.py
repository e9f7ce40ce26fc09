"""What a training step costs: FLOP counts, analytic and measured, and GPUs' peak FLOP/s.

Model FLOPs utilisation (MFU) is achieved FLOP/s over :func:`peak_flops`; the GPT's FLOPs come
from :func:`gpt_flops_per_token`, other models' from :func:`count_flops`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..budget import resolve_device


def gpt_flops_per_token(n_params: int, n_layer: int, n_embd: int, seq_len: int) -> float:
    r"""Training FLOPs per token of a GPT (forward and backward), the usual estimate

    .. math:: 6N + 12\,L\,T\,C,

    with :math:`N` the parameters outside the position embedding (each is one multiply-add,
    2 FLOPs, per token forward and twice that backward), :math:`L` layers, :math:`T` the
    sequence length and :math:`C` the width: the attention scores :math:`QK^\top` and their
    use on :math:`V` cost :math:`2 \cdot 2TC` per token and layer forward, times 3 with the
    backward pass.  The causal mask is ignored (it could halve the second term)."""
    return 6.0 * n_params + 12.0 * n_layer * seq_len * n_embd


#: Dense bf16 (or fp16 where the GPU has no bf16) tensor-core peaks of data sheets, FLOP/s,
#: without sparsity.  The first name that occurs in ``torch.cuda.get_device_name()`` wins.
PEAK_FLOPS = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("V100", 125e12),
    ("T4", 65e12),
)


def peak_flops(device: str | torch.device | None = "auto") -> float | None:
    """The GPU's peak dense bf16/fp16 tensor-core FLOP/s from :data:`PEAK_FLOPS`; None for a
    GPU not in the table and for every CPU (whose peak depends on cores, clock and vector
    units, and is not what a shared machine delivers anyway)."""
    dev = resolve_device(device)
    if dev.type != "cuda":
        return None
    name = torch.cuda.get_device_name(dev)
    return next((peak for key, peak in PEAK_FLOPS if key in name), None)


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of the matrix products and convolutions ``fn()`` runs (forward and any backward
    inside it), counted by :class:`torch.utils.flop_counter.FlopCounterMode`.  Elementwise
    work is not counted, nor (in torch 2.x on the CPU) the fused attention kernel."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())
