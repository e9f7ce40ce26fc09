"""Benchmarks behind ``genai-course bench``; each returns a dict of JSON-ready results.

Every benchmark times real work of the course: a training step of the diffusion U-Net or of
the GPT, an optimiser step, a stream of batches, sampling, a two-process training run.  Each
result holds the device, the torch version, the number of threads, the sizes, and for every
thing timed the median over ``repeats`` and all the repeats.  Variants being compared run in
turn inside each repeat (the order alternating), so that a drift in machine load hits them
all alike; speed-ups are medians of the ratios within a repeat.

On CUDA the clock stops only after :func:`torch.cuda.synchronize`, optimisers are fused, and
the GPT's training step reports its model FLOPs utilisation (:func:`gpt_flops_per_token` over
:func:`peak_flops`).

``python -m genai_course.bench --rank-report DIR ARGS...`` runs ``genai-course ARGS...`` and then
writes this process's rank, world size and a digest of each trained model's weights to
``DIR/rank-R.json``; :func:`bench_ddp` launches it under ``torchrun`` to check that the
replicas of data-parallel training end identical.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .budget import auto_precision, bf16_supported, resolve_device
from .train import TensorLoader, TrainConfig, Trainer, distributed_env, move_to

WORKLOADS = ("unet", "gpt")
GPT_VOCAB = 103  # characters of the Python-reference corpus (recipes.python_docs_tokenizer)


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
    from . import data
    from .models import DigitClassifier

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
    # Each pair ran back to back, so the ratio within a pair cancels slow drifts in machine
    # load; the median over pairs is robust to the odd disturbed run.
    ratios = [t / r for t, r in zip(tr, raw)]
    overhead_ms = statistics.median((t - r) * 1e3 for t, r in zip(tr, raw))
    (raw_ms, raw_all), (tr_ms, tr_all) = _ms(raw), _ms(tr)
    return {
        **_header(
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


# ----------------------------------------------------------------------------------------------
# helpers


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _header(bench: str, dev: torch.device, **sizes: Any) -> dict[str, Any]:
    """The fields every result starts with: what ran, where, and with which sizes."""
    return {
        "bench": bench,
        "device": str(dev),
        "device_name": device_name(dev),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        **sizes,
    }


def device_name(device: str | torch.device | None = "auto") -> str:
    """The GPU's name on CUDA, else the CPU's model name (from ``/proc/cpuinfo`` on Linux)."""
    dev = resolve_device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    if dev.type == "cpu":
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("model name"):
                        return line.split(":", 1)[1].strip()
        except OSError:
            pass
    import platform

    return platform.processor() or platform.machine() or dev.type


def _ms(seconds: Sequence[float]) -> tuple[float, list[float]]:
    """(median, all) of per-step times in seconds, as milliseconds rounded to 4 digits."""
    return round(statistics.median(seconds) * 1e3, 4), [round(s * 1e3, 4) for s in seconds]


def _paired_speedup(base: Sequence[float], other: Sequence[float]) -> float:
    """Median over repeats of base/other: how many times faster ``other`` ran."""
    return round(statistics.median(b / o for b, o in zip(base, other)), 4)


def _timed(fn: Callable[[], Any], n: int, device: torch.device) -> float:
    """Seconds per call of ``fn`` over ``n`` calls, the device synchronised at both ends."""
    _sync(device)
    start = time.perf_counter()
    for _ in range(n):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / n


def _interleaved(
    fns: dict[str, Callable[[], Any]], n: int, repeats: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds per call of each function, ``repeats`` times, the functions taking turns (in
    alternating order) within each repeat."""
    names = list(fns)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(repeats):
        for k in names if r % 2 == 0 else names[::-1]:
            times[k].append(_timed(fns[k], n, device))
    return times


def _check_positive(**values: int) -> None:
    for name, v in values.items():
        if int(v) < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")


