"""Training-step time against the number format, memory format and compilation, and against
the batch size; the measured choice of bf16 autocast over fp32."""

from __future__ import annotations

import contextlib
import copy
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..budget import auto_precision, bf16_supported, resolve_device
from ..train import move_to
from .flops import count_flops, peak_flops
from .timing import check_positive, header, interleaved, ms, paired_speedup, timed
from .workloads import WORKLOADS, Workload, channels_last, course_workload, profile_for, train_step

#: Training-step variants of :func:`bench_precision` (fp16 autocast runs with a gradient
#: scaler, as the Trainer runs it; it is not among the defaults).
PRECISION_VARIANTS = (
    "fp32",
    "bf16",
    "channels_last",
    "channels_last+bf16",
    "compile",
    "compile+bf16",
    "fp16",
)


def _precision_of(variant: str) -> str:
    return "bf16" if "bf16" in variant else "fp16" if "fp16" in variant else "fp32"


def _variants_for(work: Workload, variants: Sequence[str]) -> list[str]:
    bad = [v for v in variants if v not in PRECISION_VARIANTS]
    if bad:
        raise ValueError(f"unknown variants {bad}; known: {PRECISION_VARIANTS}")
    return [v for v in variants if work.conv or "channels_last" not in v]


def _time_variants(
    work: Workload,
    variants: Sequence[str],
    batch_size: int,
    *,
    steps: int,
    repeats: int,
    warmup: int,
    device: torch.device,
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Seconds per training step of each variant (interleaved repeats), and the seconds of
    each variant's first step (which includes compilation)."""
    fns, first = {}, {}
    for v in variants:
        model = work.build().to(device)
        batch = work.batch(batch_size, device)
        if "channels_last" in v:
            model = model.to(memory_format=torch.channels_last)
            batch = channels_last(batch)
        fns[v] = train_step(
            model,
            batch,
            work.loss_fn,
            device,
            precision=_precision_of(v),
            compile="compile" in v,
        )
        first[v] = timed(fns[v], 1, device)
        for _ in range(warmup - 1):
            fns[v]()
    return interleaved(fns, steps, repeats, device), first


@contextlib.contextmanager
def _inductor_caches(enabled: bool):
    """Leave torch.compile's on-disk caches on, or switch them off inside the block."""
    if enabled:
        yield
        return
    import warnings

    from torch._inductor import config

    with warnings.catch_warnings(), config.patch(force_disable_caches=True):
        warnings.filterwarnings("ignore", message=".*force_disable_caches")
        yield


def choose_precision(
    fp32_seconds: float,
    bf16_seconds: float,
    device: str | torch.device = "auto",
    margin: float = 1.05,
) -> str:
    """``"bf16"`` when ``device`` has native bf16 support
    (:func:`~genai_course.budget.bf16_supported`) and bf16 autocast measured at least
    ``margin`` times faster than fp32 (step times in seconds); ``"fp32"`` otherwise.  The
    measured counterpart of the capability rule of :func:`~genai_course.budget.auto_precision`."""
    faster = fp32_seconds / bf16_seconds >= margin
    return "bf16" if bf16_supported(device) and faster else "fp32"


def measured_precision(
    model: nn.Module,
    batch: Any,
    loss_fn: Callable[[nn.Module, Any], Tensor],
    device: str | torch.device = "auto",
    *,
    steps: int = 2,
    repeats: int = 3,
    margin: float = 1.05,
) -> dict[str, Any]:
    """Time training steps of copies of ``model`` on ``batch`` in fp32 and with bf16 autocast
    and say which to train with (:func:`choose_precision`): ``{"choice", "fp32_ms",
    "bf16_ms", "speedup"}``.  ``model`` itself is not changed.  Use the choice as
    ``TrainConfig(precision=...)`` where ``"auto"`` (a capability rule, fp32 on every CPU)
    may leave speed unused, as on CPUs with native bf16 units."""
    check_positive(steps=steps, repeats=repeats)
    dev = resolve_device(device)
    batch = move_to(batch, dev)
    fns = {
        p: train_step(copy.deepcopy(model).to(dev), batch, loss_fn, dev, precision=p)
        for p in ("fp32", "bf16")
    }
    for fn in fns.values():
        fn()  # warm-up
    times = interleaved(fns, steps, repeats, dev)
    fp32, bf16 = statistics.median(times["fp32"]), statistics.median(times["bf16"])
    return {
        "choice": choose_precision(fp32, bf16, dev, margin),
        "fp32_ms": round(fp32 * 1e3, 4),
        "bf16_ms": round(bf16 * 1e3, 4),
        "speedup": paired_speedup(times["fp32"], times["bf16"]),
    }


def bench_precision(
    *,
    models: Sequence[str] = WORKLOADS,
    variants: Sequence[str] | None = None,
    compile: bool = False,
    compile_cache: bool = True,
    profile: str | None = None,
    unet_batch: int | None = None,
    gpt_batch: int | None = None,
    steps: int = 2,
    repeats: int = 3,
    warmup: int = 1,
    device: str = "auto",
) -> dict[str, Any]:
    """Training-step time of the U-Net and the GPT in fp32, with bf16 autocast, in the
    channels-last memory format (the conv model), and compiled.

    ``variants`` (default: fp32, bf16, channels_last, channels_last+bf16, plus compile with
    ``compile=True`` and compile+bf16 too on CUDA) are names from :data:`PRECISION_VARIANTS`
    (``"fp16"`` among them: fp16 autocast with a gradient scaler); channels-last ones apply to
    the U-Net only.  Models have the sizes of ``profile``'s
    recipes (default ``full`` on CUDA, ``cpu`` elsewhere) and their recipe's batch size unless
    ``unet_batch``/``gpt_batch`` say otherwise.  Each variant is a fresh model from the same
    initial weights; ``warmup`` steps (the first one timed separately, as ``first_step_s``: it
    includes compilation) precede ``repeats`` timings of ``steps`` steps.  Inductor keeps
    compiled code on disk, so a second run compiles faster; ``compile_cache=False`` ignores
    those caches, and ``first_step_s`` is then the full cost of compiling.

    Every row has the median ms per step, the throughput (images or tokens per second) and
    ``speedup`` over the model's fp32 row; rows with a FLOP count also have the achieved
    TFLOP/s and, on a GPU of :data:`PEAK_FLOPS`, ``mfu``.  ``choice`` is
    :func:`choose_precision` per model, next to ``auto_precision`` (the rule the Trainer's
    ``precision="auto"`` follows) and ``bf16_native``.
    """
    check_positive(steps=steps, repeats=repeats, warmup=warmup)
    dev = resolve_device(device)
    prof = profile_for(profile, dev)
    if variants is None:
        variants = ["fp32", "bf16", "channels_last", "channels_last+bf16"]
        if compile:
            variants += ["compile", "compile+bf16"] if dev.type == "cuda" else ["compile"]
    peak = peak_flops(dev)
    out = header(
        "precision",
        dev,
        profile=prof,
        steps=steps,
        repeats=repeats,
        warmup=warmup,
        bf16_native=bf16_supported(dev),
        auto_precision=auto_precision(dev),
        peak_tflops=None if peak is None else peak / 1e12,
    )
    rows, choice, flops = [], {}, {}
    for name in models:
        work = course_workload(name, prof)
        b = {"unet": unet_batch, "gpt": gpt_batch}.get(name) or work.default_batch
        names = _variants_for(work, variants)
        with _inductor_caches(compile_cache):
            times, first = _time_variants(
                work, names, b, steps=steps, repeats=repeats, warmup=warmup, device=dev
            )
        model, batch = work.build().to(dev), work.batch(b, dev)
        counted = count_flops(lambda m=model, x=batch, f=work.loss_fn: f(m, x).backward())
        formula = None if work.flops_per_example is None else work.flops_per_example * b
        flops[name] = {"per_step_formula": formula, "per_step_counted": counted}
        step_flops = formula or counted
        for v in names:
            med, all_ms = ms(times[v])
            tflops = step_flops / (med / 1e3) / 1e12
            rows.append(
                {
                    "model": name,
                    "variant": v,
                    "precision": _precision_of(v),
                    "channels_last": "channels_last" in v,
                    "compile": "compile" in v,
                    "batch_size": b,
                    "ms_per_step": med,
                    "ms_all": all_ms,
                    "throughput": round(b * work.units_per_example / (med / 1e3), 2),
                    "throughput_unit": f"{work.unit}/s",
                    "speedup": paired_speedup(times["fp32"], times[v]) if "fp32" in times else None,
                    "first_step_s": round(first[v], 3),
                    "tflops": round(tflops, 5),
                    "mfu": None if peak is None else round(tflops * 1e12 / peak, 4),
                }
            )
        if "fp32" in times and "bf16" in times:
            choice[name] = choose_precision(
                statistics.median(times["fp32"]), statistics.median(times["bf16"]), dev
            )
    out.update(choice=choice, flops=flops, results=rows)
    return out


def bench_batch_size(
    *,
    models: Sequence[str] = WORKLOADS,
    batch_sizes: Sequence[int] = (1, 4, 16, 64),
    precision: str = "auto",
    profile: str | None = None,
    steps: int = 2,
    repeats: int = 3,
    warmup: int = 1,
    device: str = "auto",
) -> dict[str, Any]:
    """Training throughput (images or tokens per second) of the U-Net and the GPT against the
    batch size: small batches leave the hardware idle between kernels; the curve flattens once
    one step keeps it busy.  ``precision`` ``"auto"`` is
    :func:`~genai_course.budget.auto_precision` (bf16 on CUDA, fp32 on CPUs).  Sizes and
    timing as in :func:`bench_precision`."""
    check_positive(steps=steps, repeats=repeats, warmup=warmup, batch_sizes=min(batch_sizes))
    dev = resolve_device(device)
    prof = profile_for(profile, dev)
    precision = auto_precision(dev) if precision == "auto" else precision
    out = header("batch-size", dev, profile=prof, precision=precision, steps=steps, repeats=repeats)
    rows = []
    for name in models:
        work = course_workload(name, prof)
        fns = {}
        for b in batch_sizes:
            fns[b] = train_step(
                work.build().to(dev), work.batch(b, dev), work.loss_fn, dev, precision=precision
            )
            for _ in range(warmup):
                fns[b]()
        times = interleaved(fns, steps, repeats, dev)
        for b in batch_sizes:
            med, all_ms = ms(times[b])
            rows.append(
                {
                    "model": name,
                    "batch_size": b,
                    "ms_per_step": med,
                    "ms_all": all_ms,
                    "throughput": round(b * work.units_per_example / (med / 1e3), 2),
                    "throughput_unit": f"{work.unit}/s",
                }
            )
    out["results"] = rows
    return out


def summarise_precision(result: dict[str, Any]) -> str:
    """One line: each variant's speed-up over fp32, and the measured choice."""
    parts = [
        f"{r['model']} {r['variant']} {r['speedup']:.2f}x"
        for r in result["results"]
        if r["variant"] != "fp32" and r["speedup"] is not None
    ]
    choice = " ".join(f"{k}={v}" for k, v in result["choice"].items())
    return (
        f"speed-up over fp32 on {result['device']}: {', '.join(parts)}; measured choice "
        f"{choice} (auto: {result['auto_precision']}, bf16 native: {result['bf16_native']})"
    )


def summarise_batch_size(result: dict[str, Any]) -> str:
    """One line: the throughput at each batch size."""
    parts = [
        f"{r['model']}@{r['batch_size']} {r['throughput']:.4g} {r['throughput_unit']}"
        for r in result["results"]
    ]
    return f"training throughput on {result['device']}: " + ", ".join(parts)
