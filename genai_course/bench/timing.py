"""Clocks and result headers shared by the benchmarks.

Every time is wall-clock seconds from :func:`time.perf_counter`; on CUDA the device is
synchronised before the clock starts and before it stops, so queued kernels are counted.
Variants being compared run in turn inside each repeat (:func:`interleaved`, the order
alternating), so that a drift in machine load hits them all alike.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..budget import resolve_device


def sync(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (a no-op off CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def header(bench: str, dev: torch.device, **sizes: Any) -> dict[str, Any]:
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
    return platform.processor() or platform.machine() or dev.type


def ms(seconds: Sequence[float]) -> tuple[float, list[float]]:
    """(median, all) of per-step times in seconds, as milliseconds rounded to 4 digits."""
    return round(statistics.median(seconds) * 1e3, 4), [round(s * 1e3, 4) for s in seconds]


def paired_speedup(base: Sequence[float], other: Sequence[float]) -> float:
    """Median over repeats of base/other: how many times faster ``other`` ran."""
    return round(statistics.median(b / o for b, o in zip(base, other)), 4)


def timed(fn: Callable[[], Any], n: int, device: torch.device) -> float:
    """Seconds per call of ``fn`` over ``n`` calls, the device synchronised at both ends."""
    sync(device)
    start = time.perf_counter()
    for _ in range(n):
        fn()
    sync(device)
    return (time.perf_counter() - start) / n


def interleaved(
    fns: dict[Any, Callable[[], Any]], n: int, repeats: int, device: torch.device
) -> dict[Any, list[float]]:
    """Seconds per call of each function, ``repeats`` times, the functions taking turns (in
    alternating order) within each repeat."""
    names = list(fns)
    times: dict[Any, list[float]] = {k: [] for k in names}
    for r in range(repeats):
        for k in names if r % 2 == 0 else names[::-1]:
            times[k].append(timed(fns[k], n, device))
    return times


def check_positive(**values: int) -> None:
    """Raise ValueError naming the first of ``values`` below 1."""
    for name, v in values.items():
        if int(v) < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