# ----------------------------------------------------------------------------------------------
# the workloads: the course's conv model and its transformer, at a profile's size


@dataclass
class Workload:
    """One of the course's models with a synthetic training batch, for timing training steps.

    ``build()`` returns a fresh model (the same initial weights every call);
    ``batch(b, device)`` a training batch of ``b`` examples on ``device``; ``loss_fn(model,
    batch)`` the scalar loss.  One example holds ``units_per_example`` of ``unit`` (one image;
    ``T`` tokens).  ``flops_per_example`` is the analytic training cost (forward and backward)
    where one is known (the GPT), else None.
    """

    name: str
    build: Callable[[], nn.Module]
    batch: Callable[[int, torch.device], Any]
    loss_fn: Callable[[nn.Module, Any], Tensor]
    unit: str
    units_per_example: int
    conv: bool
    default_batch: int
    config: dict[str, Any]
    flops_per_example: float | None = None


def _diffusion_loss(model: nn.Module, batch: Any) -> Tensor:
    return model.loss(batch)[0]


def _gpt_loss(model: nn.Module, batch: Any) -> Tensor:
    return model.loss(batch)


def course_workload(name: str, profile: str = "cpu", seed: int = 0) -> Workload:
    """The ``"unet"`` (the MNIST diffusion model of chapters 12-13: its U-Net inside
    :class:`~genai_course.models.diffusion.Diffusion`, 28x28 images) or the ``"gpt"`` (the
    char-level GPT of chapter 09, full-length windows) with the sizes the recipes use for
    ``profile`` (:func:`~genai_course.recipes.diffusion_settings`,
    :func:`~genai_course.recipes.gpt_pydocs_settings`).  Inputs are random: the time of a step
    does not depend on the values."""
    from .models.diffusion import Diffusion, DiffusionConfig
    from .models.gpt import GPT, GPTConfig
    from .models.unet import UNet, UNetConfig
    from .recipes import diffusion_settings, gpt_pydocs_settings

    if name == "unet":
        st = diffusion_settings(profile)
        unet_cfg = UNetConfig(**st["unet"])

        def build_unet() -> nn.Module:
            with torch.random.fork_rng(devices=[]):  # the caller's generator stays untouched
                torch.manual_seed(seed)
                return Diffusion(UNet(unet_cfg), DiffusionConfig(**st["diffusion"]))

        def unet_batch(b: int, device: torch.device) -> tuple[Tensor, Tensor]:
            g = torch.Generator().manual_seed(seed)
            x = torch.rand(b, 1, 28, 28, generator=g)
            return x.to(device), torch.randint(0, 10, (b,), generator=g).to(device)

        return Workload(
            "unet",
            build_unet,
            unet_batch,
            _diffusion_loss,
            unit="images",
            units_per_example=1,
            conv=True,
            default_batch=st["train"]["batch_size"],
            config=unet_cfg.to_dict(),
        )
    if name == "gpt":
        model_kw, train_kw = gpt_pydocs_settings(profile)
        gpt_cfg = GPTConfig(vocab_size=GPT_VOCAB, **model_kw)
        t = gpt_cfg.block_size

        def build_gpt() -> nn.Module:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return GPT(GPTConfig(**gpt_cfg.to_dict()))

        def gpt_batch(b: int, device: torch.device) -> tuple[Tensor, Tensor]:
            g = torch.Generator().manual_seed(seed)
            idx = torch.randint(0, GPT_VOCAB, (b, t + 1), generator=g).to(device)
            return idx[:, :-1], idx[:, 1:]

        n_params = build_gpt().num_params(embeddings=False)
        per_token = gpt_flops_per_token(n_params, gpt_cfg.n_layer, gpt_cfg.n_embd, t)
        return Workload(
            "gpt",
            build_gpt,
            gpt_batch,
            _gpt_loss,
            unit="tokens",
            units_per_example=t,
            conv=False,
            default_batch=train_kw["batch_size"],
            config={k: v for k, v in gpt_cfg.to_dict().items() if k != "vocab"},
            flops_per_example=per_token * t,
        )
    raise ValueError(f"workload must be one of {WORKLOADS}, got {name!r}")


