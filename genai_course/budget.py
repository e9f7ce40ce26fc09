"""The device a run uses and the training budget chosen from it.

The same notebook cell must be right on a laptop CPU and on a GPU.  A *profile* names the
budget:

``smoke``
    seconds; unit tests and CI checks of the command-line interface.
``cpu``
    a whole chapter notebook executes in at most 3 minutes on 2 CPU cores.
``full``
    the long run (the default on a GPU); it produced the shipped checkpoints.

The profile is the value of the environment variable ``GENAI_COURSE_PROFILE`` when it is set,
otherwise ``full`` on a CUDA device and ``cpu`` everywhere else.  Code asks for a value per
profile with :func:`pick`::

    steps = pick(cpu=600, full=20_000, smoke=5)
"""

from __future__ import annotations

import os
from typing import TypeVar

import torch

PROFILES = ("smoke", "cpu", "full")
PROFILE_ENV = "GENAI_COURSE_PROFILE"

T = TypeVar("T")


def auto_device() -> torch.device:
    """The best available device: ``cuda`` (this process's local rank), then ``mps``, then ``cpu``."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn ``"auto"``/``None``/a name/a :class:`torch.device` into a :class:`torch.device`."""
    if device is None or device == "auto":
        return auto_device()
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch.cuda.is_available() is False")
    return device


def bf16_supported(device: str | torch.device | None = "auto") -> bool:
    """Whether bfloat16 autocast is supported (and worthwhile) on ``device``.

    On CUDA this asks the driver; on the CPU bf16 autocast works everywhere but is only fast
    with native bf16 instructions (AVX512-BF16 or AMX), so it reports the CPU capability.
    """
    device = resolve_device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")()
        return "AMX" in capability.upper() or _cpu_has_flag("avx512_bf16")
    return device.type == "mps"


def auto_precision(device: str | torch.device | None = "auto") -> str:
    """What ``precision="auto"`` means on ``device``: bf16 on CUDA devices that support it,
    fp32 elsewhere (CPU bf16 pays only with native bf16 units, and is not assumed)."""
    device = resolve_device(device)
    return "bf16" if device.type == "cuda" and bf16_supported(device) else "fp32"


def _cpu_has_flag(flag: str) -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any(flag in line.split() for line in f if line.startswith("flags"))
    except OSError:
        return False


def current_profile(device: str | torch.device | None = "auto") -> str:
    """The active profile: ``$GENAI_COURSE_PROFILE`` if set, else ``full`` on CUDA, else ``cpu``."""
    forced = os.environ.get(PROFILE_ENV, "").strip().lower()
    if forced:
        if forced not in PROFILES:
            raise ValueError(f"{PROFILE_ENV} must be one of {PROFILES}, got {forced!r}")
        return forced
    return "full" if resolve_device(device).type == "cuda" else "cpu"


def pick(*, cpu: T, full: T, smoke: T | None = None, profile: str | None = None) -> T:
    """The value for the active profile (``smoke`` falls back to ``cpu`` when not given).

    Example: ``steps = pick(cpu=600, full=20_000, smoke=5)``.
    """
    profile = profile or current_profile()
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    if profile == "full":
        return full
    if profile == "smoke" and smoke is not None:
        return smoke
    return cpu
