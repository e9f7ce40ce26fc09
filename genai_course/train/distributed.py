"""Multi-process training under ``torchrun``: the rank and world size from the environment
and the process group."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def distributed_env() -> tuple[int, int, int]:
    """``(rank, local_rank, world_size)`` from torchrun's environment (``(0, 0, 1)`` without it)."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    return int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)), world


def _init_distributed(device: torch.device) -> None:
    if dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