def _profile_for(profile: str | None, dev: torch.device) -> str:
    """Model sizes: the given profile, else ``full`` on CUDA and ``cpu`` elsewhere."""
    return profile or ("full" if dev.type == "cuda" else "cpu")


# ----------------------------------------------------------------------------------------------
# FLOPs


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


# ----------------------------------------------------------------------------------------------
# training-step variants: precision, memory format, compilation


#: Training-step variants of :func:`bench_precision`.
PRECISION_VARIANTS = (
    "fp32",
    "bf16",
    "channels_last",
    "channels_last+bf16",
    "compile",
    "compile+bf16",
)


def train_step(
    model: nn.Module,
    batch: Any,
    loss_fn: Callable[[nn.Module, Any], Tensor],
    device: torch.device,
    *,
    precision: str = "fp32",
    compile: bool = False,
    optimizer: str = "auto",
) -> Callable[[], Tensor]:
    """A function doing one AdamW training step of ``model`` on ``batch`` (zero the gradients,
    forward under autocast, backward, update) and returning the loss.  ``precision`` is
    ``"fp32"`` or ``"bf16"`` (autocast); ``compile`` wraps the loss computation in
    :func:`torch.compile`; ``optimizer`` is ``"auto"`` (fused on CUDA, torch's default
    elsewhere), ``"for-loop"``, ``"foreach"`` or ``"fused"``."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    opt = _adamw(list(model.parameters()), optimizer if optimizer != "auto" else None, device)

    def loss_of(b: Any) -> Tensor:
        return loss_fn(model, b)

    forward = torch.compile(loss_of) if compile else loss_of

    def step() -> Tensor:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = forward(batch)
        loss.backward()
        opt.step()
        return loss

    return step


def _adamw(params: list[Tensor], impl: str | None, device: torch.device) -> torch.optim.AdamW:
    """AdamW with implementation ``impl`` (None: fused on CUDA, torch's default elsewhere)."""
    if impl is None:
        impl = "fused" if device.type == "cuda" else "default"
    kw = {
        "for-loop": {"foreach": False},
        "foreach": {"foreach": True},
        "fused": {"fused": True},
        "default": {},
    }[impl]
    return torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01, **kw)


