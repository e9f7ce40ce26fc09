"""AdamW's step three ways: a Python loop over the tensors, ``foreach`` and ``fused``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..budget import resolve_device
from .timing import check_positive, header, interleaved, ms, paired_speedup
from .workloads import WORKLOADS, adamw, course_workload, profile_for

#: AdamW implementations of :func:`bench_optimizer`.
OPTIMIZER_IMPLS = ("for-loop", "foreach", "fused")


def bench_optimizer(
    *,
    models: Sequence[str] = WORKLOADS,
    profile: str | None = None,
    steps: int = 20,
    repeats: int = 5,
    device: str = "auto",
    seed: int = 0,
) -> dict[str, Any]:
    """Time of one AdamW step over the parameters of the U-Net and of the GPT, three ways:
    a Python loop over the tensors (``foreach=False``), ``foreach`` (one kernel per operation
    over lists of tensors) and ``fused`` (one kernel for the whole update), where this device
    and torch support it.  The gradients are random and fixed; every implementation takes
    the same number of steps from the same start, and ``max_abs_diff`` says how far its
    weights end from the for-loop's (the three compute the same update)."""
    check_positive(steps=steps, repeats=repeats)
    dev = resolve_device(device)
    prof = profile_for(profile, dev)
    out = header("optimizer", dev, profile=prof, steps=steps, repeats=repeats)
    rows = []
    for name in models:
        start = [p.detach().to(dev) for p in course_workload(name, prof).build().parameters()]
        g = torch.Generator().manual_seed(seed)
        grads = [torch.randn(p.shape, generator=g).to(dev) for p in start]
        params, fns, supported = {}, {}, {}
        for impl in OPTIMIZER_IMPLS:
            ps = [p.clone().requires_grad_(True) for p in start]
            for p, gr in zip(ps, grads):
                p.grad = gr.clone()
            try:
                opt = adamw(ps, impl, dev)
                opt.step()  # warm-up; unsupported implementations raise here or above
            except (RuntimeError, ValueError) as err:
                supported[impl] = str(err).splitlines()[0][:200]
                continue
            params[impl], fns[impl], supported[impl] = ps, opt.step, True
        times = interleaved(fns, steps, repeats, dev)
        n_params = sum(p.numel() for p in start)
        for impl in OPTIMIZER_IMPLS:
            row: dict[str, Any] = {"model": name, "impl": impl, "params": n_params}
            if supported[impl] is not True:
                rows.append({**row, "supported": False, "reason": supported[impl]})
                continue
            med, all_ms = ms(times[impl])
            diff = max(
                float((a - b).detach().abs().max())
                for a, b in zip(params[impl], params["for-loop"])
            )
            speed = paired_speedup(times["for-loop"], times[impl])
            rows.append(
                {
                    **row,
                    "supported": True,
                    "ms_per_step": med,
                    "ms_all": all_ms,
                    "speedup": speed,
                    "max_abs_diff": diff,
                }
            )
    out["results"] = rows
    return out


def summarise_optimizer(result: dict[str, Any]) -> str:
    """One line: ms per step of each implementation (or that it is unsupported)."""
    parts = [
        f"{r['model']} {r['impl']} {r['ms_per_step']:.3g} ms"
        if r["supported"]
        else f"{r['model']} {r['impl']} unsupported"
        for r in result["results"]
    ]
    return f"AdamW step on {result['device']}: " + ", ".join(parts)
