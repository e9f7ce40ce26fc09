"""Batches per second: tensors already on the device against a DataLoader in host memory."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..budget import resolve_device
from ..train import TensorLoader, move_to
from .timing import check_positive, header, interleaved, paired_speedup, timed


def bench_dataloading(
    *,
    batch_size: int = 128,
    batches: int = 100,
    repeats: int = 3,
    workers: Sequence[int] = (0, 2),
    device: str = "auto",
    seed: int = 0,
) -> dict[str, Any]:
    """Batches per second of the 4,000 MNIST training digits served two ways: a
    :class:`~genai_course.train.TensorLoader` slicing tensors already on the device, and a
    :class:`torch.utils.data.DataLoader` over a ``TensorDataset`` in host memory (shuffled,
    each batch collated from single examples, then copied to the device; pinned memory on
    CUDA) with each number of ``workers`` processes (persistent, so they start once).  The
    time to the first batch (worker start-up included) is ``first_batch_s``."""
    from torch.utils.data import DataLoader, TensorDataset

    from .. import data

    check_positive(batch_size=batch_size, batches=batches, repeats=repeats)
    dev = resolve_device(device)
    x, y = data.load_mnist("train")
    out = header(
        "dataloading",
        dev,
        dataset="mnist-train",
        examples=len(x),
        batch_size=batch_size,
        batches=batches,
        repeats=repeats,
    )
    nexts: dict[str, Callable[[], Any]] = {}
    first: dict[str, float] = {}
    loader = TensorLoader(x.to(dev), y.to(dev), batch_size=batch_size, seed=seed)
    nexts["TensorLoader"] = loader.next_batch
    iterators = []
    try:
        for w in workers:
            dl = DataLoader(
                TensorDataset(x, y),
                batch_size=batch_size,
                shuffle=True,
                drop_last=True,
                num_workers=w,
                persistent_workers=w > 0,
                pin_memory=dev.type == "cuda",
                generator=torch.Generator().manual_seed(seed),
            )
            it = _Endless(dl, dev)
            iterators.append(it)
            nexts[f"DataLoader(workers={w})"] = it.next_batch
        for k, fn in nexts.items():
            first[k] = timed(fn, 1, dev)
        times = interleaved(nexts, batches, repeats, dev)
    finally:
        for it in iterators:
            it.close()
    rows = []
    for k, fn_times in times.items():
        med = statistics.median(fn_times)
        rows.append(
            {
                "loader": k,
                "workers": None if k == "TensorLoader" else int(k.split("=")[1].rstrip(")")),
                "batches_per_s": round(1 / med, 2),
                "examples_per_s": round(batch_size / med, 1),
                "batches_per_s_all": [round(1 / t, 2) for t in fn_times],
                "first_batch_s": round(first[k], 4),
                "times_slower_than_tensorloader": paired_speedup(fn_times, times["TensorLoader"]),
            }
        )
    out["results"] = rows
    return out


class _Endless:
    """Endless batches of a DataLoader, moved to ``device`` (a new epoch when one ends)."""

    def __init__(self, loader: Any, device: torch.device):
        self.loader, self.device = loader, device
        self._it = iter(loader)

    def next_batch(self) -> Any:
        try:
            batch = next(self._it)
        except StopIteration:
            self._it = iter(self.loader)
            batch = next(self._it)
        return move_to(batch, self.device)

    def close(self) -> None:
        # dropping the iterator of a persistent DataLoader shuts its workers down
        shutdown = getattr(self._it, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        self._it = None


def summarise_dataloading(result: dict[str, Any]) -> str:
    """One line: batches per second of each loader."""
    parts = [f"{r['loader']} {r['batches_per_s']:.4g}" for r in result["results"]]
    return f"batches/s on {result['device']}: " + ", ".join(parts)