def _channels_last(batch: Any) -> Any:
    if isinstance(batch, Tensor):
        return batch.contiguous(memory_format=torch.channels_last) if batch.ndim == 4 else batch
    return type(batch)(_channels_last(b) for b in batch)


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
            batch = _channels_last(batch)
        fns[v] = train_step(
            model,
            batch,
            work.loss_fn,
            device,
            precision="bf16" if "bf16" in v else "fp32",
            compile="compile" in v,
        )
        first[v] = _timed(fns[v], 1, device)
        for _ in range(warmup - 1):
            fns[v]()
    return _interleaved(fns, steps, repeats, device), first


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
    import copy

    _check_positive(steps=steps, repeats=repeats)
    dev = resolve_device(device)
    batch = move_to(batch, dev)
    fns = {
        p: train_step(copy.deepcopy(model).to(dev), batch, loss_fn, dev, precision=p)
        for p in ("fp32", "bf16")
    }
    for fn in fns.values():
        fn()  # warm-up
    times = _interleaved(fns, steps, repeats, dev)
    fp32, bf16 = statistics.median(times["fp32"]), statistics.median(times["bf16"])
    return {
        "choice": choose_precision(fp32, bf16, dev, margin),
        "fp32_ms": round(fp32 * 1e3, 4),
        "bf16_ms": round(bf16 * 1e3, 4),
        "speedup": _paired_speedup(times["fp32"], times["bf16"]),
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
    ``compile=True`` and compile+bf16 too on CUDA) are names from :data:`PRECISION_VARIANTS`;
    channels-last ones apply to the U-Net only.  Models have the sizes of ``profile``'s
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
    _check_positive(steps=steps, repeats=repeats, warmup=warmup)
    dev = resolve_device(device)
    prof = _profile_for(profile, dev)
    if variants is None:
        variants = ["fp32", "bf16", "channels_last", "channels_last+bf16"]
        if compile:
            variants += ["compile", "compile+bf16"] if dev.type == "cuda" else ["compile"]
    peak = peak_flops(dev)
    out = _header(
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
            med, all_ms = _ms(times[v])
            tflops = step_flops / (med / 1e3) / 1e12
            rows.append(
                {
                    "model": name,
                    "variant": v,
                    "precision": "bf16" if "bf16" in v else "fp32",
                    "channels_last": "channels_last" in v,
                    "compile": "compile" in v,
                    "batch_size": b,
                    "ms_per_step": med,
                    "ms_all": all_ms,
                    "throughput": round(b * work.units_per_example / (med / 1e3), 2),
                    "throughput_unit": f"{work.unit}/s",
                    "speedup": _paired_speedup(times["fp32"], times[v])
                    if "fp32" in times
                    else None,
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
    _check_positive(steps=steps, repeats=repeats, warmup=warmup, batch_sizes=min(batch_sizes))
    dev = resolve_device(device)
    prof = _profile_for(profile, dev)
    precision = auto_precision(dev) if precision == "auto" else precision
    out = _header(
        "batch-size", dev, profile=prof, precision=precision, steps=steps, repeats=repeats
    )
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
        times = _interleaved(fns, steps, repeats, dev)
        for b in batch_sizes:
            med, all_ms = _ms(times[b])
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


# ----------------------------------------------------------------------------------------------
# optimisers


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
    _check_positive(steps=steps, repeats=repeats)
    dev = resolve_device(device)
    prof = _profile_for(profile, dev)
    out = _header("optimizer", dev, profile=prof, steps=steps, repeats=repeats)
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
                opt = _adamw(ps, impl, dev)
                opt.step()  # warm-up; unsupported implementations raise here or above
            except (RuntimeError, ValueError) as err:
                supported[impl] = str(err).splitlines()[0][:200]
                continue
            params[impl], fns[impl], supported[impl] = ps, opt.step, True
        times = _interleaved(fns, steps, repeats, dev)
        n_params = sum(p.numel() for p in start)
        for impl in OPTIMIZER_IMPLS:
            row: dict[str, Any] = {"model": name, "impl": impl, "params": n_params}
            if supported[impl] is not True:
                rows.append({**row, "supported": False, "reason": supported[impl]})
                continue
            med, all_ms = _ms(times[impl])
            diff = max(
                float((a - b).detach().abs().max())
                for a, b in zip(params[impl], params["for-loop"])
            )
            speed = _paired_speedup(times["for-loop"], times[impl])
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


# ----------------------------------------------------------------------------------------------
# data loading


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

    from . import data

    _check_positive(batch_size=batch_size, batches=batches, repeats=repeats)
    dev = resolve_device(device)
    x, y = data.load_mnist("train")
    out = _header(
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
            first[k] = _timed(fn, 1, dev)
        times = _interleaved(nexts, batches, repeats, dev)
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
                "times_slower_than_tensorloader": _paired_speedup(fn_times, times["TensorLoader"]),
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


# ----------------------------------------------------------------------------------------------
# sampling


def bench_sampling(
    *,
    pretrained: bool = True,
    n_images: int = 4,
    ddim_steps: Sequence[int] = (10, 50),
    ddpm: bool = True,
    new_tokens: int = 200,
    prompt: str = "The ",
    repeats: int = 1,
    profile: str = "smoke",
    timesteps: int = 1000,
    device: str = "auto",
    seed: int = 0,
) -> dict[str, Any]:
    """Images per second of DDPM (all T steps) against DDIM with ``ddim_steps`` steps, and
    tokens per second of GPT generation with and without the KV cache.

    With ``pretrained`` the models are the shipped ``diffusion-mnist`` and ``gpt-pydocs``;
    otherwise fresh ones with ``profile``'s recipe sizes and ``timesteps`` diffusion steps
    (speed does not depend on training).  Generation is greedy from ``prompt`` (batch 1),
    and ``cache_matches`` says whether the cached and uncached runs produced the same text.
    """
    from .models.diffusion import Diffusion, DiffusionConfig
    from .models.gpt import GPT, GPTConfig
    from .models.unet import UNet, UNetConfig
    from .pretrained import load_pretrained
    from .recipes import diffusion_settings, gpt_pydocs_settings

    _check_positive(n_images=n_images, repeats=repeats, new_tokens=new_tokens)
    dev = resolve_device(device)
    if pretrained:
        diffusion = load_pretrained("diffusion-mnist", device=dev)
        gpt = load_pretrained("gpt-pydocs", device=dev)
    else:
        torch.manual_seed(seed)
        st = diffusion_settings(profile)
        diff_cfg = DiffusionConfig(**{**st["diffusion"], "timesteps": timesteps})
        diffusion = Diffusion(UNet(UNetConfig(**st["unet"])), diff_cfg).to(dev).eval()
        gpt = GPT(GPTConfig(vocab_size=GPT_VOCAB, **gpt_pydocs_settings(profile)[0])).to(dev)
    out = _header(
        "sampling",
        dev,
        pretrained=pretrained,
        n_images=n_images,
        timesteps=diffusion.T,
        new_tokens=new_tokens,
        repeats=repeats,
    )
    rows = []

    medians: dict[tuple, float] = {}  # unrounded, for the ratios

    def sampler_row(sampler: str, steps: int, fn: Callable[[torch.Generator], Any]) -> None:
        secs = []
        for r in range(repeats):
            g = torch.Generator(device=dev).manual_seed(seed + r)
            secs.append(_timed(lambda g=g: fn(g), 1, dev))
        s = medians[(sampler, steps)] = statistics.median(secs)
        rows.append(
            {
                "model": "diffusion",
                "sampler": sampler,
                "steps": steps,
                "seconds": round(s, 4),
                "seconds_all": [round(v, 4) for v in secs],
                "images_per_s": round(n_images / s, 3),
                "ms_per_network_eval": round(s / steps * 1e3, 3),
            }
        )

    diffusion.ddim_sample(1, steps=2)  # warm-up: allocator, first-call costs
    gpt.generate(torch.zeros(1, 1, dtype=torch.long, device=dev), 2)
    for k in ddim_steps:
        sampler_row("ddim", k, lambda g, k=k: diffusion.ddim_sample(n_images, steps=k, generator=g))
    if ddpm:
        sampler_row("ddpm", diffusion.T, lambda g: diffusion.ddpm_sample(n_images, generator=g))

    if gpt.config.vocab:
        ids = gpt.tokenizer.encode(prompt).to(dev)[None]
    else:  # an untrained model has no tokenizer: as many token 0s as the prompt has characters
        ids = torch.zeros(1, len(prompt), dtype=torch.long, device=dev)
    texts = {}
    for cache in (True, False):
        secs = []
        for _ in range(repeats):
            start = time.perf_counter()
            texts[cache] = gpt.generate(ids, new_tokens, greedy=True, use_cache=cache)
            _sync(dev)
            secs.append(time.perf_counter() - start)
        s = medians[("gpt", cache)] = statistics.median(secs)
        rows.append(
            {
                "model": "gpt",
                "kv_cache": cache,
                "new_tokens": new_tokens,
                "seconds": round(s, 4),
                "seconds_all": [round(v, 4) for v in secs],
                "tokens_per_s": round(new_tokens / s, 2),
            }
        )
    speed = {}
    if ddpm:
        ddpm_s = medians[("ddpm", diffusion.T)]
        speed = {f"ddim{k}_vs_ddpm": round(ddpm_s / medians[("ddim", k)], 2) for k in ddim_steps}
    speed["kv_cache"] = round(medians[("gpt", False)] / medians[("gpt", True)], 2)
    out.update(
        cache_matches=bool(torch.equal(texts[True], texts[False])), speedup=speed, results=rows
    )
    return out


# ----------------------------------------------------------------------------------------------
# data-parallel training: torchrun, checked


def param_digest(module: nn.Module, *, buffers: bool = False) -> str:
    """SHA-256 of a module's parameters (or, with ``buffers``, its buffers): names, dtypes,
    shapes and bytes, in registration order.  Equal digests mean bitwise-equal weights."""
    h = hashlib.sha256()
    items = module.named_buffers() if buffers else module.named_parameters()
    for name, t in items:
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def free_port() -> int:
    """A TCP port on localhost that is free now (for torchrun's ``--master_port``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_LAUNCH_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def bench_ddp(
    *,
    model: str = "classifier",
    profile: str = "smoke",
    nproc: int = 2,
    threads: int = 1,
    folder: str | Path | None = None,
    port: int | None = None,
    device: str = "auto",
    timeout: float = 300,
) -> dict[str, Any]:
    """Train recipe ``model`` with ``genai-course train`` in ``nproc`` processes under
    ``torchrun`` and check the run: every rank ends with bitwise-identical parameters, and
    rank 0 alone writes the checkpoint, the ``.safetensors`` file and the manifest, once each.

    The processes run ``genai-course train MODEL --profile PROFILE --out FOLDER/out
    --checkpoint-dir FOLDER/checkpoints`` through ``python -m genai_course.bench --rank-report
    FOLDER/ranks``, which only records: each rank reports the files it wrote and the digests
    (:func:`param_digest`) of its model's parameters and buffers.  ``writes`` maps each file
    (relative to ``FOLDER``) to the ranks that wrote it, one entry per write.  Backend: nccl
    with one GPU per process when there are ``nproc`` GPUs (and ``device`` allows), else gloo
    on the CPU with ``threads`` threads per process.  ``command`` is the plain ``torchrun``
    command line of the same run; ``result`` is the JSON line rank 0 printed.  Without
    ``folder`` a temporary one is used and removed.  Raises RuntimeError, with the end of the
    processes' output, if the run fails.
    """
    _check_positive(nproc=nproc, threads=threads)
    if folder is None:
        with tempfile.TemporaryDirectory(prefix="genai-ddp-") as tmp:
            return bench_ddp(
                model=model,
                profile=profile,
                nproc=nproc,
                threads=threads,
                folder=tmp,
                port=port,
                device=device,
                timeout=timeout,
            )
    use_cuda = (
        device in ("auto", "cuda")
        and torch.cuda.is_available()
        and torch.cuda.device_count() >= nproc
    )
    folder = Path(folder).resolve()
    out_dir, ckpt_dir, ranks_dir = folder / "out", folder / "checkpoints", folder / "ranks"
    port = port or free_port()
    train_args = ["train", model, "--profile", profile, "--out", str(out_dir)]
    train_args += ["--checkpoint-dir", str(ckpt_dir), "--no-progress"]
    train_args += [] if use_cuda else ["--device", "cpu"]
    launcher = [f"--nproc_per_node={nproc}", f"--master_port={port}"]
    cmd = [sys.executable, "-m", "torch.distributed.run", *launcher]
    cmd += ["-m", "genai_course.bench", "--rank-report", str(ranks_dir), *train_args]
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCH_ENV}
    env["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise RuntimeError(f"torchrun exited with {proc.returncode}:\n{tail}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    reports = [json.loads(p.read_text()) for p in sorted(ranks_dir.glob("rank-*.json"))]
    if len(reports) != nproc:
        raise RuntimeError(f"expected {nproc} rank reports in {ranks_dir}, found {len(reports)}")
    params = [[t["params"] for t in r["trainers"]] for r in reports]
    bufs = [[t["buffers"] for t in r["trainers"]] for r in reports]
    writes: dict[str, list[int]] = {}
    for r in reports:
        for path in r["written"]:
            writes.setdefault(str(Path(path).relative_to(folder)), []).append(r["rank"])
    from .pretrained import read_manifest

    def names(d: Path) -> list[str]:
        return sorted(p.name for p in d.iterdir()) if d.is_dir() else []

    return {
        **_header("ddp", torch.device("cuda" if use_cuda else "cpu")),
        "model": model,
        "profile": profile,
        "nproc": nproc,
        "backend": "nccl" if use_cuda else "gloo",
        "threads_per_process": threads,
        "command": " ".join(["torchrun", *launcher, "-m", "genai_course.cli", *train_args]),
        "seconds": round(seconds, 2),
        "world_sizes": [r["world_size"] for r in reports],
        "steps": [[t["step"] for t in r["trainers"]] for r in reports],
        "replicas_identical": all(p == params[0] for p in params),
        "buffers_identical": all(b == bufs[0] for b in bufs),
        "param_digests": [[d[:16] for d in p] for p in params],
        "writes": dict(sorted(writes.items())),
        "written_once_by_rank0": bool(writes) and all(w == [0] for w in writes.values()),
        "files": {"out": names(out_dir), "checkpoints": names(ckpt_dir)},
        "manifest_entries": sorted(read_manifest(out_dir)),
        "result": json.loads(lines[-1]) if lines else None,
        "stdout": proc.stdout[-2000:],
        "stderr": proc.stderr[-2000:],
    }


@contextlib.contextmanager
def _recording_runs(trained: list[Trainer], written: list[str]):
    """While inside, every Trainer whose ``fit`` runs is appended to ``trained`` and every
    file written through :func:`~genai_course.checkpoint.atomic_write` (checkpoints,
    ``.safetensors``, manifests) to ``written``."""
    from . import checkpoint, pretrained

    fit, write = Trainer.fit, checkpoint.atomic_write

    def recording_fit(self: Trainer, *args: Any, **kwargs: Any) -> Any:
        trained.append(self)
        return fit(self, *args, **kwargs)

    def recording_write(path: str | Path, *args: Any, **kwargs: Any) -> Path:
        written.append(str(Path(path).resolve()))
        return write(path, *args, **kwargs)

    Trainer.fit = recording_fit
    checkpoint.atomic_write = pretrained.atomic_write = recording_write
    try:
        yield
    finally:
        Trainer.fit = fit
        checkpoint.atomic_write = pretrained.atomic_write = write


def _rank_report(argv: list[str]) -> int:
    """``--rank-report DIR ARGS...``: run ``genai-course ARGS...``, then write this rank's
    ``DIR/rank-R.json``: its rank and world size, the files it wrote, and for each Trainer
    that trained the step it reached and the digests of its model's parameters and buffers."""
    from . import cli

    if len(argv) < 2 or argv[0] != "--rank-report":
        print("usage: python -m genai_course.bench --rank-report DIR ARGS...", file=sys.stderr)
        return 2
    folder, cli_args = Path(argv[1]), argv[2:]
    trained: list[Trainer] = []
    written: list[str] = []
    with _recording_runs(trained, written):
        code = cli.main(cli_args)
    rank, _, world = distributed_env()
    report = {
        "rank": rank,
        "world_size": world,
        "written": written,
        "trainers": [
            {
                "step": t.step,
                "params": param_digest(t.model),
                "buffers": param_digest(t.model, buffers=True),
            }
            for t in trained
        ],
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"rank-{rank}.json").write_text(json.dumps(report))
    return code


# ----------------------------------------------------------------------------------------------
# the registry behind ``genai-course bench``


#: The benchmarks of ``genai-course bench NAME``.
BENCHES: dict[str, Callable[..., dict[str, Any]]] = {
    "trainer": bench_trainer,
    "precision": bench_precision,
    "batch-size": bench_batch_size,
    "optimizer": bench_optimizer,
    "dataloading": bench_dataloading,
    "sampling": bench_sampling,
    "ddp": bench_ddp,
}

#: Sizes that run each benchmark in seconds (continuous integration, ``--tiny``).
TINY: dict[str, dict[str, Any]] = {
    "trainer": dict(steps=3, batch_size=32, repeats=1),
    "precision": dict(profile="smoke", unet_batch=4, gpt_batch=4, steps=1, repeats=1),
    "batch-size": dict(profile="smoke", batch_sizes=(1, 4), steps=1, repeats=1),
    "optimizer": dict(profile="smoke", steps=2, repeats=1),
    "dataloading": dict(batch_size=32, batches=5, repeats=1, workers=(0,)),
    "sampling": dict(
        pretrained=False, timesteps=20, n_images=2, ddim_steps=(5,), new_tokens=8, repeats=1
    ),
    "ddp": dict(model="classifier", profile="smoke"),
}


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """``columns`` of result rows as a fixed-width text table (floats to 4 significant
    digits, None as ``-``), one line per row under a header."""

    def cell(v: Any) -> str:
        if v is None:
            return "-"
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    body = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(b[i]) for b in body]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.rjust(w) for v, w in zip(b, widths)) for b in body]
    return "\n".join(lines)


def summary(result: dict[str, Any]) -> str:
    """A one-line human summary of a benchmark's result."""
    kind, rows = result["bench"], result.get("results", [])
    dev = result.get("device")
    if kind == "trainer":
        return f"trainer/raw step-time ratio: {result['ratio']:.2f}"
    if kind == "precision":
        parts = [
            f"{r['model']} {r['variant']} {r['speedup']:.2f}x"
            for r in rows
            if r["variant"] != "fp32" and r["speedup"] is not None
        ]
        choice = " ".join(f"{k}={v}" for k, v in result["choice"].items())
        return (
            f"speed-up over fp32 on {dev}: {', '.join(parts)}; measured choice {choice} "
            f"(auto: {result['auto_precision']}, bf16 native: {result['bf16_native']})"
        )
    if kind == "batch-size":
        parts = [
            f"{r['model']}@{r['batch_size']} {r['throughput']:.4g} {r['throughput_unit']}"
            for r in rows
        ]
        return f"training throughput on {dev}: " + ", ".join(parts)
    if kind == "optimizer":
        parts = [
            f"{r['model']} {r['impl']} {r['ms_per_step']:.3g} ms"
            if r["supported"]
            else f"{r['model']} {r['impl']} unsupported"
            for r in rows
        ]
        return f"AdamW step on {dev}: " + ", ".join(parts)
    if kind == "dataloading":
        parts = [f"{r['loader']} {r['batches_per_s']:.4g}" for r in rows]
        return f"batches/s on {dev}: " + ", ".join(parts)
    if kind == "sampling":
        parts = [f"{k} {v:.3g}x" for k, v in result["speedup"].items()]
        return (
            f"sampling speed-ups on {dev}: "
            + ", ".join(parts)
            + (f"; cached and uncached text equal: {result['cache_matches']}")
        )
    if kind == "ddp":
        return (
            f"{result['nproc']} processes ({result['backend']}) in {result['seconds']:.1f} s: "
            f"replicas identical {result['replicas_identical']}, files written once by rank 0 "
            f"{result['written_once_by_rank0']} ({', '.join(result['writes'])})"
        )
    return json.dumps(result)[:200]


if __name__ == "__main__":
    sys.exit(_rank_report(sys.argv[1:]))
