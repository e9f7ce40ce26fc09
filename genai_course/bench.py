"""Benchmarks behind ``genai-course bench``; each returns a dict of JSON-ready results."""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F

from .budget import resolve_device
from .train import TensorLoader, TrainConfig, Trainer


def _ce_loss(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)


def bench_trainer(
    *, steps: int = 60, batch_size: int = 128, repeats: int = 5, device: str = "auto", seed: int = 0
) -> dict[str, Any]:
    """Time the same model, data and optimiser with the Trainer and with a raw PyTorch loop.

    Both train :class:`~genai_course.models.DigitClassifier` with AdamW on batches sliced from
    the MNIST training tensors on the device.  The two loops alternate ``repeats`` times in one
    process (so both see the same machine load) after a warm-up, and the medians of their
    per-step times are compared.  The Trainer runs with its defaults (progress bar off, since
    the output is machine-readable).
    """
    from . import data
    from .models import DigitClassifier

    dev = resolve_device(device)
    x, y = data.load_mnist("train", device=dev)

    def fresh_model():
        torch.manual_seed(seed)
        return DigitClassifier().to(dev)

    def raw_loop(n: int) -> float:
        model = fresh_model()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(seed)
        per_epoch = len(x) // batch_size
        order = torch.randperm(len(x), generator=g).to(dev)
        start = time.perf_counter()
        for step in range(n):
            b = step % per_epoch
            if b == 0 and step:
                order = torch.randperm(len(x), generator=g).to(dev)
            idx = order[b * batch_size : (b + 1) * batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        loss.item()
        _sync(dev)
        return (time.perf_counter() - start) / n

    def trainer_loop(n: int) -> float:
        model = fresh_model()
        loader = TensorLoader(x, y, batch_size=batch_size, seed=seed)
        cfg = TrainConfig(
            steps=n,
            batch_size=batch_size,
            lr=1e-3,
            precision="fp32",
            device=str(dev),
            progress=False,
            log_every=max(10, n),
            seed=seed,
        )
        trainer = Trainer(model, loader, cfg, loss_fn=_ce_loss)
        start = time.perf_counter()
        trainer.fit()
        _sync(dev)
        return (time.perf_counter() - start) / n

    raw_loop(5), trainer_loop(5)  # warm-up: allocator, kernels, imports
    raw, tr = [], []
    for i in range(repeats):
        # alternate which goes first so drifts in machine load hit both
        if i % 2 == 0:
            raw.append(raw_loop(steps)), tr.append(trainer_loop(steps))
        else:
            tr.append(trainer_loop(steps)), raw.append(raw_loop(steps))
    raw_ms, tr_ms = statistics.median(raw) * 1e3, statistics.median(tr) * 1e3
    return {
        "bench": "trainer",
        "device": str(dev),
        "model": "DigitClassifier",
        "batch_size": batch_size,
        "steps": steps,
        "repeats": repeats,
        "raw_ms_per_step": round(raw_ms, 3),
        "trainer_ms_per_step": round(tr_ms, 3),
        "raw_ms_all": [round(v * 1e3, 3) for v in raw],
        "trainer_ms_all": [round(v * 1e3, 3) for v in tr],
        "ratio": round(tr_ms / raw_ms, 4),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
