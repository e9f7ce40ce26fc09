"""The Trainer's cost per step against a raw PyTorch loop doing the same work."""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F

from ..budget import resolve_device
from ..train import TensorLoader, TrainConfig, Trainer
from .timing import header, ms, sync


def _ce_loss(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)


def bench_trainer(
    *, steps: int = 60, batch_size: int = 128, repeats: int = 9, device: str = "auto", seed: int = 0
) -> dict[str, Any]:
    """Time the same model, data and optimiser with the Trainer and with a raw PyTorch loop.

    Both train :class:`~genai_course.models.DigitClassifier` with AdamW on batches sliced from
    the MNIST training tensors on the device.  The two loops alternate ``repeats`` times in one
    process (so both see the same machine load) after a warm-up, and their
    per-step times are compared pair by pair: ``ratio`` is the median of trainer/raw over the
    pairs (``ratio_all`` lists them, in the order run), ``overhead_ms`` the median of
    trainer minus raw in ms per step (what the Trainer's bookkeeping costs a step, if it is
    not noise; the spread of ``ratio_all`` says how much is), and ``ratio_of_mins`` compares
    the fastest run of each.  The Trainer runs with its defaults (progress bar off, since the
    output is machine-readable).
    """
    from .. import data
    from ..models import DigitClassifier

    dev = resolve_device(device)
    x, y = data.load_mnist("train", device=dev)

    def fresh_model():
        torch.manual_seed(seed)
        return DigitClassifier().to(dev)

    def raw_loop(n: int) -> float:
        model = fresh_model()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
        g = torch.Generator().manual_seed(seed)
        per_epoch = len(x) // batch_size
        order = torch.randperm(len(x), generator=g).to(dev)
        start = time.perf_counter()
        for step in range(n):
            b = step % per_epoch
            if b == 0 and step:
                order = torch.randperm(len(x), generator=g).to(dev)
            idx = order[b * batch_size : (b + 1) * batch_size]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
        loss.item()
        sync(dev)
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
        sync(dev)
        return (time.perf_counter() - start) / n

    raw_loop(5), trainer_loop(5)  # warm-up: allocator, kernels, imports
    raw, tr = [], []
    for i in range(repeats):
        # alternate which goes first so drifts in machine load hit both
        if i % 2 == 0:
            raw.append(raw_loop(steps)), tr.append(trainer_loop(steps))
        else:
            tr.append(trainer_loop(steps)), raw.append(raw_loop(steps))
    # Each pair ran back to back, so the ratio within a pair cancels slow drifts in machine
    # load; the median over pairs is robust to the odd disturbed run.
    ratios = [t / r for t, r in zip(tr, raw)]
    overhead_ms = statistics.median((t - r) * 1e3 for t, r in zip(tr, raw))
    (raw_ms, raw_all), (tr_ms, tr_all) = ms(raw), ms(tr)
    return {
        **header(
            "trainer",
            dev,
            model="DigitClassifier",
            batch_size=batch_size,
            steps=steps,
            repeats=repeats,
        ),
        "raw_ms_per_step": raw_ms,
        "trainer_ms_per_step": tr_ms,
        "raw_ms_min": min(raw_all),
        "trainer_ms_min": min(tr_all),
        "raw_ms_all": raw_all,
        "trainer_ms_all": tr_all,
        "ratio": round(statistics.median(ratios), 4),
        "ratio_all": [round(v, 4) for v in ratios],
        "overhead_ms": round(overhead_ms, 4),
        "ratio_of_mins": round(min(tr) / min(raw), 4),
    }


def summarise_trainer(result: dict[str, Any]) -> str:
    """One line: the median trainer/raw ratio."""
    return f"trainer/raw step-time ratio: {result['ratio']:.2f}"
